"""The MAD task generators reproduce mad-lab's layouts, scored positions and settings (mad-facts §1-2)."""
import numpy as np
import pytest
import torch

from sandbox.tasks import (
    IGNORE, TASKS, Setting, assemble_fuzzy, baseline_setting, fuzzy_draws, fuzzy_vocab, generate,
    input_length, mad_settings, memorize_map, num_classes,
)


def test_mad_settings_are_the_66_one_at_a_time_changes_baseline_first():
    settings = mad_settings()
    assert len(settings) == 66
    counts = {task: len(mad_settings(task)) for task in TASKS}
    assert counts == {"compress": 11, "context_recall": 11, "fuzzy_recall": 11, "memorize": 6,
                      "noisy_recall": 14, "selective_copy": 13}
    for task in TASKS:
        assert mad_settings(task)[0] == baseline_setting(task)
        names = [s.name for s in mad_settings(task)]
        assert len(set(names)) == len(names) and all("," not in name for name in names)
    names = {(s.task, s.name) for s in settings}
    assert ("noisy_recall", "frac_noise=0.8") in names
    assert ("selective_copy", "num_tokens_to_copy=96") in names
    assert ("memorize", "vocab_size=8192") in names
    assert ("context_recall", "num_train_examples=800") in names
    assert all(s.num_test_examples == 1280 for s in settings)


def test_every_mad_setting_generates_in_range_tokens_for_every_split():
    for s in mad_settings():
        for split in ("train", "valid", "test"):
            x, y = generate(s, split, 3, seed=0)
            assert x.dtype == y.dtype == torch.int64
            assert x.shape == y.shape == (3, input_length(s))
            assert 0 <= x.min() and x.max() < num_classes(s)
            scored = y[y != IGNORE]
            assert scored.numel() > 0 and 0 <= scored.min() and scored.max() < num_classes(s)


def test_input_length_drops_one_token_only_for_multi_query_recall():
    lengths = {s.task: input_length(s) for s in (baseline_setting(t) for t in TASKS)}
    assert lengths == {"compress": 32, "context_recall": 127, "fuzzy_recall": 128, "memorize": 32,
                       "noisy_recall": 127, "selective_copy": 256}


def test_replace_names_the_changed_field_and_keeps_a_given_name():
    base = baseline_setting("context_recall")
    assert base.replace(seq_len=512).name == "seq_len=512"
    assert base.replace(vocab_size=32, seq_len=256).name == "vocab_size=32,seq_len=256"
    assert base.replace(seq_len=128).name == "baseline"
    assert base.replace(seq_len=64, name="small").name == "small"
    assert baseline_setting("noisy_recall").replace(frac_noise=0.4).name == "frac_noise=0.4"


def test_invalid_settings_and_splits_fail_with_one_clear_error():
    with pytest.raises(ValueError, match="num_tokens_to_copy"):
        baseline_setting("selective_copy").replace(num_tokens_to_copy=200)
    with pytest.raises(ValueError, match="unknown task"):
        Setting(task="sorting", name="baseline", vocab_size=16, seq_len=32, num_train_examples=10)
    with pytest.raises(ValueError, match="noise"):
        baseline_setting("memorize").replace(frac_noise=0.2, noise_vocab_size=16)
    with pytest.raises(ValueError, match="unknown split"):
        generate(baseline_setting("compress"), "dev", 4, 0)


def test_generation_is_deterministic_per_seed_and_split():
    for task in TASKS:
        s = baseline_setting(task)
        a, b = generate(s, "test", 64, seed=3), generate(s, "test", 64, seed=3)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(generate(s, "test", 64, seed=4)[0], a[0])
        assert not torch.equal(generate(s, "valid", 64, seed=3)[0], a[0])
        assert not torch.equal(generate(s, "train", 64, seed=3)[0], a[0])


def test_training_set_size_does_not_change_the_test_set():
    base = baseline_setting("context_recall")
    small = base.replace(num_train_examples=800)
    assert torch.equal(generate(base, "test", 32, 0)[0], generate(small, "test", 32, 0)[0])


