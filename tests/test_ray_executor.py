"""The Ray executor: resources per task, and real isolated workers as tasks of a local Ray instance on CPU.

Starting Ray takes about 20 s on a loaded 2-core machine: CI runs one test against a local instance
(Ray is in the dev extra); the cancellation test is marked slow (`pytest -m slow tests/test_ray_executor.py`).
"""
import sys
from pathlib import Path

import pytest

from agent.config import Config, ExecutorConfig
from agent.errors import ConfigError
from agent.executor import Job, make_executor
from agent.ray_executor import slots_of, task_options

BASELINE = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()
HANGS = BASELINE.replace("    B, H, L, Dk = q.shape\n", "    while True:\n        q = q + 0\n    B, H, L, Dk = q.shape\n", 1)
NOT_FINITE = BASELINE.replace("    return o, S\n", "    return o * float(\"nan\"), S\n", 1)


def job(key, code, device="auto", timeout_s=300.0):
    return Job(key=key, code=code, profile="smoke", seeds=(0,), device=device, timeout_s=timeout_s)


def test_a_task_asks_for_a_gpu_share_on_gpu_clusters_and_one_cpu_otherwise():
    gpus, cpus = {"GPU": 8.0, "CPU": 128.0}, {"CPU": 64.0}
    assert task_options(gpus, job("a", BASELINE)) == {"num_gpus": 1.0, "num_cpus": 1}
    assert task_options(gpus, job("a", BASELINE), per_gpu=2) == {"num_gpus": 0.5, "num_cpus": 1}
    assert task_options(gpus, job("a", BASELINE, device="cpu")) == {"num_cpus": 1}
    assert task_options(cpus, job("a", BASELINE)) == {"num_cpus": 1}
    assert slots_of(gpus) == 8 and slots_of(gpus, per_gpu=2) == 16
    assert slots_of(cpus) == 64 and slots_of(gpus, device="cpu") == 128


def test_asking_for_ray_without_ray_installed_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    config = Config(executor=ExecutorConfig(kind="ray", address="auto"))
    with pytest.raises(ConfigError, match=r"needs Ray: pip install 'archer\[ray\]'"):
        make_executor(config)


def test_an_unreachable_cluster_is_a_one_line_error():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    from agent.ray_executor import RayExecutor
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster at auto"):
        RayExecutor("auto")


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray")
    from agent.ray_executor import RayExecutor
    ex = RayExecutor(None, num_cpus=2, include_dashboard=False)
    yield ex
    ex.close()


def test_evaluations_run_as_ray_tasks_and_every_result_reaches_the_controller(ray_executor):
    assert ray_executor.slots == 2 and "ray, 2 slots" in ray_executor.describe()
    futures = {
        "static": ray_executor.submit(job("cand-0001:smoke", "import os\n")),
        "not_finite": ray_executor.submit(job("cand-0002:smoke", NOT_FINITE)),
        "hung": ray_executor.submit(job("cand-0003:smoke", HANGS, timeout_s=5)),
    }
    results = {name: f.result(timeout=300) for name, f in futures.items()}
    assert results["static"].status == "invalid" and results["static"].reason == "static.import"
    assert results["not_finite"].status == "invalid"
    assert "finite" in results["not_finite"].reason + results["not_finite"].message
    assert results["hung"].status == "timeout"
    assert all(r.execution["executor"] == "ray" for r in results.values())
    assert results["not_finite"].execution["node"]


@pytest.mark.slow
def test_cancel_drops_ray_tasks_and_their_futures_fail(ray_executor):
    futures = [ray_executor.submit(job(f"cand-00{i}:smoke", HANGS, timeout_s=300)) for i in range(10, 14)]
    ray_executor.cancel()
    for f in futures:
        with pytest.raises(Exception):
            f.result(timeout=120)
