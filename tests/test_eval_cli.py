"""`archer eval`: a table of scores for a good candidate, one line and exit 1 for a bad one (real worker)."""
import json
from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app
from agent.errors import ArcherError

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
NON_CAUSAL = '''import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    o = v.flip(2).cumsum(2).flip(2) * beta[..., None] + q.sum(-1, keepdim=True) * k.sum(-1, keepdim=True)
    return o, torch.einsum("bhld,bhle->bhde", k, v)
'''


def test_eval_prints_scores_timings_and_writes_the_result(tmp_path):
    out = tmp_path / "result.json"
    r = runner.invoke(app, ["eval", str(ROOT / "sandbox" / "naive.py"), "--profile", "smoke", "--device", "cpu",
                            "--tasks", "memorize", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Memorize" in r.output and "mean" in r.output and "token acc." in r.output
    assert "total" in r.output and "cuda graphs off" in r.output
    result = json.loads(out.read_text())
    assert result["status"] == "ok" and result["scores"]["memorize"]["mean"] > 0.5
    assert result["execution"]["precision"] == "fp32" and result["execution"]["deterministic"] is False


def test_deterministic_reaches_the_worker(tmp_path):
    out = tmp_path / "result.json"
    r = runner.invoke(app, ["eval", str(ROOT / "sandbox" / "naive.py"), "--profile", "smoke", "--device", "cpu",
                            "--tasks", "memorize", "--deterministic", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["execution"]["deterministic"] is True


def test_bf16_asked_on_the_cpu_trains_in_float32_and_says_so(tmp_path):
    out = tmp_path / "result.json"
    r = runner.invoke(app, ["eval", str(ROOT / "sandbox" / "naive.py"), "--profile", "smoke", "--device", "cpu",
                            "--tasks", "memorize", "--precision", "bf16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["execution"]["precision"] == "fp32" and ", fp32" in r.output


def test_eval_of_a_failing_candidate_is_one_line_naming_the_check(tmp_path):
    bad = tmp_path / "naive.py"
    bad.write_text(NON_CAUSAL)
    r = runner.invoke(app, ["eval", str(bad), "--profile", "smoke", "--device", "cpu"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid: causality: ")
    assert "position" in lines[0]


def test_eval_rejects_bad_arguments_with_a_named_error(tmp_path):
    """ArcherError: main() turns it into one line and exit 1 (tests/test_cli.py covers that part)."""
    missing = runner.invoke(app, ["eval", str(tmp_path / "nope.py")])
    assert isinstance(missing.exception, ArcherError) and "no such file" in str(missing.exception)
    (tmp_path / "naive.py").write_text("x = 1\n")
    for args, words in ([["--profile", "huge"], "unknown profile"], [["--seeds", "a,b"], "--seeds"],
                        [["--tasks", "memorise"], "unknown task"], [["--model", "rwkv"], "unknown model"],
                        [["--precision", "fp16"], "unknown precision"]):
        r = runner.invoke(app, ["eval", str(tmp_path / "naive.py"), *args])
        assert isinstance(r.exception, ArcherError) and words in str(r.exception), r.output
