"""The executor seam: where evaluations run, so that the loop can keep every GPU busy.

A `Job` is one evaluation (code, profile, seeds; a key naming who asked); an `Executor` runs jobs and
answers each with a future of its `EvalResult`, which only the one controller reads and records.
`LocalExecutor` runs isolated workers on this machine, one per slot (GPUs x per_gpu, each worker pinned
to its GPU by CUDA_VISIBLE_DEVICES; one slot without a GPU; the pool is agent/slots.py);
`agent/ray_executor.py` runs the same workers as Ray tasks. Tested by tests/test_executor.py (real workers, injected runs for scheduling).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from agent.config import Config, ExecutorConfig
from agent.errors import ConfigError
from agent.records import EvalResult
from agent.slots import Job, RunJob, SlotPool, run_job, visible_gpus  # noqa: F401  (re-exported)
from sandbox.isolation import Spares


class Executor(Protocol):
    slots: int                     # evaluations that run at once

    def submit(self, job: Job) -> Future:
        """A future of the job's EvalResult; jobs beyond the free slots wait in order."""

    def cancel(self) -> None:
        """Abandon everything: queued jobs are dropped, running workers killed."""

    def describe(self) -> str:
        """One line for the run log: where the evaluations run."""

    def close(self) -> None:
        """Wait for the running jobs and release the slots."""


def local_slots(config: ExecutorConfig, device: str, gpus: list[str] | None = None) -> list[str | None]:
    """One entry per slot: the GPU its worker is pinned to, or None for the one CPU slot."""
    if device == "cpu":
        return [None]
    visible = visible_gpus() if gpus is None else gpus
    if config.gpus is not None:
        missing = [i for i in config.gpus if not 0 <= i < len(visible)]
        if missing:
            raise ConfigError(f"executor.gpus: GPU {missing[0]} is not visible (this machine shows "
                              f"{len(visible)} GPU{'s' if len(visible) != 1 else ''})")
        visible = [visible[i] for i in config.gpus]
    if not visible:
        if device == "cuda":
            raise ConfigError("eval.device is cuda but no GPU is visible")
        return [None]
    if config.per_gpu < 1:
        raise ConfigError("executor.per_gpu must be at least 1")
    return [gpu for gpu in visible for _ in range(config.per_gpu)]


class LocalExecutor(SlotPool):
    """Evaluations on this machine's slots: each job takes a free slot, runs its worker there, frees it.

    With `spares`, each slot gets a worker started ahead at once (for jobs on `device`) and, after each job
    it takes, the next one: a job then skips the worker's start (sandbox.isolation.Spares)."""

    def __init__(self, slots: list[str | None], run: RunJob = run_job, *, spares: bool = False,
                 device: str = "auto"):
        if not slots:
            raise ConfigError("the local executor needs at least one slot")
        super().__init__(slots, Spares() if spares else None)
        self._run = run
        if self.spares is not None:
            self.start_spares(device)
            self._run = functools.partial(run, spares=self.spares)

    def submit(self, job: Job) -> Future:
        return self.run_on_slot(lambda gpu, on_start: self._evaluate(job, gpu, on_start))

    def _evaluate(self, job: Job, gpu: str | None, on_start: Callable[[int], None]) -> EvalResult:
        result = EvalResult.model_validate(self._run(job, gpu, on_start))
        execution = {**result.execution, "executor": "local", "gpu": gpu if gpu is not None else "cpu"}
        return result.model_copy(update={"execution": execution})


def executor_overrides(kind: str | None = None, address: str | None = None,
                       gpus: str | None = None) -> ExecutorConfig | None:
    """The [executor] fields given on the command line (`--gpus 0,1`, or `all`), others left unset."""
    fields: dict = {}
    if kind is not None:
        if kind not in ("local", "ray"):
            raise ConfigError(f"--executor {kind}: expected local or ray")
        fields["kind"] = kind
    if address is not None:
        fields["address"] = address
    if gpus is not None:
        try:
            fields["gpus"] = None if gpus == "all" else [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise ConfigError(f"--gpus {gpus}: expected GPU indices such as 0,1 (or all)") from None
    return ExecutorConfig(**fields) if fields else None


def make_executor(config: Config) -> Executor:
    """The executor archer.toml [executor] asks for (Ray is imported only when asked for)."""
    ex = config.executor
    if ex.kind == "ray":
        from agent.ray_executor import RayExecutor
        return RayExecutor(ex.address, per_gpu=ex.per_gpu, device=config.eval.device)
    slots = local_slots(ex, config.eval.device)
    spares = ex.spare_workers if ex.spare_workers is not None else any(gpu is not None for gpu in slots)
    return LocalExecutor(slots, spares=spares, device=config.eval.device)


def wants_pipeline(config: Config) -> bool:
    """Whether `archer run` needs the pipelined loop: Ray, a cascade, or any GPU slot (proposals go ahead)."""
    if config.executor.kind == "ray" or config.eval.cascade:
        return True
    return any(slot is not None for slot in local_slots(config.executor, config.eval.device))
