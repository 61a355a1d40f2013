"""The executor seam: where evaluations run, so that the loop can keep every GPU busy.

A `Job` is one evaluation (code, profile, seeds; a key naming who asked); an `Executor` runs jobs and
answers each with a future of its `EvalResult`, which only the one controller reads and records.
`LocalExecutor` runs isolated workers on this machine, one per slot (GPUs x per_gpu, each worker pinned
to its GPU by CUDA_VISIBLE_DEVICES; one slot without a GPU); `agent/ray_executor.py` runs the same
workers as Ray tasks. Tested by tests/test_executor.py (real workers, injected runs for scheduling).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from agent.config import Config, EvalConfig, ExecutorConfig
from agent.errors import ConfigError
from agent.records import EvalResult
from sandbox.isolation import kill_group, run_isolated


@dataclass(frozen=True)
class Job:
    key: str                       # who asked, e.g. "cand-0007:quick"
    code: str
    profile: str
    seeds: tuple[int, ...]
    model: str = "delta_net"
    device: str = "auto"
    timeout_s: float = 3600.0

    @classmethod
    def of(cls, key: str, code: str, config: EvalConfig, *, profile: str | None = None,
           seeds: list[int] | None = None) -> "Job":
        """The job evaluate_code would run for this code under `config`."""
        return cls(key=key, code=code, profile=profile or config.profile, seeds=tuple(seeds or config.seeds),
                   model=config.model, device=config.device, timeout_s=config.timeout_s)

    def isolated_kwargs(self) -> dict:
        """Keyword arguments of sandbox.isolation.run_isolated (plain values: they travel to Ray nodes)."""
        return dict(profile=self.profile, seeds=list(self.seeds), model=self.model, device=self.device,
                    timeout_s=self.timeout_s)


RunJob = Callable[[Job, "str | None", Callable[[int], None]], dict]


def run_job(job: Job, gpu: str | None, on_start: Callable[[int], None]) -> dict:
    """The worker's raw result for `job`, pinned to `gpu` (a CUDA_VISIBLE_DEVICES value) when given."""
    return run_isolated(job.code, gpu=gpu, on_start=on_start, **job.isolated_kwargs())


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


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES values for its workers."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


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


class LocalExecutor:
    """A pool of slots on this machine; each job takes a free slot, runs its worker there, and frees it."""

    def __init__(self, slots: list[str | None], run: RunJob = run_job):
        if not slots:
            raise ConfigError("the local executor needs at least one slot")
        self.slots = len(slots)
        self.devices = list(slots)
        self._run = run
        self._free = list(slots)
        self._lock = threading.Lock()
        self._workers: set[int] = set()
        self._cancelled = False
        self._pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="archer-eval")

    def submit(self, job: Job) -> Future:
        return self._pool.submit(self._evaluate, job)

    def _evaluate(self, job: Job) -> EvalResult:
        with self._lock:
            gpu = self._free.pop(0)
        pids: list[int] = []
        try:
            raw = self._run(job, gpu, lambda pid: self._started(pid, pids))
        finally:
            with self._lock:
                self._free.append(gpu)
                self._workers.difference_update(pids)
        result = EvalResult.model_validate(raw)
        execution = {**result.execution, "executor": "local", "gpu": gpu if gpu is not None else "cpu"}
        return result.model_copy(update={"execution": execution})

    def _started(self, pid: int, pids: list[int]) -> None:
        with self._lock:
            pids.append(pid)
            self._workers.add(pid)
            cancelled = self._cancelled
        if cancelled:
            kill_group(pid)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            workers = list(self._workers)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for pid in workers:
            kill_group(pid)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def describe(self) -> str:
        gpus = sorted({d for d in self.devices if d is not None}, key=str)
        where = f"GPU{'s' if len(gpus) != 1 else ''} {', '.join(gpus)}" if gpus else "the CPU"
        return f"local, {self.slots} slot{'s' if self.slots != 1 else ''} on {where}"

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    return LocalExecutor(local_slots(ex, config.eval.device))


def wants_pipeline(config: Config) -> bool:
    """Whether `archer run` needs the pipelined loop: Ray, a cascade, or any GPU slot (proposals go ahead)."""
    if config.executor.kind == "ray" or config.eval.cascade:
        return True
    return any(slot is not None for slot in local_slots(config.executor, config.eval.device))
