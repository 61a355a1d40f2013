"""The mutate proposer: every transformation gives a valid candidate, combinations hold, the bandit
learns from recorded outcomes, duplicates are avoided, the rationale cites the real table, repairs
pick something else, and the whole thing is deterministic given the seed and the records."""
from collections import Counter
from pathlib import Path

import pytest
import torch

from agent.context import ProposalContext
from agent.errors import ProposalError
from agent.mutate import MutateProposer, trials
from agent.mutations import BY_NAME, CATALOGUE, FAMILIES, UNDO, applied, label, locate
from agent.proposal import SECTIONS
from agent.records import TASKS, Candidate, Score
from sandbox.static_checks import check_static, first_failure, fingerprint

BASELINE = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()
BASELINE_SCORES = dict(zip(TASKS, (0.4871, 0.9995, 0.1897, 0.3378, 0.9996, 0.9907)))

RECURRENT_PARENT = '''import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    B, H, L, Dk = q.shape
    q = q * Dk ** -0.5
    S = q.new_zeros(B, H, Dk, v.shape[-1])
    out = []
    for t in range(L):
        k_t = k[:, :, t]
        prediction = torch.einsum("bhk,bhkv->bhv", k_t, S)
        correction = beta[:, :, t, None] * (v[:, :, t] - prediction)
        S = S + torch.einsum("bhk,bhv->bhkv", k_t, correction)
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    return torch.stack(out, dim=2), S
'''


def load(code: str):
    namespace: dict = {}
    exec(compile(code, "naive.py", "exec"), namespace)  # our own generated code, in a test
    return namespace["delta_rule_chunkwise"]


def inputs(B=2, H=2, L=64, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, H, L, D, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, H, L, D, generator=g), dim=-1)
    v = 5 * torch.randn(B, H, L, D, generator=g)
    beta = torch.sigmoid(torch.randn(B, H, L, generator=g))
    return q, k, v, beta


def assert_valid(code: str, chunk_size: int = 16) -> torch.Tensor:
    """Static checks pass; outputs finite, causal, batch-independent, with finite gradients to every input."""
    failed = first_failure(check_static(code))
    assert failed is None, failed
    fn = load(code)
    q, k, v, beta = (x.requires_grad_() for x in inputs())
    o, S = fn(q, k, v, beta, chunk_size=chunk_size)
    assert o.shape == v.shape and S.shape == (2, 2, 8, 8)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    (o.square().mean() + S.square().mean()).backward()
    for name, x in zip("q k v beta".split(), (q, k, v, beta)):
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
        assert x.grad.abs().sum() > 0, f"no gradient reaches {name}"
    base = tuple(x.detach() for x in (q, k, v, beta))
    later = inputs(seed=1)
    with torch.no_grad():
        o0, _ = fn(*base, chunk_size=chunk_size)
        for t in (21, 32):
            changed = [torch.cat([x[:, :, :t], y[:, :, t:]], dim=2) for x, y in zip(base, later)]
            o1, _ = fn(*changed, chunk_size=chunk_size)
            assert torch.allclose(o0[:, :, :t], o1[:, :, :t], atol=1e-5), f"output before {t} reads the future"
        other = [torch.cat([x[:1], y[1:]], dim=0) for x, y in zip(base, later)]
        o2, _ = fn(*other, chunk_size=chunk_size)
        assert torch.allclose(o0[:1], o2[:1], atol=1e-5), "sample 0 depends on sample 1"
    return o0


def candidate(id, name, parent, scores, status="ok", mutations=(), proposer="mutate"):
    values = scores or {}
    return Candidate(id=id, name=name, parent=parent, proposer=proposer, status=status,
                     scores={t: Score(mean=v) for t, v in values.items()},
                     mean=sum(values.values()) / len(values) if values and status == "ok" else None,
                     mutations=list(mutations))


def shifted(scores, **delta):
    return {t: min(1.0, v + delta.get(t, 0.0)) for t, v in scores.items()}


