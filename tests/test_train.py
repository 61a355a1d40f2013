"""The trainer: per-member AdamW, MAD's per-batch macro accuracy, grouping, early stopping that never reads test."""
import dataclasses

import pytest
import torch

from sandbox import metrics, tasks
from sandbox.model import MADModel
from sandbox.naive import delta_rule_chunkwise
from sandbox.profiles import PROFILES, get_profile
from sandbox.train import (Budget, Execution, GroupTrainer, MemberAdamW, Run, deterministic_ops, plan_groups,
                           prefetch_first_group, train_runs)

TINY = Budget(batch_size=16, max_epochs=3, patience=2, valid_size=32, test_size=32, eval_batch=32)


def tiny(task="context_recall", **kw):
    base = dict(context_recall=dict(vocab_size=8, seq_len=16), memorize=dict(vocab_size=16, seq_len=8),
                compress=dict(vocab_size=6, seq_len=6), fuzzy_recall=dict(vocab_size=8, seq_len=32,
                                                                           k_motif_size=1, v_motif_size=2))
    return tasks.baseline_setting(task).replace(num_train_examples=48, num_test_examples=32,
                                                **{**base[task], **kw})


def trainer(runs, budget=TINY):
    ex = Execution(device="cpu", batched=True, cuda_graphs=False)
    return GroupTrainer(runs, "delta_net", delta_rule_chunkwise, budget, torch.device("cpu"), ex, log=lambda s: None)


def test_member_adamw_equals_torch_adamw_per_member():
    torch.manual_seed(0)
    lrs, wds = [1e-3, 5e-4], [0.0, 0.1]
    flat = torch.randn(2, 50)
    grad = torch.zeros_like(flat)
    ours = MemberAdamW(flat, grad, lrs, wds)
    refs = [torch.nn.Parameter(flat[g].clone()) for g in range(2)]
    opts = [torch.optim.AdamW([p], lr=lr, weight_decay=wd, betas=(0.9, 0.999), eps=1e-8)
            for p, lr, wd in zip(refs, lrs, wds)]
    for _ in range(5):
        g = torch.randn(2, 50)
        grad.copy_(g)
        ours.step()
        for i, (p, opt) in enumerate(zip(refs, opts)):
            p.grad = g[i].clone()
            opt.step()
    for i, p in enumerate(refs):
        torch.testing.assert_close(flat[i], p.detach(), rtol=1e-5, atol=1e-7)


def test_stopped_member_keeps_its_parameters():
    flat = torch.randn(2, 10)
    grad = torch.randn(2, 10)
    opt = MemberAdamW(flat, grad, [1e-2, 1e-2], [0.1, 0.1])
    before = flat.clone()
    opt.active.copy_(torch.tensor([[1.0], [0.0]]))
    opt.step()
    assert not torch.equal(flat[0], before[0])
    assert torch.equal(flat[1], before[1])


def counts_of(preds, targets, V):
    """One member, one example per position, all in the first MAD batch."""
    c = metrics.new_counts(1, V, "cpu", len(targets))
    metrics.add_counts(c, torch.tensor([preds]), torch.tensor([targets]))
    return c


def test_macro_accuracy_averages_recall_over_classes():
    # class 0: 2 of 3 right, class 1: 1 of 1 -> (2/3 + 1) / 2; plain accuracy 3/4
    c = counts_of([0, 0, 1, 1], [0, 0, 0, 1], 4)
    assert metrics.macro_accuracy(c, 4).item() == pytest.approx((2 / 3 + 1) / 2)
    assert metrics.whole_set_macro_accuracy(c).item() == pytest.approx((2 / 3 + 1) / 2)
    assert metrics.token_accuracy(c).item() == pytest.approx(3 / 4)


def test_macro_accuracy_counts_a_class_seen_only_as_prediction_as_zero():
    # torchmetrics: weight 0 only when tp + fp + fn == 0; class 2 has a false positive -> recall 0, weight 1
    c = counts_of([0, 1, 2], [0, 1, 1], 4)
    assert metrics.macro_accuracy(c, 3).item() == pytest.approx((1 + 0.5 + 0) / 3)


def test_macro_accuracy_skips_ignored_positions_and_absent_classes():
    c = counts_of([3, 1, 1, 2], [-100, 1, 1, -100], 4)
    assert metrics.macro_accuracy(c, 4).item() == 1.0
    assert metrics.token_accuracy(c).item() == 1.0


