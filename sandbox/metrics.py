"""MAD's accuracy: torchmetrics' macro accuracy per test batch of 128 examples, batch-size-weighted mean.

mad-lab logs MulticlassAccuracy(average="macro", ignore_index=-100) per batch of 128, so its epoch value is
the mean of per-batch macro accuracies weighted by batch size. Counts are accumulated on the device per
member, MAD batch and class (no host synchronisation), for G members at once. The whole-set macro accuracy
and plain token accuracy are kept beside it: over a whole split one stray prediction of a class that is
never a target costs a whole class (1.0 -> 0.889), where per batch it costs one batch of ten.
Tested by tests/test_train.py.
"""
from __future__ import annotations

import math

import torch

IGNORE = -100
MAD_BATCH = 128     # mad-lab's evaluation batch size: the unit its macro accuracy is computed over


def new_counts(G: int, V: int, device, n_examples: int, mad_batch: int = MAD_BATCH) -> torch.Tensor:
    """Zeroed counters [3, G, NB, V]: true positives, target and prediction occurrences per member, per MAD
    batch of `mad_batch` consecutive examples (NB = ceil(n_examples / mad_batch)) and per class."""
    return torch.zeros(3, G, max(1, math.ceil(n_examples / mad_batch)), V, dtype=torch.float64, device=device)


def add_counts(counts: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor, start: torch.Tensor | int = 0,
               mad_batch: int = MAD_BATCH) -> None:
    """Accumulate one evaluation batch into counts, in place. preds, targets: [G, E, ...] (member, example,
    positions); targets == -100 are skipped. Example e belongs to MAD batch (start + e) // mad_batch; start
    may be a device tensor (read by a captured CUDA graph) or an int."""
    _, G, NB, V = counts.shape
    E, dev = targets.shape[1], targets.device
    preds, targets = preds.reshape(G, E, -1), targets.reshape(G, E, -1)
    # padding examples past the end of the split carry only ignored targets; clamping keeps them in range
    batch = ((start + torch.arange(E, device=dev)) // mad_batch).clamp(max=NB - 1)
    offset = ((torch.arange(G, device=dev)[:, None] * NB + batch) * V)[..., None]
    scored = (targets != IGNORE).to(torch.float64)
    t = targets.clamp(min=0) + offset
    pr = preds.clamp(min=0, max=V - 1) + offset
    hit = (preds == targets).to(torch.float64) * scored
    flat = counts.view(3, G * NB * V)
    flat[0].index_add_(0, t.reshape(-1), hit.reshape(-1))
    flat[1].index_add_(0, t.reshape(-1), scored.reshape(-1))
    flat[2].index_add_(0, pr.reshape(-1), scored.reshape(-1))


def _macro(tp: torch.Tensor, tgt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Mean over the last (class) axis of TP / (TP + FN) over classes seen as target or prediction; a class
    seen only as a prediction scores 0 (torchmetrics gives weight 0 only where TP + FP + FN == 0)."""
    present = ((tgt + pred) > 0).to(torch.float64)
    recall = torch.where(tgt > 0, tp / tgt.clamp(min=1), torch.zeros_like(tp))
    return (recall * present).sum(-1) / present.sum(-1).clamp(min=1)


def macro_accuracy(counts: torch.Tensor, n_examples: int, mad_batch: int = MAD_BATCH) -> torch.Tensor:
    """[G] MAD's score: macro accuracy per MAD batch, averaged over batches weighted by their number of
    examples (the last batch may be smaller; a batch with no scored position has weight 0)."""
    tp, tgt, pred = counts
    NB = counts.shape[2]
    first = mad_batch * torch.arange(NB, dtype=torch.float64, device=counts.device)
    size = (n_examples - first).clamp(min=0, max=mad_batch)
    weight = size * (tgt.sum(-1) > 0)
    return (_macro(tp, tgt, pred) * weight).sum(-1) / weight.sum(-1).clamp(min=1)


def whole_set_macro_accuracy(counts: torch.Tensor) -> torch.Tensor:
    """[G] macro accuracy over the whole split at once (batches summed before averaging over classes)."""
    return _macro(*counts.sum(2))


def token_accuracy(counts: torch.Tensor) -> torch.Tensor:
    """[G] plain accuracy over scored positions."""
    tp, tgt, _ = counts.sum(2)
    return tp.sum(-1) / tgt.sum(-1).clamp(min=1)