def context(records, parent=None, code=BASELINE, names=(), fingerprints=()):
    parent = parent or records[0]
    best = {t: max(r.scores[t].mean for r in records if r.scored) for t in TASKS}
    return ProposalContext(parent=parent, parent_code=code, baseline=records[0], records=records,
                           best_per_task=best, existing_names=[r.name for r in records] + list(names),
                           existing_fingerprints=[fingerprint(BASELINE)] + list(fingerprints))


BASE = candidate(0, "delta_net", None, BASELINE_SCORES, proposer="baseline")


def test_catalogue_has_fifteen_transformations_in_five_families():
    assert len(CATALOGUE) >= 15
    assert set(FAMILIES) == {t.family for t in CATALOGUE}
    assert all(len(t.grid) >= 2 for t in CATALOGUE)


@pytest.mark.parametrize("name", [t.name for t in CATALOGUE])
def test_every_transformation_gives_a_valid_candidate_on_the_baseline(name):
    t = BY_NAME[name]
    reference = load(BASELINE)(*inputs(), chunk_size=16)[0]
    for params in t.grid:
        code = t.apply(BASELINE, params)
        assert code is not None, f"{label(name, params)} does not apply to the baseline"
        assert applied(code) == [name]
        out = assert_valid(code)
        assert not torch.allclose(out, reference, atol=1e-4), f"{label(name, params)} changes nothing"


def test_transformations_combine_one_per_slot_and_never_twice():
    code = BASELINE
    used = []
    for t in CATALOGUE:
        nxt = t.apply(code, t.grid[0])
        if nxt is not None:
            code = nxt
            used.append(t)
            assert t.apply(code, t.grid[-1]) is None, f"{t.name} applied twice"
    slots = Counter(t.slot for t in used)
    assert len(slots) == len({t.slot for t in CATALOGUE}) and max(slots.values()) == 1
    assert sorted(applied(code)) == sorted(t.name for t in used)
    assert_valid(code)


INDEXED_LOOP = """    for n in range(N):
        # The delta: pseudo-values minus what the state entering the chunk already predicts.
        u_n = u[:, :, n] - w[:, :, n] @ S
        o.append(q[:, :, n] @ S + attn[:, :, n] @ u_n)
        S = S + k[:, :, n].transpose(-1, -2) @ u_n
"""


@pytest.mark.parametrize("form", ["unbind generator", "indexed", "one unbind per tensor"])
def test_the_attention_is_found_through_per_chunk_views(form):
    """Parents that index the chunk in the loop, or hold unbind views of it, anchor the same `attn` statement."""
    start = BASELINE.index("    # Per-chunk views.")
    loop_end = BASELINE.index("    o = rearrange(torch.stack")
    code = BASELINE
    if form == "indexed":
        code = BASELINE[:start] + "    S = q.new_zeros(B, H, Dk, Dv)\n    o = []\n" + INDEXED_LOOP + BASELINE[loop_end:]
    elif form == "one unbind per tensor":
        code = BASELINE.replace("qs, ks, ws, us, attns = (x.unbind(2) for x in (q, k, w, u, attn))",
                                "qs, ks, ws, us = (x.unbind(2) for x in (q, k, w, u))\n    attns = attn.unbind(2)")
    anchors = locate(code)
    assert anchors.attention == "attn" and anchors.attention_stmt.text.startswith("attn = (q @ k.transpose")
    assert anchors.error == "u_n"
    softmax = BY_NAME["intra_chunk_softmax"]
    changed = softmax.apply(code, softmax.grid[0])
    assert changed is not None
    assert not torch.allclose(assert_valid(changed), load(code)(*inputs(), chunk_size=16)[0], atol=1e-4)


