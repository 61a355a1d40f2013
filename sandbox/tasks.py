"""The six MAD tasks and their 66 difficulty settings, generated as mad-lab's instances.py does.

Layouts and distributions follow shared/reference/mad-facts.md §1-2; generation is vectorised
(numpy), deterministic from (setting, split, seed). Tested by tests/test_tasks.py (layouts, scored
positions, fuzzy recall against a literal transcription of mad-lab's loop); timed by bench/bench_tasks.py.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from sandbox.result import TASKS, TASK_TITLES  # noqa: F401

IGNORE = -100
SPLITS = ("train", "valid", "test")
MEMORIZE_MAP_SEED = 12345  # mad-lab's MADConfig.seed: the memorize map is fixed for the whole dataset
RECALL_TASKS = ("context_recall", "noisy_recall")


@dataclass(frozen=True)
class Setting:
    """One MAD task setting: the baseline or a one-variable change of it (mad-facts §2)."""

    task: str                  # a key of TASKS
    name: str                  # "baseline" or "<field>=<value>", e.g. "seq_len=512"
    vocab_size: int
    seq_len: int
    num_train_examples: int
    num_test_examples: int = 1280
    frac_noise: float = 0.0
    noise_vocab_size: int = 0
    num_tokens_to_copy: int = 0
    k_motif_size: int = 1
    v_motif_size: int = 1
    multi_query: bool = True

    def __post_init__(self):
        problem = _validate(self)
        if problem:
            raise ValueError(f"invalid {self.task!r} setting {self.name!r}: {problem}")

    def replace(self, **changes) -> "Setting":
        """A variant of this setting; its name is recomputed against the task's baseline unless given."""
        name = changes.pop("name", None)
        variant = dataclasses.replace(self, name="", **changes)
        return dataclasses.replace(variant, name=name or describe(variant))


_BASELINES = {
    "compress": dict(vocab_size=16, seq_len=32, num_train_examples=12800),
    "context_recall": dict(vocab_size=16, seq_len=128, num_train_examples=12800),
    "fuzzy_recall": dict(vocab_size=16, seq_len=128, num_train_examples=12800,
                         k_motif_size=3, v_motif_size=3),
    "memorize": dict(vocab_size=256, seq_len=32, num_train_examples=256),
    "noisy_recall": dict(vocab_size=32, seq_len=128, num_train_examples=12800,
                         frac_noise=0.2, noise_vocab_size=16),
    "selective_copy": dict(vocab_size=16, seq_len=256, num_train_examples=12800,
                           num_tokens_to_copy=16),
}

_TRAIN_SIZES = (6400, 3200, 1600, 800)
_SWEEPS = {
    "compress": {"vocab_size": (32, 64, 128), "seq_len": (64, 128, 256),
                 "num_train_examples": _TRAIN_SIZES},
    "context_recall": {"vocab_size": (32, 64, 128), "seq_len": (256, 512, 1024),
                       "num_train_examples": _TRAIN_SIZES},
    "fuzzy_recall": {"vocab_size": (32, 64, 128), "seq_len": (256, 512, 1024),
                     "num_train_examples": _TRAIN_SIZES},
    "memorize": {"vocab_size": (512, 1024, 2048, 4096, 8192)},
    "noisy_recall": {"vocab_size": (48, 80, 144), "seq_len": (256, 512, 1024),
                     "num_train_examples": _TRAIN_SIZES, "frac_noise": (0.4, 0.6, 0.8)},
    "selective_copy": {"vocab_size": (32, 64, 128), "seq_len": (512, 1024),
                       "num_train_examples": _TRAIN_SIZES, "num_tokens_to_copy": (32, 64, 96)},
}


def baseline_setting(task: str) -> Setting:
    if task not in _BASELINES:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return Setting(task=task, name="baseline", **_BASELINES[task])


def mad_settings(task: str | None = None) -> list[Setting]:
    """The MAD difficulty sweep (66 settings in all), baseline first within each task."""
    tasks = TASKS if task is None else (task,)
    settings = []
    for name in tasks:
        base = baseline_setting(name)
        settings.append(base)
        for field, values in _SWEEPS[name].items():
            settings.extend(base.replace(**{field: value}) for value in values)
    return settings