def _check_recall_sequence(s, x, y, training):
    """Walk one recall sequence: returns the number of scored positions after checking each."""
    width = s.vocab_size - s.noise_vocab_size
    seq = x.tolist() + [y[-1].item()]
    value_of, scored = {}, 0
    for slot in range(s.seq_len // 2):
        key, value = seq[2 * slot], seq[2 * slot + 1]
        target = y[2 * slot].item()   # the target predicting seq[2 * slot + 1]
        if training:
            assert target == value
        if key >= width:
            assert width <= value < s.vocab_size, "noise comes in pairs from the noise vocabulary"
            assert training or target == IGNORE
            continue
        assert 0 <= key < width // 2 <= value < width
        last = slot == s.seq_len // 2 - 1
        if last:
            assert key in value_of, "the query repeats a key already shown"
        if key in value_of:
            assert value == value_of[key]
            assert training or target == value
            scored += 1
        else:
            assert training or target == IGNORE
        value_of[key] = value
    return scored


@pytest.mark.parametrize("task", ["context_recall", "noisy_recall"])
def test_recall_scores_values_of_repeated_keys_at_test_and_every_token_in_train(task):
    s = baseline_setting(task)
    x, y = generate(s, "test", 200, seed=1)
    counts = [_check_recall_sequence(s, x[i], y[i], False) for i in range(len(x))]
    assert all(c == (y[i] != IGNORE).sum().item() for i, c in enumerate(counts))
    xt, yt = generate(s, "train", 50, seed=1)
    assert torch.equal(xt[:, 1:], yt[:, :-1])
    for i in range(len(xt)):
        _check_recall_sequence(s, xt[i], yt[i], True)
    if task == "context_recall":
        assert max(set(counts), key=counts.count) == 56   # of 127 positions, V=16 L=128
    else:
        assert (x >= 16).any() and (xt >= 16).any() and not ((y >= 16).any())


def test_noisy_recall_keeps_a_scored_query_at_the_highest_noise():
    s = baseline_setting("noisy_recall").replace(frac_noise=0.8)
    x, y = generate(s, "test", 300, seed=2)
    scored = (y != IGNORE).sum(dim=1)
    assert scored.min() >= 1
    assert 6 < scored.float().mean() < 10   # mad-facts: about 8


def _fuzzy_by_loop(s, draws, i, training):
    """mad-lab's fuzzy recall fill loop, transcribed literally, consuming the same draws."""
    keys, values, pad = fuzzy_vocab(s, training)

    def motif(table, ident):
        return [int(t) for t in table.tokens[ident][: table.lengths[ident]]]

    probe_key, probe_value = motif(keys, draws["probe_key"][i]), motif(values, draws["probe_value"][i])
    limit = s.seq_len - len(probe_key) - len(probe_value) - (s.k_motif_size + s.v_motif_size)
    seq, tgt, value_of, shown, added, slot = [], [], {}, set(), False, 0
    while len(seq) < limit:
        if len(seq) >= draws["probe_index"][i] and not added:
            seq += probe_key + probe_value
            tgt += [IGNORE] * (len(probe_key) + len(probe_value))
            shown.add(tuple(probe_key))
            added = True
            continue
        key = motif(keys, draws["slot_key"][i, slot])
        if key == probe_key:
            value, added = probe_value, True
        else:
            value = value_of.setdefault(tuple(key), motif(values, draws["slot_value"][i, slot]))
        slot += 1
        seq += key + value
        repeated = tuple(key) in shown and s.multi_query
        tgt += [IGNORE] * len(key) + (value if repeated else [IGNORE] * len(value))
        shown.add(tuple(key))
    if not s.multi_query:
        seq, tgt = seq + [s.vocab_size - 1], tgt + [IGNORE]
    seq, tgt = seq + probe_key + probe_value, tgt + [IGNORE] * len(probe_key) + probe_value
    n_pad = s.seq_len + 1 - len(seq)
    return [pad] * n_pad + seq, [IGNORE] * n_pad + tgt


@pytest.mark.parametrize("changes", [{}, {"vocab_size": 32}, {"seq_len": 256}, {"multi_query": False}])
@pytest.mark.parametrize("training", [True, False])
def test_fuzzy_recall_layout_equals_mad_labs_fill_loop(changes, training):
    s = baseline_setting("fuzzy_recall").replace(**changes)
    draws = fuzzy_draws(s, 150, np.random.default_rng(7), training)
    sequence, target = assemble_fuzzy(s, draws, training)
    for i in range(150):
        seq, tgt = _fuzzy_by_loop(s, draws, i, training)
        assert sequence[i].tolist() == seq
        assert target is None if training else target[i].tolist() == tgt


def test_fuzzy_recall_pads_left_and_uses_three_token_keys_at_test():
    s = baseline_setting("fuzzy_recall")
    keys, _, pad = fuzzy_vocab(s, training=False)
    assert pad == 15 and set(keys.lengths.tolist()) == {3}
    assert set(fuzzy_vocab(s, training=True)[0].lengths.tolist()) == {1, 2, 3}
    x, y = generate(s, "test", 400, seed=0)
    assert (x[:, 0] == pad).all() and not (y == pad).any()
    xt, yt = generate(s, "train", 100, seed=0)
    assert torch.equal(xt[:, 1:], yt[:, :-1]) and (yt == pad).any()
    scored = (y != IGNORE).sum(dim=1).float()
    assert scored.min() >= 1 and 3.8 < scored.mean() < 4.8   # mad-facts: about 4.3


def test_selective_copy_copies_the_data_tokens_in_order_after_the_copy_token():
    s = baseline_setting("selective_copy")
    V, L, ntc = s.vocab_size, s.seq_len, s.num_tokens_to_copy
    for split in ("train", "test"):
        x, y = generate(s, split, 100, seed=0)
        assert (x[:, L - ntc - 1] == V - 1).all() and (x[:, L - ntc:] == V - 2).all()
        assert (x[:, L - ntc - 2] < V - 2).all(), "the last data token sits right before the copy token"
        assert (y[:, : L - ntc] == IGNORE).all()
        body = x[:, : L - ntc - 1]
        assert ((body < V - 2).sum(dim=1) == ntc).all() and ((body == V - 2).sum(dim=1) == L - 2 * ntc - 1).all()
        for i in range(len(x)):
            assert torch.equal(body[i][body[i] < V - 2], y[i, L - ntc:])


def test_compress_ends_with_the_compression_token_and_scores_every_position():
    s = baseline_setting("compress")
    x, y = generate(s, "test", 100, seed=0)
    assert torch.equal(x, y)
    assert (x[:, -1] == s.vocab_size - 1).all() and (x[:, :-1] < s.vocab_size - 1).all()


def test_memorize_map_is_one_fixed_injection_from_keys_to_values():
    for V in (256, 8192):
        s = baseline_setting("memorize").replace(vocab_size=V)
        table = memorize_map(s)
        assert table.shape == ((V - 1) // 2,)
        assert table.min() >= (V - 1) // 2 and table.max() < V - 1
        assert len(set(table.tolist())) == len(table)
        for split, seed in (("train", 0), ("test", 5), ("valid", 9)):
            x, y = generate(s, split, 50, seed)
            assert (x[:, 1::2] == V - 1).all() and (y[:, 0::2] == IGNORE).all()
            assert torch.equal(y[:, 1::2], table[x[:, 0::2]])
    base = baseline_setting("memorize")
    assert torch.equal(memorize_map(base), memorize_map(base.replace(num_train_examples=100)))


def test_single_query_recall_scores_only_the_final_value_after_the_copy_prefix():
    s = baseline_setting("context_recall").replace(multi_query=False)
    assert input_length(s) == s.seq_len
    x, y = generate(s, "test", 100, seed=0)
    assert x.shape == (100, s.seq_len)
    assert (x[:, -2] == s.vocab_size - 1).all() and (x[:, :-2] < s.vocab_size - 1).all()
    assert ((y != IGNORE).sum(dim=1) == 1).all() and (y[:, -1] != IGNORE).all()
    for i in range(len(x)):
        pairs = dict(zip(x[i, 0:-2:2].tolist(), x[i, 1:-2:2].tolist()))
        assert pairs[x[i, -1].item()] == y[i, -1].item()


def test_memorize_map_is_mad_labs_map_seeded_12345():
    """mad-lab shuffles the 1-token key and value motifs with one Generator(12345) and zips them."""
    s = baseline_setting("memorize")
    kv_rng = np.random.default_rng(12345)
    keys, values = [(k,) for k in range(127)], [(v,) for v in range(127, 255)]
    kv_rng.shuffle(keys)
    kv_rng.shuffle(values)
    table = memorize_map(s)
    assert all(table[k].item() == v for (k,), (v,) in zip(keys, values))
    with pytest.raises(ValueError, match="memorize"):
        memorize_map(baseline_setting("compress"))