def test_a_transformation_whose_site_is_missing_is_skipped():
    anchors = locate(RECURRENT_PARENT)
    assert anchors.state == "S" and anchors.error is None and anchors.attention is None
    fits = {t.family for t in CATALOGUE if t.applies(RECURRENT_PARENT)}
    assert "error" not in fits and "intra" not in fits and {"state", "beta", "qk"} <= fits
    assert BY_NAME["tanh_on_error"].apply(RECURRENT_PARENT, {"scale": 1.0}) is None
    assert locate("def broken(:\n") is None
    assert_valid(BY_NAME["state_norm_clip"].apply(RECURRENT_PARENT, {"max_rms": 0.5}))


def test_proposal_is_new_valid_code_with_a_snake_case_name():
    proposal, usage = MutateProposer(seed=0).propose(context([BASE]))
    code = proposal.resolve_code(BASELINE)
    assert first_failure(check_static(code, [fingerprint(BASELINE)])) is None
    assert proposal.name.startswith("delta_net_") and proposal.name != "delta_net"
    assert 1 <= len(proposal.mutations) <= 2
    assert [m.split("(")[0] for m in proposal.mutations] == applied(code)
    assert set(proposal.predicted) == set(TASKS)
    assert usage.calls == 0 and usage.cost_usd == 0.0


def test_rationale_cites_the_real_table_in_both_languages():
    best = candidate(1, "delta_net_intra_chunk_softmax", 0, shifted(BASELINE_SCORES, memorize=0.4934),
                     mutations=["intra_chunk_softmax(temperature=1.0)"])
    proposal, _ = MutateProposer(seed=3).propose(context([BASE, best], parent=BASE))
    for lang in ("en", "zh"):
        obs = getattr(proposal.observations, lang)
        assert "0.487" in obs and "0.338" in obs and "0.190" in obs          # the parent's own scores
        assert "0001" in obs and "0.831" in obs and f"{best.mean:.3f}" in obs  # the best candidate's
        for section in SECTIONS:
            assert getattr(getattr(proposal, section), lang).strip(), (section, lang)
        for m in proposal.mutations:
            target = BY_NAME[m.split("(")[0]].target(locate(BASELINE))
            assert target.text in getattr(proposal.code_issues, lang)
            assert str(target.line) in getattr(proposal.code_issues, lang)
            assert m in getattr(proposal.reasoning, lang)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in proposal.reasoning.zh)
    memorize = proposal.predicted["memorize"]
    assert f"{memorize:.3f}" in proposal.expected.en and f"{memorize:.3f}" in proposal.expected.zh


def test_same_seed_and_records_give_the_same_proposal_other_seeds_vary():
    ctx = context([BASE])
    first = MutateProposer(seed=11, max_mutations=3).propose(ctx)[0]
    again = MutateProposer(seed=11, max_mutations=3).propose(ctx)[0]
    assert first == again
    others = {tuple(MutateProposer(seed=s, max_mutations=3).propose(ctx)[0].mutations) for s in range(8)}
    assert len(others) > 1


def test_duplicates_are_never_proposed_and_exhaustion_is_an_error():
    proposer = MutateProposer(seed=0, max_mutations=2)
    seen = [fingerprint(BASELINE)]
    names = []
    for _ in range(12):
        p, _ = proposer.propose(context([BASE], names=names, fingerprints=seen))
        fp = fingerprint(p.resolve_code(BASELINE))
        assert fp not in seen and p.name not in names
        seen.append(fp)
        names.append(p.name)
    only = BY_NAME["beta_floor"]
    single = MutateProposer(seed=0, max_mutations=1, catalogue=[only])
    every = [fingerprint(only.apply(BASELINE, params)) for params in only.grid]
    with pytest.raises(ProposalError, match="tried before"):
        single.propose(context([BASE], fingerprints=every))


def _history(winner: str, loser: str, rounds: int = 4) -> list[Candidate]:
    records = [BASE]
    for i in range(rounds):
        records.append(candidate(len(records), f"w{i}", 0, shifted(BASELINE_SCORES, fuzzy_recall=0.15 + 0.01 * i),
                                 mutations=[label(winner, BY_NAME[winner].grid[i % 2])]))
        records.append(candidate(len(records), f"l{i}", 0, shifted(BASELINE_SCORES, compress=-0.05 - 0.01 * i),
                                 mutations=[label(loser, BY_NAME[loser].grid[i % 2])]))
    for t in CATALOGUE:
        if t.name not in (winner, loser):
            records.append(candidate(len(records), f"o_{t.name}", 0, shifted(BASELINE_SCORES, compress=-0.06),
                                     mutations=[label(t.name, t.grid[0])]))
    return records