def describe(setting: Setting) -> str:
    """"baseline", or the fields that differ from the task's baseline as "field=value[,field=value]"."""
    base = _BASELINES[setting.task]
    defaults = {f.name: f.default for f in dataclasses.fields(Setting)}
    changed = []
    for f in dataclasses.fields(Setting):
        if f.name in ("task", "name"):
            continue
        value = getattr(setting, f.name)
        if value != base.get(f.name, defaults[f.name]):
            changed.append(f"{f.name}={value}")
    return ",".join(changed) or "baseline"


def input_length(setting: Setting) -> int:
    """Length of inputs and targets: multi-query CR/NR lose one token to the autoregressive shift."""
    if setting.task in RECALL_TASKS and setting.multi_query:
        return setting.seq_len - 1
    return setting.seq_len


def num_classes(setting: Setting) -> int:
    """Size of the output head and of the macro-accuracy classes."""
    return setting.vocab_size


def memorize_map(setting: Setting) -> torch.LongTensor:
    """The fixed memorize map as a table: value = table[key], keys [0, (V-1)//2); mad-lab's own map.

    Seeded once (not by split or seed), so it is the same in every split of every run.
    """
    if setting.task != "memorize":
        raise ValueError(f"only the memorize task has a fixed key->value map, not {setting.task!r}")
    return torch.from_numpy(_memorize_table(setting.vocab_size - 1).copy())


