"""The named evaluation profiles, in one place: which MAD settings, which (lr, wd) grid, what budget.

A profile expands to runs (setting x seed x lr x wd); sandbox/train.py trains them and the worker
scores them. Tested by tests/test_train.py and tests/test_worker.py (smoke end to end).
"""
from __future__ import annotations

from dataclasses import dataclass

from sandbox import tasks
from sandbox.result import TASKS
from sandbox.train import Budget, Run


@dataclass(frozen=True)
class Profile:
    name: str
    purpose: str
    settings: tuple[tasks.Setting, ...]
    lrs: tuple[float, ...] = (1e-3,)
    weight_decays: tuple[float, ...] = (0.0,)
    max_epochs: int = 200
    max_steps: int | None = None      # cap on optimiser steps per run; None: MAD's 200 epochs
    patience: int = 20                # epochs without a validation gain before a run stops (mad-lab: 20)
    min_eval_steps: int = 0           # validate every epoch (0, MAD) or only after this many steps
    batch_size: int = 128
    eval_batch: int = 256
    valid_size: int = 1280
    test_size: int | None = None      # None: each setting's num_test_examples (1280 in MAD)
    device: str = "cuda"              # where it is meant to run (a hint; --device decides)
    seeds: tuple[int, ...] = (0,)     # default seeds

    def budget(self) -> Budget:
        return Budget(batch_size=self.batch_size, max_epochs=self.max_epochs, max_steps=self.max_steps,
                      patience=self.patience, min_eval_steps=self.min_eval_steps, valid_size=self.valid_size,
                      test_size=self.test_size, eval_batch=self.eval_batch)

    def runs(self, seeds) -> list[Run]:
        return [Run(s, int(seed), lr, wd) for s in self.settings for seed in seeds
                for lr in self.lrs for wd in self.weight_decays]


def _smoke_settings() -> tuple[tasks.Setting, ...]:
    b = tasks.baseline_setting
    small = dict(num_train_examples=512, num_test_examples=256)
    return (
        b("compress").replace(vocab_size=8, seq_len=8, **small),
        b("context_recall").replace(vocab_size=8, seq_len=32, **small),
        b("fuzzy_recall").replace(vocab_size=8, seq_len=32, k_motif_size=1, v_motif_size=2, **small),
        b("memorize").replace(vocab_size=32, seq_len=16, num_train_examples=256, num_test_examples=256),
        b("noisy_recall").replace(vocab_size=16, noise_vocab_size=8, seq_len=32, **small),
        b("selective_copy").replace(vocab_size=8, seq_len=32, num_tokens_to_copy=4, **small),
    )


# quick's harder setting per task, chosen from the delta_net baseline's `screen` run (H100, seed 0, 1,000-step
# cap; bench/results/screen_delta_net_h100.json, bench/pick_quick.py): the lowest-scoring setting still above
# chance, except where that score is an artefact of the whole-set macro accuracy (Context Recall
# seq_len=1024: 0.889 at 0.9997 token accuracy; Noisy Recall seq_len=512 and num_train_examples=1600: 0.888
# at 0.9994: one stray prediction of a key class among ~100k-600k scored tokens counts as one more class
# with recall 0). Measured whole-set macro accuracy (the score at the time) beside each.
QUICK_HARD = {
    "compress": ("vocab_size", 128),          # 0.067 (chance 1/128)
    "context_recall": ("vocab_size", 128),    # 0.978
    "fuzzy_recall": ("vocab_size", 32),       # 0.136 (chance 1/15; V=64, V=128 and N<=3200 scored below chance)
    "memorize": ("vocab_size", 8192),         # 0.006 (chance 1/4095)
    "noisy_recall": ("vocab_size", 144),      # 0.984
    "selective_copy": ("num_tokens_to_copy", 96),  # 0.272 (chance 1/14)
}


def _quick_settings() -> tuple[tasks.Setting, ...]:
    out = []
    for task in TASKS:
        base = tasks.baseline_setting(task)
        field, value = QUICK_HARD[task]
        out += [base, base.replace(**{field: value})]
    return tuple(out)


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        name="smoke",
        purpose="CPU, seconds a task: one small setting per task, steps capped. For tests and the offline "
                "demo; scores are above chance on the recall tasks, nothing more.",
        settings=_smoke_settings(), max_steps=48, patience=3, batch_size=32, eval_batch=256,
        valid_size=128, test_size=256, device="cpu"),
    Profile(
        name="quick",
        purpose="The cascade's first GPU stage: per task the baseline and its hardest still-learnable "
                "setting (QUICK_HARD), one (lr, wd), runs capped at 400 steps so a candidate costs under a "
                "minute per seed on an H100. Validated at most every 25 steps (Memorize's epochs are 2 steps).",
        settings=_quick_settings(), max_steps=400, min_eval_steps=25),
    Profile(
        name="screen",
        purpose="The default for GPU searches: all 66 MAD settings at lr 1e-3, wd 0 (1e-3 beat 5e-4 on "
                "Memorize in measurement). It spans the whole sweep because at the baseline settings alone "
                "DeltaNet scores about 1.0 on Memorize and the recall tasks (calibration.md), so a "
                "baseline-only profile cannot tell candidates apart. Runs are capped at 1,000 steps (MAD: "
                "up to 20,000): the baseline's step costs 18 ms per member at seq_len 1024 on an H100 (2.3 ms "
                "at 128), half of it the candidate's own arithmetic, so the whole profile takes about 3.5 "
                "minutes at this cap; `mad` keeps the full budget. Validated at most every 25 steps.",
        settings=tuple(tasks.mad_settings()), max_steps=1000, min_eval_steps=25),
    Profile(
        name="mad",
        purpose="The full MAD protocol, for verification and published tables: 66 settings x lr {1e-4, "
                "5e-4, 1e-3} x wd {0, 0.1}; per setting the run with the best VALIDATION accuracy is kept "
                "(mad-lab picks on test), per-task mean of those.",
        settings=tuple(tasks.mad_settings()), lrs=(1e-4, 5e-4, 1e-3), weight_decays=(0.0, 0.1)),
)}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]
