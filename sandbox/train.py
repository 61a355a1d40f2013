"""MAD's training protocol for groups of runs that share shapes, trained together as one job.

A run is (setting, seed, lr, weight decay). Runs of one group are the members of one MADModel: per-member
AdamW (betas 0.9/0.999, eps 1e-8, decay on all parameters, constant lr as mad-lab's released code
trains), batch 128, at most 200 epochs, per-member early stopping on a validation split (>= 0.999, or no
gain for `patience` epochs; validated after every epoch, or every `min_eval_steps` steps where epochs are
short) with the best-validation checkpoint kept in memory and scored on the test set. Validation and test
use MAD's accuracy: macro accuracy per batch of 128 examples, batch-size-weighted mean (sandbox/metrics.py).
On CUDA the whole step is captured in a CUDA graph, with eager fallback; `deterministic` has every op take its
deterministic implementation (deterministic_ops), so a run repeats bit for bit on the same GPU and software.
Tested by tests/test_train.py.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from sandbox import metrics, tasks
from sandbox.model import CHUNK, MADModel

STOP_ACCURACY = 0.999           # mad-lab's early-stopping threshold
GRAPH_WARMUP_STEPS = 3          # eager steps on a side stream before capture (they are real steps)
MAX_GROUP_TOKENS = 2 ** 20      # members x batch x length of one group step: ~45 GB of activations on an H100
MAX_EVAL_TOKENS = 2 ** 22


@dataclass(frozen=True)
class Run:
    setting: tasks.Setting
    seed: int
    lr: float
    weight_decay: float

    @property
    def label(self) -> str:
        return f"{self.setting.task}/{self.setting.name} seed={self.seed} lr={self.lr:g} wd={self.weight_decay:g}"


@dataclass
class Outcome:
    run: Run
    accuracy: float             # MAD's score on the test set, best-validation checkpoint: macro accuracy per
                                # test batch of 128, batch-size-weighted mean (as mad-lab logs it)
    whole_set_accuracy: float   # macro accuracy over the whole test set at once
    token_accuracy: float       # plain accuracy over scored test positions
    valid_accuracy: float       # the best validation accuracy (what chose the checkpoint)
    steps: int
    best_step: int
    seconds: float


@dataclass
class Execution:
    """How the groups actually ran: filled in as they run, reported in the result JSON."""
    device: str
    batched: bool
    cuda_graphs: bool
    fallback_reason: str = ""
    precision: str = "fp32"     # fp32 | bf16 (mixed: float32 parameters, bf16 matmuls in the layers)
    deterministic: bool = False  # deterministic_ops asked for (it acts on CUDA; the CPU repeats bit for bit anyway)
    groups: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: {"data_s": 0.0, "data_wait_s": 0.0, "capture_s": 0.0,
                                                               "train_s": 0.0, "eval_s": 0.0})


def deterministic_ops(device: torch.device) -> bool:
    """On a GPU, have torch take each op's deterministic implementation where it has one; True when set.

    Without it a training run does not repeat bit for bit: the embedding's backward sums the gradients of
    repeated tokens with atomic adds, and the first gradients of two identical runs differ by about 1e-6,
    which Selective Copy's training turns into scores 0.45-0.58 apart for one seed (bench/
    bench_determinism.py, NOTES.md). The deterministic embedding backward sorts instead: with it two runs end
    bit-for-bit equal, the graphed steps 6-7% slower (measured on an H100 with torch's filling of new tensors
    with NaN, which comes with the setting; it is not needed for repeatability and stays off here). Ops with
    no deterministic implementation (in a candidate) warn once and run as before.
    """
    if device.type != "cuda":
        return False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    return True


class NonFiniteLoss(RuntimeError):
    pass


@dataclass(frozen=True)
class Budget:
    """The protocol knobs a profile sets."""
    batch_size: int = 128
    max_epochs: int = 200
    max_steps: int | None = None   # a cap on optimiser steps per run (cheap profiles only)
    patience: int = 20
    min_eval_steps: int = 0        # validate after an epoch only once this many steps passed since the last
                                   # validation (and always after the last epoch); 0: every epoch, as MAD does
    valid_size: int = 1280
    test_size: int | None = None   # None: the setting's num_test_examples
    eval_batch: int = 256


def is_autoencoder(setting: tasks.Setting) -> bool:
    return setting.task == "compress"


def group_key(run: Run) -> tuple:
    """Runs with equal keys train together: same read-out, same padded length, same training-set size."""
    length = tasks.input_length(run.setting)
    if not is_autoencoder(run.setting):
        length = math.ceil(length / CHUNK) * CHUNK   # causal model: padding at the end is exact
    return (is_autoencoder(run.setting), length, run.setting.num_train_examples)


def plan_groups(runs: list[Run], *, batched: bool, batch_size: int = 128,
                max_tokens: int = MAX_GROUP_TOKENS) -> list[list[Run]]:
    """Split runs into groups of shared shapes (each run alone when not batched), longest first."""
    if not batched:
        return [[r] for r in runs]
    by_key: dict[tuple, list[Run]] = {}
    for r in runs:
        by_key.setdefault(group_key(r), []).append(r)
    groups = []
    for key, members in by_key.items():
        per_group = max(1, max_tokens // (batch_size * key[1]))
        groups += [members[i:i + per_group] for i in range(0, len(members), per_group)]
    return sorted(groups, key=lambda g: -group_key(g[0])[1] * group_key(g[0])[2])


class MemberAdamW:
    """torch.optim.AdamW's update over a flat [G, P] buffer with per-member lr and weight decay [G].

    All state lives on the device (the step count too), so the update can be captured in a CUDA graph.
    """

    def __init__(self, flat, grad, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.flat, self.grad = flat, grad
        dev = flat.device
        self.lr = torch.as_tensor(lr, dtype=flat.dtype, device=dev).view(-1, 1).clone()
        self.wd = torch.as_tensor(weight_decay, dtype=flat.dtype, device=dev).view(-1, 1).clone()
        self.active = torch.ones_like(self.lr)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = torch.zeros_like(flat)
        self.v = torch.zeros_like(flat)
        self.t = torch.zeros((), dtype=flat.dtype, device=dev)

    def select(self, idx: torch.Tensor, bank) -> None:
        """Keep the state of members idx, now stepping the parameters of `bank`."""
        self.flat, self.grad = bank.flat, bank.grad
        self.m, self.v = self.m[idx], self.v[idx]
        self.lr, self.wd, self.active = self.lr[idx], self.wd[idx], self.active[idx]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        lr = self.lr * self.active
        bc1 = 1 - torch.pow(self.b1, self.t)
        bc2_sqrt = (1 - torch.pow(self.b2, self.t)).sqrt()
        self.flat.mul_(1 - lr * self.wd)
        self.m.lerp_(self.grad, 1 - self.b1)
        self.v.mul_(self.b2).addcmul_(self.grad, self.grad, value=1 - self.b2)
        denom = (self.v.sqrt() / bc2_sqrt).add_(self.eps)
        self.flat.sub_((lr / bc1) * self.m / denom)


def _stack_padded(parts: list[torch.Tensor], length: int, fill: int) -> torch.Tensor:
    out = torch.full((len(parts), parts[0].shape[0], length), fill, dtype=torch.long)
    for g, t in enumerate(parts):
        out[g, :, :t.shape[1]] = t
    return out


def group_data(runs: list[Run], budget: Budget) -> dict:
    """Train, validation and test splits of every member, padded to the group's length, on the host."""
    t0 = time.monotonic()
    length = group_key(runs[0])[1]
    sizes = {"train": runs[0].setting.num_train_examples, "valid": budget.valid_size,
             "test": budget.test_size or runs[0].setting.num_test_examples}
    out: dict = {}
    for split, n in sizes.items():
        xs, ys = zip(*(tasks.generate(r.setting, split, n, r.seed) for r in runs))
        out[split] = (_stack_padded(list(xs), length, 0), _stack_padded(list(ys), length, tasks.IGNORE))
    out["seconds"] = time.monotonic() - t0
    return out