def generate(setting: Setting, split: str, n: int, seed: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """n examples of `setting`'s task: (inputs, targets), both int64 [n, input_length], IGNORE = -100.

    "train" uses train-time targets; "valid" and "test" use test-time targets from separate streams.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if n < 1 or seed < 0:
        raise ValueError(f"need n >= 1 and seed >= 0, got n={n}, seed={seed}")
    rng = _rng(setting, split, seed)
    training = split == "train"
    make = {
        "compress": _compress,
        "context_recall": _recall,
        "noisy_recall": _recall,
        "fuzzy_recall": _fuzzy_recall,
        "memorize": _memorize,
        "selective_copy": _selective_copy,
    }[setting.task]
    inputs, targets = make(setting, n, rng, training)
    return torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.int64)), \
        torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64))


def _rng(setting: Setting, split: str, seed: int) -> np.random.Generator:
    """A stream per (data-defining fields, split, seed); the training-set size does not change the test set."""
    fields = dataclasses.asdict(setting)
    for key in ("name", "num_train_examples", "num_test_examples"):
        fields.pop(key)
    digest = zlib.crc32(repr(sorted(fields.items())).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), digest]))


def _validate(s: Setting) -> str:
    if s.task not in TASKS:
        return f"unknown task; expected one of {', '.join(TASKS)}"
    if min(s.vocab_size, s.seq_len, s.num_train_examples, s.num_test_examples) < 1:
        return "vocab_size, seq_len and example counts must be positive"
    if not 0.0 <= s.frac_noise < 1.0:
        return "frac_noise must be in [0, 1)"
    if (s.frac_noise > 0 or s.noise_vocab_size > 0) and s.task not in RECALL_TASKS:
        return "noise is part of MAD only for (noisy) in-context recall"
    if s.frac_noise > 0 and s.noise_vocab_size < 1:
        return "frac_noise > 0 needs noise_vocab_size > 0"
    if s.task in RECALL_TASKS:
        if s.seq_len % 2 or s.seq_len < 4:
            return "seq_len must be even and >= 4 (key-value pairs)"
        if s.vocab_size - s.noise_vocab_size - (0 if s.multi_query else 1) < 2:
            return "vocab_size leaves fewer than 2 key/value tokens"
    if s.task == "fuzzy_recall":
        if min(s.k_motif_size, s.v_motif_size) < 1:
            return "motif sizes must be >= 1"
        keys = (s.vocab_size - (1 if s.multi_query else 2)) // 2
        if keys < s.k_motif_size:
            return f"{keys} key tokens cannot form keys of {s.k_motif_size} distinct tokens"
        if s.seq_len <= 3 * (s.k_motif_size + s.v_motif_size):
            return "seq_len too short for the key/value motifs"
    if s.task == "selective_copy":
        if s.num_tokens_to_copy < 1 or s.seq_len <= 2 * s.num_tokens_to_copy + 1:
            return "need 1 <= num_tokens_to_copy and seq_len > 2 * num_tokens_to_copy + 1"
        if s.vocab_size < 3:
            return "vocab_size must be >= 3 (data, blank and copy tokens)"
    if s.task == "memorize" and (s.seq_len % 2 or s.vocab_size < 4):
        return "seq_len must be even and vocab_size >= 4"
    if s.task == "compress" and (s.vocab_size < 2 or s.seq_len < 2):
        return "vocab_size and seq_len must be >= 2"
    return ""


def _compress(s: Setting, n: int, rng: np.random.Generator, training: bool):
    """seq_len - 1 tokens from [0, V-1), then the compression token V-1; target == input, all scored."""
    body = rng.integers(0, s.vocab_size - 1, size=(n, s.seq_len - 1))
    inputs = np.concatenate([body, np.full((n, 1), s.vocab_size - 1)], axis=1)
    return inputs, inputs.copy()


def _memorize(s: Setting, n: int, rng: np.random.Generator, training: bool):
    """seq_len/2 pairs [key, insert token V-1]; the insert position is scored with the mapped value."""
    table = _memorize_table(s.vocab_size - 1)
    keys = rng.integers(0, len(table), size=(n, s.seq_len // 2))
    inputs = np.stack([keys, np.full_like(keys, s.vocab_size - 1)], axis=2).reshape(n, s.seq_len)
    targets = np.stack([np.full_like(keys, IGNORE), table[keys]], axis=2).reshape(n, s.seq_len)
    return inputs, targets


@functools.lru_cache(maxsize=16)
def _memorize_table(non_special: int) -> np.ndarray:
    """Keys [0, non_special//2) shuffled and zipped with shuffled values [non_special//2, non_special)."""
    kv_rng = np.random.default_rng(MEMORIZE_MAP_SEED)
    num_keys = non_special // 2
    keys = kv_rng.permutation(num_keys)
    values = num_keys + kv_rng.permutation(non_special - num_keys)
    table = np.empty(num_keys, dtype=np.int64)
    table[keys] = values[:num_keys]
    table.flags.writeable = False
    return table


def _selective_copy(s: Setting, n: int, rng: np.random.Generator, training: bool):
    """ntc data tokens with blanks (V-2) inserted before them, copy token V-1, ntc blanks.

    Each blank is inserted before a uniformly chosen data token (mad-lab's np.insert), so the
    last data token sits right before the copy token. Targets: the data, in order, at the end.
    """
    ntc, L = s.num_tokens_to_copy, s.seq_len
    blank, copy = s.vocab_size - 2, s.vocab_size - 1
    num_blanks = L - 2 * ntc - 1
    data = rng.integers(0, s.vocab_size - 2, size=(n, ntc))
    blanks_before = rng.multinomial(num_blanks, np.full(ntc, 1.0 / ntc), size=n)
    positions = np.arange(ntc) + np.cumsum(blanks_before, axis=1)
    inputs = np.full((n, L), blank)
    np.put_along_axis(inputs, positions, data, axis=1)
    inputs[:, L - ntc - 1] = copy
    targets = np.full((n, L), IGNORE)
    targets[:, L - ntc:] = data
    return inputs, targets


def _recall(s: Setting, n: int, rng: np.random.Generator, training: bool):
    """(Noisy) in-context recall: seq_len/2 key-value slots, the last one a query of a shown key.

    Keys [0, W/2), values [W/2, W) with W = V - noise_vocab_size (minus the copy prefix V-1 in the
    single-query variant). Each sequence draws its own key->value map. With noise, each of the first
    slots is, with probability frac_noise, two tokens from [W, W + noise_vocab_size) instead, except
    one slot drawn at random. Train targets: the shifted input. Test: values of keys shown before.
    """
    P = s.seq_len // 2
    width = s.vocab_size - s.noise_vocab_size - (0 if s.multi_query else 1)
    num_keys = width // 2
    keys = rng.integers(0, num_keys, size=(n, P - 1))
    value_of = rng.integers(num_keys, width, size=(n, num_keys))
    values = np.take_along_axis(value_of, keys, axis=1)
    noise = np.zeros((n, P - 1), dtype=bool)
    if s.frac_noise > 0:
        protected = rng.integers(0, P, size=n)
        noise = rng.random((n, P - 1)) < s.frac_noise
        noise[np.arange(n), np.minimum(protected, P - 2)] &= protected == P - 1
        noise[noise.all(axis=1), 0] = False  # mad-lab would fail to draw a query here; keep one pair
        noise_tokens = rng.integers(width, width + s.noise_vocab_size, size=(n, P - 1, 2))
        keys_or_noise = np.where(noise, noise_tokens[..., 0], keys)
        values_or_noise = np.where(noise, noise_tokens[..., 1], values)
    else:
        keys_or_noise, values_or_noise = keys, values

    # First slot showing each key (P - 1: never; noise shows the dummy key num_keys). Walking the
    # slots backwards leaves the earliest slot written last.
    first_shown = np.full((n, num_keys + 1), P - 1)
    shown_key = np.where(noise, num_keys, keys)
    rows = np.arange(n)
    for slot in reversed(range(P - 1)):
        first_shown[rows, shown_key[:, slot]] = slot
    shown_before = ~noise & (np.take_along_axis(first_shown, keys, axis=1) < np.arange(P - 1))
    shown = first_shown[:, :num_keys] < P - 1
    query_key = np.argmax(np.where(shown, rng.random((n, num_keys)), -1.0), axis=1)
    query_value = value_of[rows, query_key]

    length = s.seq_len + (0 if s.multi_query else 1)
    sequence = np.empty((n, length), dtype=np.int64)
    target = np.full((n, length), IGNORE, dtype=np.int64)
    sequence[:, 0:2 * P - 2:2] = keys_or_noise
    sequence[:, 1:2 * P - 2:2] = values_or_noise
    if s.multi_query:
        target[:, 1:2 * P - 2:2] = np.where(shown_before, values, IGNORE)
    else:
        sequence[:, -3] = s.vocab_size - 1
    sequence[:, -2], sequence[:, -1] = query_key, query_value
    target[:, -1] = query_value
    if training:
        return sequence[:, :-1], sequence[:, 1:]
    return sequence[:, :-1], target[:, 1:]


@dataclass(frozen=True)
class Motifs:
    """All ordered tuples of distinct tokens from [lo, hi) with lengths in [min_size, max_size]."""

    tokens: np.ndarray     # [count, max_size], -1 beyond a motif's length
    lengths: np.ndarray    # [count]
    offsets: np.ndarray    # first id of each length, min_size..max_size
    counts: np.ndarray     # number of motifs of each length

    def draw(self, rng: np.random.Generator, shape, fixed_size: bool = False) -> np.ndarray:
        """Ids of motifs: a length uniform over the range (or the longest), then a motif of that length."""
        if fixed_size or len(self.counts) == 1:
            return self.offsets[-1] + rng.integers(0, self.counts[-1], size=shape)
        size_index = rng.integers(0, len(self.counts), size=shape)
        within = np.choose(size_index, [rng.integers(0, count, size=shape) for count in self.counts])
        return self.offsets[size_index] + within


@functools.lru_cache(maxsize=32)
def motifs(lo: int, hi: int, min_size: int, max_size: int) -> Motifs:
    vocab = range(lo, hi)
    groups = [np.array(list(itertools.permutations(vocab, size)), dtype=np.int64).reshape(-1, size)
              for size in range(min_size, max_size + 1)]
    counts = np.array([len(g) for g in groups])
    tokens = np.full((counts.sum(), max_size), -1, dtype=np.int32)
    lengths = np.empty(counts.sum(), dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for size, group, offset in zip(range(min_size, max_size + 1), groups, offsets):
        tokens[offset:offset + len(group), :size] = group
        lengths[offset:offset + len(group)] = size
    for array in (tokens, lengths, offsets, counts):
        array.flags.writeable = False
    return Motifs(tokens, lengths, offsets, counts)


def fuzzy_vocab(s: Setting, training: bool) -> tuple[Motifs, Motifs, int]:
    """Key motifs, value motifs and the pad token of a fuzzy recall setting."""
    pad = s.vocab_size - 1 if s.multi_query else s.vocab_size - 2
    num_keys = pad // 2
    key_min = 1 if training else s.k_motif_size
    return (motifs(0, num_keys, key_min, s.k_motif_size), motifs(num_keys, pad, 1, s.v_motif_size), pad)


def fuzzy_draws(s: Setting, n: int, rng: np.random.Generator, training: bool) -> dict[str, np.ndarray]:
    """Every random choice of n fuzzy recall sequences, drawn up front (ids index fuzzy_vocab's motifs).

    probe_key/probe_value/probe_index: the query pair and where it is first inserted;
    slot_key/slot_value [n, M]: the key drawn for each fill slot and the value it gets if new.
    M is enough slots for the shortest motifs to fill the sequence.
    """
    keys, values, _ = fuzzy_vocab(s, training)
    probe_key = keys.draw(rng, n, fixed_size=not training)
    probe_value = values.draw(rng, n)
    probe_len = keys.lengths[probe_key] + values.lengths[probe_value]
    probe_index = rng.integers(0, s.seq_len - 2 * probe_len)
    M = s.seq_len // (keys.lengths.min() + 1) + 1
    return {
        "probe_key": probe_key, "probe_value": probe_value, "probe_index": probe_index,
        "slot_key": keys.draw(rng, (n, M), fixed_size=not training),
        "slot_value": values.draw(rng, (n, M)),
    }


def _fuzzy_recall(s: Setting, n: int, rng: np.random.Generator, training: bool):
    draws = fuzzy_draws(s, n, rng, training)
    sequence, target = assemble_fuzzy(s, draws, training)
    if training:
        return sequence[:, :-1], sequence[:, 1:]
    return sequence[:, :-1], target[:, 1:]


def first_occurrence(ids: np.ndarray) -> np.ndarray:
    """For each entry of a [n, M] array, the column of the first entry of its row with the same id."""
    n, M = ids.shape
    ordered_ids, ordered_columns = np.divmod(np.sort(ids * M + np.arange(M), axis=1), M)
    group_starts = np.ones((n, M), dtype=bool)
    group_starts[:, 1:] = ordered_ids[:, 1:] != ordered_ids[:, :-1]
    group_start = np.maximum.accumulate(np.where(group_starts, np.arange(M), 0), axis=1)
    first = np.empty_like(ordered_columns)
    np.put_along_axis(first, ordered_columns, np.take_along_axis(ordered_columns, group_start, axis=1), axis=1)
    return first


def assemble_fuzzy(s: Setting, draws: dict[str, np.ndarray], training: bool):
    """Lay out fuzzy recall sequences from their draws, as mad-lab's fill loop would.

    The loop appends (key, value) motifs while the sequence is shorter than
    seq_len - probe_len - (k_motif_size + v_motif_size); a repeated key reuses its first value and
    the probe key always gets the probe value. The probe pair is inserted once, before the first
    slot that starts at or after probe_index, unless its key was already drawn or the loop ended.
    Then the query (probe key and value) is appended and the sequence left-padded to seq_len + 1.
    Returns (sequence, target) [n, seq_len + 1], before the autoregressive shift; target (the
    test-time target) is None when training, whose targets are the shifted sequence.
    """
    keys, values, pad = fuzzy_vocab(s, training)
    probe_key, probe_value = draws["probe_key"][:, None], draws["probe_value"][:, None]
    probe_len = keys.lengths[probe_key] + values.lengths[probe_value]
    fill_limit = s.seq_len - probe_len - (s.k_motif_size + s.v_motif_size)

    # A slot starts no earlier than the key lengths (plus one value token each) before it: slots
    # past seq_len by that bound are never reached and are dropped before the heavy work.
    key = draws["slot_key"]
    reach = np.cumsum(keys.lengths[key] + 1, axis=1)
    key = key[:, : (reach < s.seq_len).sum(axis=1).max() + 1]
    n, M = key.shape
    column = np.arange(M)[None, :]
    first = first_occurrence(key)
    is_probe = key == probe_key
    value = np.where(is_probe, probe_value, np.take_along_axis(draws["slot_value"], first, axis=1))
    slot_len = keys.lengths[key] + values.lengths[value]
    start = np.cumsum(slot_len, axis=1) - slot_len

    reached = start >= draws["probe_index"][:, None]
    insert_at = np.where(reached.any(axis=1), np.argmax(reached, axis=1), M)[:, None]
    probe_drawn_at = np.where(is_probe.any(axis=1), np.argmax(is_probe, axis=1), M)[:, None]
    insert_start = np.take_along_axis(start, np.minimum(insert_at, M - 1), axis=1)
    inserted = (insert_at < M) & (insert_at <= probe_drawn_at) & (insert_start < fill_limit)
    start = start + np.where(inserted & (column >= insert_at), probe_len, 0)
    included = start < fill_limit
    body_len = np.where(included, slot_len, 0).sum(axis=1, keepdims=True) + inserted * probe_len
    prefix_len = 0 if s.multi_query else 1
    pad_len = s.seq_len + 1 - (body_len + prefix_len + probe_len)
    scored = included & ((first < column) | (is_probe & inserted & (column >= insert_at)))

    # One spare column at the end takes the writes of unselected motifs and is cut off.
    sequence = np.full((n, s.seq_len + 2), pad, dtype=np.int32)
    position = pad_len + start
    key_len = keys.lengths[key]
    _scatter_motifs(sequence, keys.tokens[key], included, position)
    _scatter_motifs(sequence, values.tokens[value], included, position + key_len)
    if not training:
        target = np.full((n, s.seq_len + 2), IGNORE, dtype=np.int32)
        if s.multi_query:
            _scatter_motifs(target, values.tokens[value], scored, position + key_len)

    probe_key_tokens, probe_value_tokens = keys.tokens[probe_key], values.tokens[probe_value]
    probe_key_len = keys.lengths[probe_key]
    insert_position = pad_len + insert_start
    _scatter_motifs(sequence, probe_key_tokens, inserted, insert_position)
    _scatter_motifs(sequence, probe_value_tokens, inserted, insert_position + probe_key_len)

    query_position = pad_len + body_len + prefix_len
    if not s.multi_query:
        sequence[np.arange(n), query_position[:, 0] - 1] = s.vocab_size - 1
    everywhere = np.ones((n, 1), dtype=bool)
    _scatter_motifs(sequence, probe_key_tokens, everywhere, query_position)
    _scatter_motifs(sequence, probe_value_tokens, everywhere, query_position + probe_key_len)
    if training:
        return sequence[:, :-1], None
    _scatter_motifs(target, probe_value_tokens, everywhere, query_position + probe_key_len)
    return sequence[:, :-1], target[:, :-1]


def _scatter_motifs(out: np.ndarray, tokens: np.ndarray, where: np.ndarray, position: np.ndarray):
    """out[row, position + j] = tokens[..., j] for the tokens (>= 0) of the selected motifs.

    Unselected writes go to the spare last column of out.
    """
    n, width = out.shape
    row_start = (np.arange(n) * width).reshape((n,) + (1,) * (position.ndim - 1))
    flat = out.reshape(-1)
    for j in range(tokens.shape[-1]):
        column = np.where(where & (tokens[..., j] >= 0), position + j, width - 1)
        flat[(row_start + column).ravel()] = tokens[..., j].ravel()