def split_counts(preds, targets, V, eval_batch, mad_batch):
    """Feed a split [G, n, T] in evaluation batches of `eval_batch` examples, as GroupTrainer.evaluate does:
    the last batch padded with ignored targets, its start given as a tensor."""
    G, n = targets.shape[:2]
    c = metrics.new_counts(G, V, "cpu", n, mad_batch=mad_batch)
    for i in range(0, n, eval_batch):
        p = torch.zeros(G, eval_batch, *targets.shape[2:], dtype=torch.long)
        t = torch.full_like(p, -100)
        k = min(eval_batch, n - i)
        p[:, :k], t[:, :k] = preds[:, i:i + k], targets[:, i:i + k]
        metrics.add_counts(c, p, t, torch.tensor(i), mad_batch=mad_batch)
    return c


def test_macro_accuracy_is_per_mad_batch_weighted_by_examples():
    # 300 examples of one position: MAD batches [0, 128), [128, 256), [256, 300) of 128, 128 and 44 examples;
    # evaluation batches of 100 straddle both boundaries
    targets = torch.zeros(1, 300, 1, dtype=torch.long)
    preds = torch.zeros_like(targets)
    targets[0, 120:130] = 1                     # 8 in batch 0, 2 in batch 1; all predicted 0
    targets[0, 290:300] = 2                     # batch 2: the 10 class-2 targets right, one class-0 miss
    preds[0, 290:300] = 2
    preds[0, 260] = 2
    c = split_counts(preds, targets, 3, eval_batch=100, mad_batch=128)
    batch0 = (1 + 0) / 2                        # class 0: 120/120, class 1: 0/8
    batch1 = (1 + 0) / 2                        # class 0: 126/126, class 1: 0/2
    batch2 = (33 / 34 + 1) / 2                  # class 0: 33 of 34, class 2: 10/10
    mad = (128 * batch0 + 128 * batch1 + 44 * batch2) / 300
    assert metrics.macro_accuracy(c, 300).item() == pytest.approx(mad)
    whole = (279 / 280 + 0 + 1) / 3             # class 0: 279 of 280, class 1: 0 of 10, class 2: 10 of 10
    assert metrics.whole_set_macro_accuracy(c).item() == pytest.approx(whole)
    assert metrics.token_accuracy(c).item() == pytest.approx(289 / 300)


def test_a_stray_prediction_of_an_absent_class_costs_one_batch_only():
    # 10 MAD batches of 4 examples, 8 key classes each batch; one prediction of class 9 (never a target)
    V, k = 10, 8
    targets = (torch.arange(40) % k).view(1, 40, 1)
    preds = targets.clone()
    preds[0, 17, 0] = 9
    c = split_counts(preds, targets, V, eval_batch=6, mad_batch=4)
    # batch 4 (examples 16..19, classes 0..3): class 1 recall 0, class 9 present with recall 0 -> 3/5
    per_batch = [1.0] * 9 + [3 / 5]
    assert metrics.macro_accuracy(c, 40, mad_batch=4).item() == pytest.approx(sum(per_batch) / 10)
    # whole set: class 1 recall 4/5, class 9 recall 0 over 9 classes
    whole = (7 + 4 / 5 + 0) / 9
    assert metrics.whole_set_macro_accuracy(c).item() == pytest.approx(whole)
    assert whole < sum(per_batch) / 10
    assert metrics.token_accuracy(c).item() == pytest.approx(39 / 40)


def test_macro_accuracy_keeps_members_apart_and_skips_empty_batches():
    # member 0 all right; member 1 wrong on every class-1 target; member 2 scores nothing in MAD batch 1
    targets = torch.tensor([[0, 1, 0, 1, 0]] * 3).view(3, 5, 1)
    preds = targets.clone()
    preds[1][targets[1] == 1] = 0
    targets[2, 2:4] = -100                       # MAD batch 1 of member 2 (examples 2, 3): nothing scored
    preds[2, 2:4] = 1                            # predictions at ignored positions do not count
    c = split_counts(preds, targets, 2, eval_batch=3, mad_batch=2)
    mad = metrics.macro_accuracy(c, 5, mad_batch=2)
    # member 1: batches (0,1) and (0,1) score 1/2 each, batch (0) scores 1: (2 * 0.5 + 2 * 0.5 + 1 * 1) / 5
    # member 2: batch 1 has weight 0: (2 * 1 + 1 * 1) / 3
    assert mad.tolist() == pytest.approx([1.0, 3 / 5, 1.0])
    assert metrics.whole_set_macro_accuracy(c).tolist() == pytest.approx([1.0, 1 / 2, 1.0])
    assert metrics.token_accuracy(c).tolist() == pytest.approx([1.0, 3 / 5, 1.0])