def test_bandit_prefers_transformations_whose_children_improved():
    records = _history("tanh_on_error", "fixed_state_decay")
    firsts = Counter()
    for seed in range(20):
        p, _ = MutateProposer(seed=seed, max_mutations=1).propose(context(records, parent=records[-1]))
        firsts[p.mutations[0].split("(")[0]] += 1
    assert firsts["tanh_on_error"] >= 12
    assert firsts["fixed_state_decay"] <= 2


def test_failed_children_count_against_their_transformations():
    records = [BASE, candidate(1, "a", 0, None, status="nan", mutations=["beta_scale(factor=2.0)"]),
               candidate(2, "b", 0, None, status="pending", mutations=["beta_power(power=0.5)"]),
               candidate(3, "c", 0, shifted(BASELINE_SCORES, memorize=0.06), mutations=["tanh_on_error(scale=1.0)"])]
    rewards = {t.labels[0]: t.reward for t in trials(records)}
    assert rewards["beta_scale(factor=2.0)"] < 0
    assert "beta_power(power=0.5)" not in rewards
    assert rewards["tanh_on_error(scale=1.0)"] == pytest.approx(0.01)


def test_predictions_follow_measured_effects_of_a_transformation():
    records = [BASE] + [candidate(i, f"s{i}", 0, shifted(BASELINE_SCORES, memorize=0.3), mutations=[
        label("intra_chunk_softmax", BY_NAME["intra_chunk_softmax"].grid[i - 1])]) for i in (1, 2, 3)]
    parent = candidate(4, "tanh", 0, BASELINE_SCORES, mutations=["tanh_on_error(scale=1.0)"])
    code = BY_NAME["tanh_on_error"].apply(BASELINE, {"scale": 1.0})
    proposer = MutateProposer(seed=0, max_mutations=1, catalogue=[BY_NAME["intra_chunk_softmax"]])
    p, _ = proposer.propose(context(records + [parent], parent=parent, code=code))
    assert p.mutations[0].startswith("intra_chunk_softmax")
    assert p.predicted["memorize"] > BASELINE_SCORES["memorize"] + 0.2
    assert "3 earlier children" in p.lessons.en and "3 个子候选" in p.lessons.zh


def test_repair_rules_out_what_failed_and_picks_another():
    proposer = MutateProposer(seed=5, max_mutations=1)
    ctx = context([BASE])
    first, _ = proposer.propose(ctx)
    second, _ = proposer.repair(ctx, first, "causality: output at position 3 depends on position 40\nmore")
    assert second.mutations[0].split("(")[0] != first.mutations[0].split("(")[0]
    assert first.mutations[0] in second.lessons.en and "causality" in second.lessons.zh
    lone = MutateProposer(seed=0, max_mutations=1, catalogue=[BY_NAME["beta_floor"]])
    p, _ = lone.propose(ctx)
    with pytest.raises(ProposalError, match="no transformation applies"):
        lone.repair(ctx, p, "nan")


def test_undo_removes_exactly_the_block_an_earlier_transformation_inserted():
    softmax, tanh = BY_NAME["intra_chunk_softmax"], BY_NAME["tanh_on_error"]
    both = softmax.apply(tanh.apply(BASELINE, {"scale": 0.5}), {"temperature": 0.25})
    assert set(UNDO.blocks(both)) == {"tanh_on_error", "intra_chunk_softmax"}
    assert UNDO.apply(both, {"name": "tanh_on_error"}) == softmax.apply(BASELINE, {"temperature": 0.25})
    assert UNDO.apply(UNDO.apply(both, {"name": "tanh_on_error"}), {"name": "intra_chunk_softmax"}) == BASELINE
    edited = both.replace("0.5 * torch.tanh(u_n / 0.5)", "0.5 * torch.tanh(u_n / 0.7)")
    assert set(UNDO.blocks(edited)) == {"intra_chunk_softmax"}
    assert UNDO.apply(edited, {"name": "tanh_on_error"}) is None


