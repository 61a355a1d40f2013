"""MAD's accuracy: macro-averaged over classes, over a whole evaluation set, for G members at once.

Counts are accumulated on the device batch by batch (no host synchronisation), then reduced with
torchmetrics' MulticlassAccuracy(average="macro") semantics: per-class recall TP/(TP+FN), averaged
over the classes that occur as a target or as a prediction. Tested by tests/test_train.py.
"""
from __future__ import annotations

import torch

IGNORE = -100


def new_counts(G: int, V: int, device) -> torch.Tensor:
    """Zeroed counters [3, G, V]: true positives, target occurrences, prediction occurrences."""
    return torch.zeros(3, G, V, dtype=torch.float64, device=device)


def add_counts(counts: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor) -> None:
    """Accumulate one batch into counts, in place. preds, targets: [G, ...]; targets == -100 are skipped."""
    _, G, V = counts.shape
    preds, targets = preds.reshape(G, -1), targets.reshape(G, -1)
    scored = (targets != IGNORE).to(torch.float64)
    offset = (torch.arange(G, device=targets.device) * V)[:, None]
    t = targets.clamp(min=0) + offset
    pr = preds.clamp(min=0, max=V - 1) + offset
    hit = (preds == targets).to(torch.float64) * scored
    flat = counts.view(3, G * V)
    flat[0].index_add_(0, t.reshape(-1), hit.reshape(-1))
    flat[1].index_add_(0, t.reshape(-1), scored.reshape(-1))
    flat[2].index_add_(0, pr.reshape(-1), scored.reshape(-1))


def macro_accuracy(counts: torch.Tensor) -> torch.Tensor:
    """[G] mean over present classes of TP / (TP + FN); a class seen only as a prediction scores 0."""
    tp, tgt, pred = counts
    present = ((tgt + pred) > 0).to(torch.float64)
    recall = torch.where(tgt > 0, tp / tgt.clamp(min=1), torch.zeros_like(tp))
    return (recall * present).sum(-1) / present.sum(-1).clamp(min=1)


def token_accuracy(counts: torch.Tensor) -> torch.Tensor:
    """[G] plain accuracy over scored positions."""
    tp, tgt, _ = counts
    return tp.sum(-1) / tgt.sum(-1).clamp(min=1)