def test_runs_sharing_shapes_form_one_group():
    cr = tasks.baseline_setting("context_recall")          # inputs of 127 tokens
    fr = tasks.baseline_setting("fuzzy_recall")            # inputs of 128 tokens
    co = tasks.baseline_setting("compress")
    runs = [Run(cr, 0, 1e-3, 0.0), Run(cr, 1, 1e-3, 0.0), Run(fr, 0, 1e-3, 0.0), Run(co, 0, 1e-3, 0.0),
            Run(cr.replace(seq_len=256), 0, 1e-3, 0.0), Run(cr.replace(num_train_examples=800), 0, 1e-3, 0.0)]
    groups = plan_groups(runs, batched=True)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 3]
    assert [len(g) for g in plan_groups(runs, batched=False)] == [1] * 6
    assert all(len({r.setting.num_train_examples for r in g}) == 1 for g in groups)


def test_groups_are_split_to_bound_memory():
    cr = tasks.baseline_setting("context_recall")
    runs = [Run(cr, s, 1e-3, 0.0) for s in range(10)]
    groups = plan_groups(runs, batched=True, batch_size=128, max_tokens=128 * 128 * 4)
    assert [len(g) for g in groups] == [4, 4, 2]


def test_batched_group_trains_like_separate_runs():
    budget = dataclasses.replace(TINY, max_epochs=1)
    runs = [Run(tiny(), 0, 1e-3, 0.0), Run(tiny(vocab_size=10), 1, 5e-4, 0.1)]
    together = trainer(runs, budget).fit()
    for run, joint in zip(runs, together):
        alone = trainer([run], budget).fit()[0]
        assert alone.valid_accuracy == pytest.approx(joint.valid_accuracy, abs=1e-6)
        assert alone.accuracy == pytest.approx(joint.accuracy, abs=1e-6)
        assert alone.whole_set_accuracy == pytest.approx(joint.whole_set_accuracy, abs=1e-6)
        assert alone.steps == joint.steps == 3


def test_prefetched_first_group_trains_exactly_like_data_generated_in_place():
    """The worker starts the first group's data before its checks; train_runs must use it, not regenerate."""
    budget = dataclasses.replace(TINY, max_epochs=1)
    runs = [Run(tiny("compress"), 0, 1e-3, 0.0), Run(tiny(), 1, 1e-3, 0.0), Run(tiny(), 2, 1e-3, 0.0)]
    first = prefetch_first_group(runs, budget)
    assert len(first.result()["train"][0]) == len(plan_groups(runs, batched=True, batch_size=16)[0])
    kwargs = dict(batched=True, cuda_graphs=False, log=lambda s: None)
    prefetched, _ = train_runs(runs, "delta_net", delta_rule_chunkwise, budget, torch.device("cpu"),
                               first_data=first, **kwargs)
    in_place, execution = train_runs(runs, "delta_net", delta_rule_chunkwise, budget, torch.device("cpu"), **kwargs)
    assert execution.deterministic is False and not torch.are_deterministic_algorithms_enabled()
    assert [(o.run.seed, o.accuracy, o.valid_accuracy) for o in prefetched] == \
        [(o.run.seed, o.accuracy, o.valid_accuracy) for o in in_place]
    assert prefetch_first_group([], budget) is None


def test_checkpoint_choice_never_reads_the_test_split():
    """Replacing the test split with garbage changes the test score, never the chosen checkpoint."""
    run = Run(tiny("memorize"), 0, 1e-3, 0.0)
    real = trainer([run])
    honest = real.fit()[0]
    rigged = trainer([run])
    x, y = rigged.test
    rigged.test = (x, torch.where(y == -100, y, (y + 1) % 16))
    cheat = rigged.fit()[0]
    assert (cheat.best_step, cheat.steps, cheat.valid_accuracy) == (honest.best_step, honest.steps,
                                                                   honest.valid_accuracy)
    assert cheat.accuracy != honest.accuracy


def test_run_stops_once_validation_reaches_the_threshold(monkeypatch):
    t = trainer([Run(tiny(), 0, 1e-3, 0.0)], dataclasses.replace(TINY, max_epochs=10, patience=50))
    monkeypatch.setattr(t, "evaluate", lambda data: ([1.0], [1.0], [1.0]) if data is t.valid else ([0.5], [0.5], [0.5]))
    out = t.fit()[0]
    assert out.steps == 3 and out.best_step == 3 and out.accuracy == 0.5


