"""The trainer: per-member AdamW, MAD's macro accuracy, grouping, early stopping that never reads test."""
import dataclasses

import pytest
import torch

from sandbox import metrics, tasks
from sandbox.model import MADModel
from sandbox.naive import delta_rule_chunkwise
from sandbox.profiles import PROFILES, get_profile
from sandbox.train import Budget, Execution, GroupTrainer, MemberAdamW, Run, plan_groups

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
    c = metrics.new_counts(1, V, "cpu")
    metrics.add_counts(c, torch.tensor([preds]), torch.tensor([targets]))
    return c


def test_macro_accuracy_averages_recall_over_classes():
    # class 0: 2 of 3 right, class 1: 1 of 1 -> (2/3 + 1) / 2; plain accuracy 3/4
    c = counts_of([0, 0, 1, 1], [0, 0, 0, 1], 4)
    assert metrics.macro_accuracy(c).item() == pytest.approx((2 / 3 + 1) / 2)
    assert metrics.token_accuracy(c).item() == pytest.approx(3 / 4)


def test_macro_accuracy_counts_a_class_seen_only_as_prediction_as_zero():
    # torchmetrics: weight 0 only when tp + fp + fn == 0; class 2 has a false positive -> recall 0, weight 1
    c = counts_of([0, 1, 2], [0, 1, 1], 4)
    assert metrics.macro_accuracy(c).item() == pytest.approx((1 + 0.5 + 0) / 3)


def test_macro_accuracy_skips_ignored_positions_and_absent_classes():
    c = counts_of([3, 1, 1, 2], [-100, 1, 1, -100], 4)
    assert metrics.macro_accuracy(c).item() == 1.0
    assert metrics.token_accuracy(c).item() == 1.0


def test_macro_accuracy_is_over_the_whole_set_not_per_batch():
    c = metrics.new_counts(1, 3, "cpu")
    metrics.add_counts(c, torch.tensor([[0, 0]]), torch.tensor([[0, 0]]))
    metrics.add_counts(c, torch.tensor([[0]]), torch.tensor([[1]]))
    # whole set: class 0 recall 1, class 1 recall 0 -> 0.5 (a per-batch mean would give (1 + 0) / 2 too, but
    # with weights 2:1 by batch size it would be 2/3)
    assert metrics.macro_accuracy(c).item() == pytest.approx(0.5)


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
        assert alone.steps == joint.steps == 3


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
    monkeypatch.setattr(t, "evaluate", lambda data: ([1.0], [1.0]) if data is t.valid else ([0.5], [0.5]))
    out = t.fit()[0]
    assert out.steps == 3 and out.best_step == 3 and out.accuracy == 0.5


def test_run_stops_after_patience_epochs_without_gain(monkeypatch):
    t = trainer([Run(tiny(), 0, 1e-3, 0.0)], dataclasses.replace(TINY, max_epochs=10, patience=2))
    scores = iter([0.3, 0.5, 0.4, 0.5, 0.45, 0.9])
    monkeypatch.setattr(t, "evaluate", lambda data: ([next(scores)], [0.0]) if data is t.valid else ([0.2], [0.2]))
    out = t.fit()[0]
    assert out.valid_accuracy == 0.5 and out.best_step == 2 * 3 and out.steps == 4 * 3


def test_short_epochs_are_validated_every_min_eval_steps_and_patience_stays_in_epochs(monkeypatch):
    # 48 examples at batch 16: 3 steps an epoch; validating once >= 7 steps passed is every third epoch
    t = trainer([Run(tiny(), 0, 1e-3, 0.0)], dataclasses.replace(TINY, max_epochs=20, patience=5, min_eval_steps=7))
    seen, scores = [], iter([0.3, 0.5, 0.4, 0.45, 0.9])

    def evaluate(data):
        if data is t.valid:
            seen.append(t.loss_acc.clone())
            return [next(scores)], [0.0]
        return [0.2], [0.2]

    monkeypatch.setattr(t, "evaluate", evaluate)
    out = t.fit()[0]
    # validated after epochs 3, 6, 9: best at 6, and 9 - 6 = 3 < 5; stopped after epoch 12 (12 - 6 >= 5)
    assert len(seen) == 4 and out.best_step == 6 * 3 and out.steps == 12 * 3 and out.valid_accuracy == 0.5
    # the loss logged at a validation is the mean over every step since the previous one (9 steps here)
    assert all(float(v) > 0 for v in seen)


def test_the_last_epoch_is_always_validated(monkeypatch):
    t = trainer([Run(tiny(), 0, 1e-3, 0.0)], dataclasses.replace(TINY, max_epochs=4, patience=50, min_eval_steps=100))
    calls = []
    monkeypatch.setattr(t, "evaluate", lambda data: (calls.append(data is t.valid), ([0.4], [0.4]))[1])
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
                [0.0] * t.G)
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