def test_undo_drops_the_transformation_with_the_weakest_record():
    softmax, floor = BY_NAME["intra_chunk_softmax"], BY_NAME["beta_floor"]
    code = floor.apply(softmax.apply(BASELINE, {"temperature": 1.0}), {"floor": 0.1})
    records = [BASE,
               candidate(1, "s", 0, shifted(BASELINE_SCORES, memorize=0.3),
                         mutations=["intra_chunk_softmax(temperature=1.0)"]),
               candidate(2, "f", 0, shifted(BASELINE_SCORES, compress=-0.12), mutations=["beta_floor(floor=0.25)"]),
               candidate(3, "sf", 1, shifted(BASELINE_SCORES, memorize=0.3, compress=-0.06),
                         mutations=["beta_floor(floor=0.1)"])]
    proposer = MutateProposer(seed=0, max_mutations=1, catalogue=[])
    p, _ = proposer.propose(context(records, parent=records[3], code=code))
    assert p.mutations == ["undo(name=beta_floor)"] and p.name == "delta_net_without_beta_floor"
    assert p.resolve_code(code) == softmax.apply(BASELINE, {"temperature": 1.0})
    assert p.predicted["compress"] > records[3].scores["compress"].mean
    assert "beta_floor" in p.code_issues.en and "-0.015" in p.code_issues.en and "-0.015" in p.code_issues.zh


def test_taken_names_get_a_numeric_suffix():
    chain = [(BY_NAME["tanh_on_error"], {"scale": 1.0})]
    assert MutateProposer.name_for(chain, []) == "delta_net_tanh_on_error"
    assert MutateProposer.name_for(chain, ["delta_net_tanh_on_error", "delta_net_tanh_on_error_2"]) \
        == "delta_net_tanh_on_error_3"


@pytest.mark.slow
def test_every_setting_passes_the_workers_dynamic_checks():
    from sandbox.dynamic_checks import run_dynamic_checks
    for t in CATALOGUE:
        for params in t.grid:
            findings = run_dynamic_checks(load(t.apply(BASELINE, params)), "cpu")
            failed = [f for f in findings if not f["passed"]]
            assert not failed, (label(t.name, params), failed)


def test_search_on_a_synthetic_landscape_climbs_above_the_baseline():
    """The proposer in a loop against a fake scorer (effects per transformation plus noise) finds the gain."""
    import random

    from agent.config import ParentConfig
    from agent.parents import select_parent
    effect = {"intra_chunk_softmax": 0.06, "tanh_on_error": 0.01, "beta_scale": 0.008}
    rng = random.Random(0)
    records, codes, fps = [BASE], {0: BASELINE}, [fingerprint(BASELINE)]
    proposer = MutateProposer(seed=1, max_mutations=2)
    for i in range(1, 25):
        parent = select_parent(records, ParentConfig(), rng)
        ctx = ProposalContext(parent=parent, parent_code=codes[parent.id], baseline=BASE, records=records,
                              existing_names=[r.name for r in records], existing_fingerprints=fps)
        p, _ = proposer.propose(ctx)
        code = p.resolve_code(codes[parent.id])
        gain = sum(effect.get(n, -0.01) for n in applied(code))
        scores = {t: v + gain + rng.gauss(0, 0.005) for t, v in BASELINE_SCORES.items()}
        records.append(candidate(i, p.name, parent.id, scores, mutations=p.mutations))
        codes[i], fps = code, fps + [fingerprint(code)]
    best = max(records, key=lambda r: r.mean)
    assert best.mean > BASE.mean + 0.06
    assert "intra_chunk_softmax" in applied(codes[best.id])