def test_run_stops_after_patience_epochs_without_gain(monkeypatch):
    t = trainer([Run(tiny(), 0, 1e-3, 0.0)], dataclasses.replace(TINY, max_epochs=10, patience=2))
    scores = iter([0.3, 0.5, 0.4, 0.5, 0.45, 0.9])
    monkeypatch.setattr(t, "evaluate",
                        lambda data: ([next(scores)], [0.0], [0.0]) if data is t.valid else ([0.2], [0.2], [0.2]))
    out = t.fit()[0]
    assert out.valid_accuracy == 0.5 and out.best_step == 2 * 3 and out.steps == 4 * 3


def test_short_epochs_are_validated_every_min_eval_steps_and_patience_stays_in_epochs(monkeypatch):
    # 48 examples at batch 16: 3 steps an epoch; validating once >= 7 steps passed is every third epoch
    t = trainer([Run(tiny(), 0, 1e-3, 0.0)], dataclasses.replace(TINY, max_epochs=20, patience=5, min_eval_steps=7))
    seen, scores = [], iter([0.3, 0.5, 0.4, 0.45, 0.9])

    def evaluate(data):
        if data is t.valid:
            seen.append(t.loss_acc.clone())
            return [next(scores)], [0.0], [0.0]
        return [0.2], [0.2], [0.2]

    monkeypatch.setattr(t, "evaluate", evaluate)
    out = t.fit()[0]
    # validated after epochs 3, 6, 9: best at 6, and 9 - 6 = 3 < 5; stopped after epoch 12 (12 - 6 >= 5)
    assert len(seen) == 4 and out.best_step == 6 * 3 and out.steps == 12 * 3 and out.valid_accuracy == 0.5
    # the loss logged at a validation is the mean over every step since the previous one (9 steps here)
    assert all(float(v) > 0 for v in seen)


def test_the_last_epoch_is_always_validated(monkeypatch):
    t = trainer([Run(tiny(), 0, 1e-3, 0.0)], dataclasses.replace(TINY, max_epochs=4, patience=50, min_eval_steps=100))
    calls = []
    monkeypatch.setattr(t, "evaluate", lambda data: (calls.append(data is t.valid), ([0.4], [0.4], [0.4]))[1])
    out = t.fit()[0]
    assert calls.count(True) == 1 and out.best_step == out.steps == 4 * 3


def test_profiles_cover_the_mad_protocol():
    assert len(get_profile("screen").settings) == 66
    mad = get_profile("mad")
    assert len(mad.runs([0])) == 66 * 6
    quick = get_profile("quick")
    assert sorted({s.task for s in quick.settings}) == sorted(tasks.TASKS)
    assert len(quick.settings) == 12 and len(quick.lrs) == len(quick.weight_decays) == 1
    assert all(p.purpose for p in PROFILES.values())


def test_autoencoder_compress_run_trains_and_scores():
    out = trainer([Run(tiny("compress"), 0, 1e-3, 0.0)]).fit()[0]
    assert 0.0 <= out.accuracy <= 1.0 and out.steps >= 3


def test_model_init_depends_only_on_member_seed():
    a = MADModel("delta_net", [16, 8], [3, 4], autoencoder=False, core=delta_rule_chunkwise)
    b = MADModel("delta_net", [8], [4], autoencoder=False, core=delta_rule_chunkwise)
    torch.testing.assert_close(a.bank["block0.mixer.w_in"][1], b.bank["block0.mixer.w_in"][0])
    torch.testing.assert_close(a.bank["embed"][1, :8], b.bank["embed"][0])


def fake_validation(t, perfect_position):
    """Validation that calls the member at `perfect_position` perfect at once and lets the others improve."""
    real = t.evaluate
    calls = {"n": 0}

    def evaluate(data):
        if data is not t.valid:
            return real(data)
        calls["n"] += 1
        return ([1.0 if m.position == perfect_position else 0.1 * calls["n"] for m in t.members],
                [0.0] * t.G, [0.0] * t.G)
    return evaluate


def test_stopped_members_leave_the_group_and_the_rest_train_unchanged(monkeypatch):
    budget = dataclasses.replace(TINY, max_epochs=3, patience=10)
    runs = [Run(tiny(), 0, 1e-3, 0.0), Run(tiny(vocab_size=10), 1, 1e-3, 0.0)]
    group = trainer(runs, budget)
    monkeypatch.setattr(group, "evaluate", fake_validation(group, perfect_position=0))
    first, second = group.fit()
    assert group.G == 1, "the stopped member was dropped"
    assert (first.steps, first.best_step) == (3, 3)
    assert second.steps == 9
    alone = trainer([runs[1]], budget)
    monkeypatch.setattr(alone, "evaluate", fake_validation(alone, perfect_position=-1))
    only = alone.fit()[0]
    assert only.accuracy == pytest.approx(second.accuracy, abs=1e-6)
    assert only.steps == second.steps


