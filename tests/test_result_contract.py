"""The worker's result JSON (sandbox/result.py) and the controller's pydantic mirror stay in step."""
from typing import get_type_hints

from agent import records
from sandbox import result


def test_every_result_field_has_a_pydantic_twin():
    for typed, model in [(result.EvalResult, records.EvalResult), (result.Score, records.Score),
                         (result.SettingScore, records.SettingScore),
                         (result.CheckFinding, records.CheckFinding)]:
        assert set(get_type_hints(typed)) == set(model.model_fields), typed.__name__


def test_failure_result_validates_as_eval_result():
    raw = result.failure("timeout", "timeout", "killed after 5 s")
    parsed = records.EvalResult.model_validate(raw)
    assert parsed.status == "timeout" and parsed.scores == {}


def test_results_written_before_whole_set_accuracy_still_load():
    setting = {"task": "memorize", "setting": "baseline", "seed": 0, "lr": 1e-3, "weight_decay": 0.0,
               "accuracy": 0.9, "token_accuracy": 0.95, "valid_accuracy": 0.9, "steps": 10, "best_step": 10,
               "seconds": 1.0}
    old = {"status": "ok", "scores": {"memorize": {"mean": 0.9}}, "token_accuracy": {"memorize": {"mean": 0.95}},
           "settings": [setting]}
    parsed = records.EvalResult.model_validate(old)
    assert parsed.settings[0].whole_set_accuracy is None and parsed.whole_set_accuracy == {}


def test_recorded_statuses_extend_worker_statuses():
    assert set(result.STATUSES) < set(records.RECORD_STATUSES)
    assert {"rejected", "pending"} <= set(records.RECORD_STATUSES)
