"""Import of the earlier pipeline's logs: tolerant parsing of several layouts, problems named, a real workspace."""
from pathlib import Path

import pandas as pd
import pytest

from agent.errors import ArcherError
from agent.legacy import import_logs, parse_log, plan_import
from agent.records import TASKS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy"
BASE = "def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):\n    return q, k\n"
TANH = "delta_net_4layer_tanh_on_error_before_state_update"


def load(name: str):
    return parse_log((FIXTURES / name).read_text(encoding="utf-8"), name)


def test_the_standard_layout_gives_rows_timestamp_insights_name_and_success():
    log = load("01_standard.log")
    assert list(log.rows) == ["delta_net_4layer", "delta_net_4layer_add_momentum_to_state_update_after_output",
                              "delta_net_4layer_softmax_normalised_intra_chunk_causal_attention",
                              "gated_delta_net_4layer"]
    assert log.rows["delta_net_4layer"]["fuzzy_recall"] == pytest.approx(0.189705)
    assert (log.timestamp, log.name, log.success, log.problems) == ("20250616_230248", TANH, True, [])
    assert log.insights.startswith("Key Observations") and "Gated-DeltaNet" in log.insights


def test_reordered_columns_and_windows_line_endings_map_scores_to_the_right_tasks():
    log = load("02_crlf_reordered_no_name.log")
    row = log.rows[TANH]
    assert [row[t] for t in TASKS] == pytest.approx([0.5012, 0.9993, 0.221, 0.351, 0.9995, 0.991])
    assert log.name == "" and "tanh bound helped Fuzzy Recall" in log.insights and log.problems == []


def test_a_wrapped_table_with_names_as_index_is_joined_across_blocks():
    log = load("03_wrapped_index.log")
    assert len(log.rows) == 6 and all(len(r) == 6 for r in log.rows.values())
    assert log.rows["delta_net_4layer_beta_sharpening_per_head"]["selective_copy"] == pytest.approx(0.985)
    assert log.success is False and log.problems == []


def test_truncated_tables_and_hidden_rows_are_named_one_line_each():
    log = load("04_truncated.log")
    assert any(":7:" in p and "3 values for 6 columns" in p for p in log.problems)
    assert any("rows hidden" in p for p in log.problems)
    assert "delta_net_4layer_beta_shar..." in log.rows and log.rows["delta_net_4layer_state_decay_learned"]["memorize"] is None
    assert load("05_no_table.log").problems == ["05_no_table.log: no results table found"]
    assert all("\n" not in p for p in log.problems)


def test_the_plan_attributes_insights_resolves_cut_names_and_sets_references_apart():
    plan = plan_import([load(p.name) for p in sorted(FIXTURES.glob("*.log"))])
    by_name = {c["name"]: c for c in plan.candidates}
    assert plan.baseline_name == "delta_net_4layer" and list(plan.references) == ["gated_delta_net_4layer"]
    assert "bounds each error element" in by_name[TANH]["insights"]
    assert "下一步" in by_name["delta_net_4layer_beta_sharpening_per_head"]["insights"]  # no name line: next log's new row
    assert "delta_net_4layer_beta_shar..." not in by_name
    assert by_name["delta_net_4layer_state_decay_learned"]["status"] == "crashed"
    assert by_name["delta_net_4layer_clip_state_norm_per_chunk"]["reason"].code == "import.failed"


def test_import_builds_a_workspace_of_candidates_without_code(tmp_path):
    ws, plan = import_logs(sorted(FIXTURES.glob("*.log")), tmp_path / "old", baseline_code=BASE)
    df = pd.read_csv(ws.path / "results.csv")
    assert df["id"].tolist() == list(range(8)) and set(df["proposer"]) == {"import"}
    assert df.set_index("name").loc[TANH, "mean"] == pytest.approx(0.677167, abs=1e-6)
    base = ws.get(0)
    assert base.status == "ok" and base.mean == pytest.approx(0.667409, abs=1e-6) and ws.code(0) == BASE
    assert ws.has_code(0) and not ws.has_code(3) and ws.code(3).startswith("# archer: no code")
    tanh = next(c for c in ws.records() if c.name == TANH)
    assert "u_i = tanh(u_i)" in ws.report(tanh.id) and "## 中文" in ws.report(tanh.id)
    assert ws.references()["name"].tolist() == ["gated_delta_net_4layer"]
    assert any("rows hidden" in p for p in plan.problems)
    assert not ws.repo.is_dirty(untracked_files=True)


def test_logs_without_any_table_create_nothing(tmp_path):
    with pytest.raises(ArcherError, match="no results table"):
        import_logs([FIXTURES / "05_no_table.log"], tmp_path / "none", baseline_code=BASE)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ArcherError, match="cannot read"):
        import_logs([tmp_path / "missing.log"], tmp_path / "none", baseline_code=BASE)
