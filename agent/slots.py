"""The parts of the executor that need only the stdlib and sandbox/: jobs, GPU slots, the slot pool.

A `SlotPool` runs one callable per free slot (a GPU to pin a worker to, or None for the CPU) and kills
the workers it started when the work is abandoned; it may own spare workers (sandbox.isolation.Spares)
that its callables hand jobs to. agent/executor.py builds the LocalExecutor on it;
bench/bench_gpus.py uses it on a bare GPU node (torch, no pydantic). Tested by tests/test_executor.py.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sandbox.isolation import Spares, kill_group, run_isolated


@dataclass(frozen=True)
class Job:
    key: str                       # who asked, e.g. "cand-0007:quick"
    code: str
    profile: str
    seeds: tuple[int, ...]
    model: str = "delta_net"
    device: str = "auto"
    timeout_s: float = 3600.0
    deterministic: bool = False

    @classmethod
    def of(cls, key: str, code: str, config, *, profile: str | None = None,
           seeds: list[int] | None = None) -> "Job":
        """The job evaluate_code would run for this code under `config` (an agent.config.EvalConfig)."""
        return cls(key=key, code=code, profile=profile or config.profile, seeds=tuple(seeds or config.seeds),
                   model=config.model, device=config.device, timeout_s=config.timeout_s,
                   deterministic=config.deterministic)

    def isolated_kwargs(self) -> dict:
        """Keyword arguments of sandbox.isolation.run_isolated (plain values: they travel to Ray nodes)."""
        return dict(profile=self.profile, seeds=list(self.seeds), model=self.model, device=self.device,
                    timeout_s=self.timeout_s, extra_args=("--deterministic",) if self.deterministic else ())


RunJob = Callable[[Job, "str | None", Callable[[int], None]], dict]


def run_job(job: Job, gpu: str | None, on_start: Callable[[int], None], spares: Spares | None = None) -> dict:
    """The worker's raw result for `job`, pinned to `gpu` (a CUDA_VISIBLE_DEVICES value) when given, on a
    spare worker started ahead for that GPU when `spares` holds one."""
    return run_isolated(job.code, gpu=gpu, on_start=on_start, spares=spares, **job.isolated_kwargs())


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES values for its workers."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


class SlotPool:
    """One thread per slot; a submitted callable gets a free slot's GPU and an on_start for its worker's pid."""

    def __init__(self, slots: list[str | None], spares: Spares | None = None):
        self.slots = len(slots)
        self.devices = list(slots)
        self.spares = spares           # spare workers the callables may use; closed with the pool
        self._free = list(slots)
        self._lock = threading.Lock()
        self._workers: set[int] = set()
        self._cancelled = False
        self._pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="archer-eval")

    def start_spares(self, device: str) -> None:
        """One spare worker per slot, pinned to the slot's GPU, for jobs on `device` (needs `spares`)."""
        for gpu in self.devices:
            self.spares.start(device=device, gpu=gpu)

    def run_on_slot(self, fn: Callable[[str | None, Callable[[int], None]], object]) -> Future:
        """A future of fn(gpu, on_start), run once a slot is free (jobs beyond the slots wait in order)."""
        return self._pool.submit(self._on_slot, fn)

    def _on_slot(self, fn):
        with self._lock:
            gpu = self._free.pop(0)
        pids: list[int] = []
        try:
            return fn(gpu, lambda pid: self._started(pid, pids))
        finally:
            with self._lock:
                self._free.append(gpu)
                self._workers.difference_update(pids)

    def _started(self, pid: int, pids: list[int]) -> None:
        with self._lock:
            pids.append(pid)
            self._workers.add(pid)
            cancelled = self._cancelled
        if cancelled:
            kill_group(pid)

    def cancel(self) -> None:
        """Drop the queued work and kill every running worker's process group."""
        with self._lock:
            self._cancelled = True
            workers = list(self._workers)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for pid in workers:
            kill_group(pid)
        if self.spares is not None:
            self.spares.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self.spares is not None:
            self.spares.close()

    def describe(self) -> str:
        gpus = sorted({d for d in self.devices if d is not None}, key=str)
        where = f"GPU{'s' if len(gpus) != 1 else ''} {', '.join(gpus)}" if gpus else "the CPU"
        spares = ", a spare worker started ahead for each" if self.spares is not None else ""
        return f"local, {self.slots} slot{'s' if self.slots != 1 else ''} on {where}{spares}"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
