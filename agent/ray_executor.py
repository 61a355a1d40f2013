"""The Ray executor: the same isolated evaluations as Ray tasks, on a cluster of any size.

Each job is one task running sandbox.isolation.run_isolated on whichever node Ray picks (the task is
that function, so a node imports sandbox.* and torch only; the sandbox package travels with the job
as a py_module). On a cluster with GPUs a task asks for one GPU (1/per_gpu of one) and Ray pins it
through CUDA_VISIBLE_DEVICES; without GPUs, one CPU. Results come back to the one controller, which
validates and records them. Tested by tests/test_ray_executor.py against a local Ray instance on CPU.
"""
from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import sandbox
from agent.errors import ConfigError
from agent.executor import Job
from agent.records import EvalResult
from sandbox.isolation import run_isolated

TASK_RETRIES = 2      # a task whose node died is run again (a candidate's own failure is a result, not a retry)


def task_options(resources: dict[str, float], job: Job, per_gpu: int = 1) -> dict:
    """Ray resources for one evaluation: a GPU share where the cluster has GPUs and the job may use one."""
    if resources.get("GPU", 0) > 0 and job.device != "cpu":
        return {"num_gpus": 1 / per_gpu, "num_cpus": 1}
    return {"num_cpus": 1}


def slots_of(resources: dict[str, float], per_gpu: int = 1, device: str = "auto") -> int:
    """How many evaluations the cluster runs at once (GPUs x per_gpu, else its CPUs)."""
    gpus = int(resources.get("GPU", 0))
    if gpus and device != "cpu":
        return gpus * per_gpu
    return max(1, int(resources.get("CPU", 1)))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'archer[ray]' "
                          "(or `pip install \"ray[default]\"`)") from None
    return ray


class RayExecutor:
    """Submits jobs as Ray tasks; connects to `address` ("auto", "ray://host:10001") or starts a local Ray."""

    def __init__(self, address: str | None = None, *, per_gpu: int = 1, device: str = "auto", **init_kwargs):
        ray = self._ray = _import_ray()
        self.per_gpu = per_gpu
        self._started_here = not ray.is_initialized()
        if self._started_here:
            runtime_env = {"py_modules": [str(Path(sandbox.__file__).parent)]}
            try:
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, **init_kwargs)
            except ConnectionError as e:
                raise ConfigError(f"executor ray: cannot reach a Ray cluster at {address or 'auto'}: {e}") from None
        self.resources = ray.cluster_resources()
        self.slots = slots_of(self.resources, per_gpu, device)
        self._task = ray.remote(max_retries=TASK_RETRIES)(run_isolated)
        self._refs: list = []

    def submit(self, job: Job) -> Future:
        ref = self._task.options(name=job.key, **task_options(self.resources, job, self.per_gpu)) \
            .remote(job.code, **job.isolated_kwargs())
        self._refs.append(ref)
        out: Future = Future()
        out.set_running_or_notify_cancel()
        ref.future().add_done_callback(lambda f: self._deliver(f, out, ref))
        return out

    def _deliver(self, raw: Future, out: Future, ref) -> None:
        try:
            result = EvalResult.model_validate(raw.result())
        except Exception as e:               # the task was lost or cancelled: the controller records it
            out.set_exception(e)
            return
        finally:
            if ref in self._refs:
                self._refs.remove(ref)
        execution = {**result.execution, "executor": "ray", "node": result.environment.get("hostname", "")}
        out.set_result(result.model_copy(update={"execution": execution}))

    def cancel(self) -> None:
        """Queued tasks are dropped; a running one gets KeyboardInterrupt, and run_isolated kills its worker."""
        for ref in list(self._refs):
            self._ray.cancel(ref)

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()

    def describe(self) -> str:
        gpus, cpus = int(self.resources.get("GPU", 0)), int(self.resources.get("CPU", 0))
        return f"ray, {self.slots} slot{'s' if self.slots != 1 else ''} ({gpus} GPUs, {cpus} CPUs in the cluster)"