@dataclass
class Member:
    """One run's bookkeeping inside a group."""
    position: int               # index of the run in the group as given
    run: Run
    shuffler: torch.Generator
    best: float = -1.0
    best_epoch: int = 0
    last_epoch: int = 0
    active: bool = True
    seconds: float = 0.0


class GroupTrainer:
    """Trains the members of one group to completion and scores their best checkpoints on the test set.

    When enough members have stopped, they are scored and dropped, so the rest train without their cost.
    """

    def __init__(self, runs: list[Run], model: str, core, budget: Budget, device: torch.device,
                 execution: Execution, log=print, data: dict | None = None):
        self.runs, self.budget, self.device, self.execution, self.log = runs, budget, device, execution, log
        self.graphs = execution.cuda_graphs and device.type == "cuda"
        self.length = group_key(runs[0])[1]
        data = data if data is not None else group_data(runs, budget)
        self.train, self.valid, self.test = ((x.to(device), y.to(device)) for x, y in
                                             (data["train"], data["valid"], data["test"]))
        execution.timings["data_s"] += data["seconds"]
        self.model = MADModel(model, [tasks.num_classes(r.setting) for r in runs], [r.seed for r in runs],
                              autoencoder=is_autoencoder(runs[0].setting), core=core, device=device,
                              bf16=execution.precision == "bf16")
        bank = self.model.bank
        self.opt = MemberAdamW(bank.flat, bank.grad, [r.lr for r in runs], [r.weight_decay for r in runs])
        self.best_flat = bank.flat.clone()
        self.members = [Member(i, r, torch.Generator().manual_seed(10_000 + r.seed)) for i, r in enumerate(runs)]
        self.outcomes: dict[int, Outcome] = {}
        self._side = torch.cuda.Stream(device) if self.graphs else None
        self._buffers()

    @property
    def G(self) -> int:
        return len(self.members)

    def _buffers(self) -> None:
        """Static input buffers for the current members; any captured graph is dropped."""
        G, B, L, dev = self.G, self.budget.batch_size, self.length, self.device
        self.x_buf = torch.zeros(G, B, L, dtype=torch.long, device=dev)
        self.y_buf = torch.full_like(self.x_buf, tasks.IGNORE)
        self.loss_acc = torch.zeros(G, device=dev)
        self.eval_batch = max(1, min(self.budget.eval_batch, MAX_EVAL_TOKENS // (G * L)))
        self.ex_buf = torch.zeros(G, self.eval_batch, L, dtype=torch.long, device=dev)
        self.ey_buf = torch.full_like(self.ex_buf, tasks.IGNORE)
        self.counts = metrics.new_counts(G, self.model.vocab, dev, max(self.valid[0].shape[1], self.test[0].shape[1]))
        self.eval_start = torch.zeros((), dtype=torch.long, device=dev)   # first example of the eval batch
        self._train_graph = self._eval_graph = None
        self._train_warm = self._eval_warm = 0

    def _fallback(self, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
        self.log(f"cuda graph capture failed, continuing eager: {reason}")
        self.graphs = False
        self.execution.cuda_graphs = False
        self.execution.fallback_reason = reason
        torch.cuda.synchronize(self.device)

    def _train_body(self) -> None:
        self.model.bank.grad.zero_()
        losses = self.model.losses(self.x_buf, self.y_buf)
        losses.sum().backward()
        self.loss_acc += losses.detach()
        self.opt.step()

    def _eval_body(self) -> None:
        with torch.no_grad():
            preds = self.model(self.ex_buf).argmax(-1)
            metrics.add_counts(self.counts, preds, self.ey_buf, self.eval_start)

    def _replay(self, kind: str) -> None:
        """Run one train or eval step: eager, warm-up on the side stream, capture, or graph replay."""
        body = self._train_body if kind == "train" else self._eval_body
        if not self.graphs:
            return body()
        graph = self._train_graph if kind == "train" else self._eval_graph
        if graph is not None:
            return graph.replay()
        warm = self._train_warm if kind == "train" else self._eval_warm
        if warm < GRAPH_WARMUP_STEPS:
            self._side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._side):
                body()
            torch.cuda.current_stream(self.device).wait_stream(self._side)
            if kind == "train":
                self._train_warm += 1
            else:
                self._eval_warm += 1
            return
        t0 = time.monotonic()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                body()
        except Exception as err:  # capture refused (host sync, data-dependent control flow): run eager
            self._fallback(err)
            return body()
        self.execution.timings["capture_s"] += time.monotonic() - t0
        if kind == "train":
            self._train_graph = graph
        else:
            self._eval_graph = graph
        graph.replay()

    def _epoch_batches(self, N: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        spe = math.ceil(N / B)
        idx = torch.zeros(self.G, spe * B, dtype=torch.long)
        keep = torch.zeros(self.G, spe * B, dtype=torch.bool)
        for g, m in enumerate(self.members):
            idx[g, :N] = torch.randperm(N, generator=m.shuffler) + g * N
            keep[g, :N] = True
        idx = idx.view(self.G, spe, B).transpose(0, 1).contiguous()
        keep = keep.view(self.G, spe, B).transpose(0, 1).contiguous()
        return idx.to(self.device), keep.to(self.device)

    def evaluate(self, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[list[float], list[float], list[float]]:
        """Per member: MAD's accuracy (macro per batch of 128 examples, batch-size-weighted mean), the whole-split
        macro accuracy and token accuracy (one host sync at the end)."""
        x, y = data
        n, Be = x.shape[1], self.eval_batch
        self.counts.zero_()
        for i in range(0, n, Be):
            xb, yb = x[:, i:i + Be], y[:, i:i + Be]
            self.ex_buf[:, :xb.shape[1]].copy_(xb)
            self.ey_buf.fill_(tasks.IGNORE)
            self.ey_buf[:, :yb.shape[1]].copy_(yb)
            self.eval_start.fill_(i)
            self._replay("eval")
        mad, whole, token = torch.stack([metrics.macro_accuracy(self.counts, n),
                                         metrics.whole_set_macro_accuracy(self.counts),
                                         metrics.token_accuracy(self.counts)]).tolist()
        return mad, whole, token

    def _finish(self, which: list[int], spe: int) -> None:
        """Score the best checkpoints of members `which` (positions in the current group) on the test set."""
        t0 = time.monotonic()
        bank = self.model.bank
        with torch.no_grad():
            current = bank.flat.clone()
            bank.flat.copy_(self.best_flat)
            acc, whole, tok = self.evaluate(self.test)
            bank.flat.copy_(current)
        self.execution.timings["eval_s"] += time.monotonic() - t0
        for g in which:
            m = self.members[g]
            o = self.outcomes[m.position] = Outcome(
                m.run, accuracy=acc[g], whole_set_accuracy=whole[g], token_accuracy=tok[g], valid_accuracy=m.best,
                steps=m.last_epoch * spe, best_step=m.best_epoch * spe, seconds=m.seconds)
            self.log(f"  {o.run.label}: test acc {o.accuracy:.4f} (whole set {o.whole_set_accuracy:.4f}, token "
                     f"{o.token_accuracy:.4f}), best val {o.valid_accuracy:.4f} at step {o.best_step}/{o.steps}")

    def _keep(self, which: list[int]) -> None:
        """Continue with members `which` only: slice data, parameters, optimiser state; recapture later."""
        idx = torch.tensor(which, device=self.device)
        self.members = [self.members[g] for g in which]
        self.train, self.valid, self.test = ((x[idx], y[idx]) for x, y in (self.train, self.valid, self.test))
        self.model.select(idx)
        self.opt.select(idx, self.model.bank)
        self.best_flat = self.best_flat[idx]
        self._buffers()

    def _end_epoch(self, epoch: int, acc: list[float], losses: list[float]) -> None:
        improved = []
        for g, m in enumerate(self.members):
            if not m.active:
                improved.append(False)
                continue
            if not math.isfinite(losses[g]):
                raise NonFiniteLoss(f"non-finite training loss in {m.run.label} at epoch {epoch}")
            m.last_epoch = epoch
            improved.append(acc[g] > m.best)
            if improved[-1]:
                m.best, m.best_epoch = acc[g], epoch
            if m.best >= STOP_ACCURACY or epoch - m.best_epoch >= self.budget.patience:
                m.active = False
        if any(improved):
            mask = torch.tensor(improved, device=self.device)[:, None]
            self.best_flat = torch.where(mask, self.model.bank.flat, self.best_flat)
        self.opt.active.copy_(torch.tensor([m.active for m in self.members], dtype=torch.float32).view(-1, 1))

    def fit(self) -> list[Outcome]:
        b = self.budget
        N, B = self.train[0].shape[1], b.batch_size
        spe = math.ceil(N / B)
        max_epochs = b.max_epochs if b.max_steps is None else max(1, min(b.max_epochs, b.max_steps // spe))
        unvalidated = 0                # steps since the last validation, and when they began
        t0 = time.monotonic()
        for epoch in range(1, max_epochs + 1):
            x_flat, y_flat = self.train[0].view(self.G * N, -1), self.train[1].view(self.G * N, -1)
            idx, keep = self._epoch_batches(N, B)
            for s in range(spe):
                self.x_buf.copy_(x_flat[idx[s]])
                self.y_buf.copy_(y_flat[idx[s]].masked_fill(~keep[s][..., None], tasks.IGNORE))
                self._replay("train")
            unvalidated += spe
            if unvalidated < b.min_eval_steps and epoch < max_epochs:
                continue
            if self.device.type == "cuda":     # the queued steps count as training time, not validation
                torch.cuda.synchronize(self.device)
            t_eval = time.monotonic()
            acc = self.evaluate(self.valid)[0]
            losses = (self.loss_acc / unvalidated).tolist()
            self.loss_acc.zero_()
            unvalidated = 0
            self._end_epoch(epoch, acc, losses)
            t_end = time.monotonic()
            self.execution.timings["train_s"] += t_eval - t0
            self.execution.timings["eval_s"] += t_end - t_eval
            for m in self.members:
                m.seconds += (t_end - t0) / self.G
            active = [g for g, m in enumerate(self.members) if m.active]
            self.log(f"  epoch {epoch} step {epoch * spe} loss " + " ".join(f"{v:.3f}" for v in losses)
                     + " | val " + " ".join(f"{a:.3f}" for a in acc)
                     + f" | active {len(active)}/{self.G} | {t_end - t0:.2f} s")
            if not active:
                break
            if len(active) <= 0.75 * self.G and epoch < max_epochs:
                self._finish([g for g, m in enumerate(self.members) if not m.active], spe)
                self._keep(active)
            t0 = time.monotonic()
        self._finish(list(range(self.G)), spe)
        return [self.outcomes[i] for i in range(len(self.runs))]


def prefetch_first_group(runs: list[Run], budget: Budget, *, batched: bool = True) -> Future | None:
    """Start generating the first group's data on a host thread now (the worker does it before its checks),
    for train_runs(first_data=...) to pick up."""
    groups = plan_groups(runs, batched=batched, batch_size=budget.batch_size)
    if not groups:
        return None
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(group_data, groups[0], budget)
    pool.shutdown(wait=False)
    return future


def train_runs(runs: list[Run], model: str, core, budget: Budget, device: torch.device, *,
               batched: bool = True, cuda_graphs: bool = True, precision: str = "fp32",
               deterministic: bool = False, log=print,
               first_data: Future | None = None) -> tuple[list[Outcome], Execution]:
    """Train every run (grouped when batched) and return one Outcome per run, in the order given.

    precision "bf16" is MAD's bf16 mixed precision (float32 parameters, bf16 matmuls in the layers), on CUDA
    only; the default stays float32 so that scores compare with every earlier figure. deterministic: on CUDA,
    deterministic_ops (the run repeats bit for bit). first_data: the first group's data already on its way
    (prefetch_first_group with the same runs, budget and batching)."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; expected bf16 or fp32")
    execution = Execution(device=str(device), batched=batched, cuda_graphs=cuda_graphs and device.type == "cuda",
                          precision=precision if device.type == "cuda" else "fp32")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")     # mad-lab's setting: TF32 matmuls
    execution.deterministic = deterministic
    if deterministic:
        deterministic_ops(device)
    outcomes: dict[int, Outcome] = {}
    position = {id(r): i for i, r in enumerate(runs)}
    groups = plan_groups(runs, batched=batched, batch_size=budget.batch_size)
    # the next group's data is generated on a host thread while this group trains
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = first_data or (pool.submit(group_data, groups[0], budget) if groups else None)
        for n, group in enumerate(groups, 1):
            t0 = time.monotonic()
            data = pending.result()
            execution.timings["data_wait_s"] += time.monotonic() - t0     # data not ready when training could go
            pending = pool.submit(group_data, groups[n], budget) if n < len(groups) else None
            log(f"group {n}/{len(groups)}: {len(group)} member(s), length {group_key(group[0])[1]}: "
                + "; ".join(r.label for r in group))
            trainer = GroupTrainer(group, model, core, budget, device, execution, log=log, data=data)
            for o in trainer.fit():
                outcomes[position[id(o.run)]] = o
            execution.groups.append({"members": len(group), "length": group_key(group[0])[1],
                                     "train_examples": group[0].setting.num_train_examples,
                                     "seconds": round(time.monotonic() - t0, 3)})
            del trainer, data
    return [outcomes[i] for i in range(len(runs))], execution