def cuda_trainer(runs, graphs, core=delta_rule_chunkwise):
    ex = Execution(device="cuda", batched=True, cuda_graphs=graphs)
    budget = dataclasses.replace(TINY, max_epochs=2, patience=5)
    return GroupTrainer(runs, "delta_net", core, budget, torch.device("cuda"), ex, log=lambda s: None), ex


@pytest.mark.gpu
def test_cuda_graph_training_matches_eager_training():
    runs = [Run(tiny(), 0, 1e-3, 0.0), Run(tiny(vocab_size=10), 1, 1e-3, 0.1)]
    graphed, ex = cuda_trainer(runs, graphs=True)
    with_graphs = graphed.fit()
    assert ex.cuda_graphs and graphed._train_graph is not None
    without = cuda_trainer(runs, graphs=False)[0].fit()
    for a, b in zip(with_graphs, without):
        assert (a.steps, a.best_step) == (b.steps, b.best_step)
        assert a.valid_accuracy == pytest.approx(b.valid_accuracy, abs=1e-3)


@pytest.mark.gpu
def test_cuda_graph_evaluation_matches_eager_across_mad_batches():
    # 300 examples in evaluation batches of 100: the captured graph reads each batch's start from a buffer
    budget = dataclasses.replace(TINY, valid_size=300, test_size=300, eval_batch=100)
    ex = Execution(device="cuda", batched=True, cuda_graphs=True)
    runs = [Run(tiny(), 0, 1e-3, 0.0), Run(tiny(vocab_size=10), 1, 1e-3, 0.0)]
    t = GroupTrainer(runs, "delta_net", delta_rule_chunkwise, budget, torch.device("cuda"), ex, log=lambda s: None)
    for _ in range(3):                           # warm-up, capture, replay
        graphed = t.evaluate(t.valid)
    assert ex.cuda_graphs and t._eval_graph is not None
    t.graphs = False
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(t.evaluate(t.valid)), rtol=0, atol=1e-9)


def test_deterministic_ops_set_torchs_switches_for_cuda_only():
    """Only flags: they need no GPU to be set, so the CPU suite checks them (and puts them back)."""
    assert deterministic_ops(torch.device("cpu")) is False and not torch.are_deterministic_algorithms_enabled()
    try:
        assert deterministic_ops(torch.device("cuda")) is True
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(False)
        torch.utils.deterministic.fill_uninitialized_memory = True


@pytest.mark.gpu
def test_gpu_training_repeats_bit_for_bit():
    """Two identical trainers on the GPU end with identical parameters: the embedding's backward (atomic adds
    over repeated tokens by default) takes its deterministic implementation."""
    assert deterministic_ops(torch.device("cuda"))

    def train():
        setting = tiny(vocab_size=8, seq_len=64)
        t, _ = cuda_trainer([Run(setting, 0, 1e-3, 0.0), Run(setting, 1, 1e-3, 0.0)], graphs=True)
        x, y = t.train
        for i in range(8):                       # 3 warm-up steps, the capture, replays
            t.x_buf.copy_(x[:, 16 * (i % 3):16 * (i % 3 + 1)])
            t.y_buf.copy_(y[:, 16 * (i % 3):16 * (i % 3 + 1)])
            t._replay("train")
        torch.cuda.synchronize()
        assert t._train_graph is not None
        return t.model.bank.flat.clone()

    first, second = train(), train()
    assert torch.equal(first, second)


def syncing_core(q, k, v, beta, chunk_size=32):
    """A candidate with a host synchronisation: CUDA graph capture must refuse it."""
    if beta.max().item() > 2.0:
        beta = beta / 2
    return delta_rule_chunkwise(q, k, v, beta, chunk_size=chunk_size)


@pytest.mark.gpu
def test_candidate_that_syncs_the_host_trains_eagerly_and_says_why():
    t, ex = cuda_trainer([Run(tiny(), 0, 1e-3, 0.0)], graphs=True, core=syncing_core)
    out = t.fit()[0]
    assert ex.cuda_graphs is False and ex.fallback_reason
    assert out.steps == 6 and 0.0 <= out.accuracy <= 1.0
