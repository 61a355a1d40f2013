"""Builds the review site of a synthetic 5,000-candidate search and prints build time and total size.

The candidates are random but shaped like a real search: lineages branching from the best few,
per-task scores near the calibration targets with seed noise, failures, reverts, two-language
reports of realistic length, and code with a diff against the parent.
    .venv/bin/python bench/bench_site.py [--candidates 5000] [--out /tmp/archer-bench-site]
"""
from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.history import unified_diff  # noqa: E402
from agent.records import TASKS, Candidate, CheckFinding, Score, Usage  # noqa: E402
from agent.site import SiteEntry, build_site  # noqa: E402

BASELINE = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()
TARGET = {"compress": 0.45, "context_recall": 0.99, "fuzzy_recall": 0.25, "memorize": 0.40,
          "noisy_recall": 0.99, "selective_copy": 0.96}
EN = ("The parent's error term is unbounded, so one large update can overwrite many earlier "
      "associations in the state S. Bounding it with tanh keeps the direction of the correction. ")
ZH = "父候选的误差项没有上界，一次大的更新就可能覆盖状态 S 中许多先前的关联。用 tanh 限制它可以保留修正的方向。"


def _report(c: Candidate) -> str:
    head = f"# {c.id:04d} {c.name}\n\n"
    body = "".join(f"## Section {i}\n\n{EN * 4}\n\n" for i in range(6))
    zh = "".join(f"## 第 {i} 节\n\n{ZH * 3}\n\n" for i in range(6))
    table = "| task | predicted | measured |\n|---|---|---|\n" + "".join(
        f"| {t} | {c.predicted.get(t, 0):.3f} | {c.scores[t].mean if t in c.scores else 0:.3f} |\n" for t in TASKS)
    return head + body + table + f"\n# 中文：{c.id:04d} {c.name}\n\n" + zh + table


def synthetic_entries(n: int, seed: int = 0) -> list[SiteEntry]:
    rng = random.Random(seed)
    entries: list[SiteEntry] = []
    quality: dict[int, float] = {}
    codes: dict[int, str] = {}
    for i in range(n):
        if i == 0:
            parent, name, proposer, model = None, "baseline", "baseline", "delta_net"
        elif i in (1, 2):
            parent, name, proposer = 0, ("gated_delta_net", "transformer")[i - 1], "reference"
            model = name
        else:
            pool = sorted(quality, key=quality.get, reverse=True)[:8] if quality and rng.random() < 0.8 \
                else list(quality) or [0]
            parent = rng.choice(pool)
            name, proposer, model = f"variant_{i}_{rng.choice(['tanh', 'decay', 'norm', 'gate'])}", \
                rng.choice(["mutate", "llm:gpt-4o-mini"]), "delta_net"
        status = "ok" if i < 3 or rng.random() < 0.85 else rng.choice(["rejected", "invalid", "nan", "timeout"])
        q = quality.get(parent, 0.0) + rng.gauss(-0.01, 0.02) if parent is not None else 0.0
        seeds = [0, 1, 2]
        scores, predicted = {}, {}
        if status == "ok":
            for t in TASKS:
                gain = 0.15 * math.tanh(q / 0.15)          # gains saturate, as they do in a real search
                per = [min(1.0, max(0.0, TARGET[t] + gain + rng.gauss(0, 0.02))) for _ in seeds]
                m = sum(per) / len(per)
                scores[t] = Score(mean=m, std=(sum((p - m) ** 2 for p in per) / 2) ** 0.5, per_seed=per)
                predicted[t] = min(1.0, max(0.0, m + rng.gauss(0, 0.05)))
            quality[i] = q
        code = BASELINE if parent is None else codes[parent] + f"\n# change {i}: scale the error by {rng.random():.3f}\n"
        codes[i] = code
        mean = sum(s.mean for s in scores.values()) / len(TASKS) if scores else None
        c = Candidate(
            id=i, name=name, parent=parent, proposer=proposer, status=status, model=model, profile="screen",
            seeds=seeds, scores=scores, mean=mean, std=rng.random() * 0.01 if scores else 0.0, predicted=predicted,
            checks=[CheckFinding(name=k, passed=True, seconds=0.1) for k in ("shapes", "causality", "gradients")],
            timings={"total_s": rng.uniform(600, 3600)} if status == "ok" else {"total_s": rng.uniform(1, 60)},
            usage=Usage(calls=1, prompt_tokens=12000, completion_tokens=3000, cost_usd=0.02)
            if proposer.startswith("llm") else Usage(),
            log_tail="step 400 loss 0.12 acc 0.98\n" * 20, mutations=["tanh_on_error"] if proposer == "mutate" else [])
        diff = "" if parent is None else unified_diff(codes[parent], code, "a/naive.py", "b/naive.py")
        reverted = "did not reproduce with new seeds" if status == "ok" and i > 3 and rng.random() < 0.01 else None
        entries.append(SiteEntry(c, code, _report(c), diff, reverted))
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=None, help="site folder (default: a temporary one, removed)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    entries = synthetic_entries(args.candidates)
    made = time.perf_counter() - t0
    out = args.out or Path(tempfile.mkdtemp(prefix="archer-bench-site-")) / "site"
    try:
        first = build_site(entries, out, workspace="synthetic")
        again = build_site(entries, out, workspace="synthetic")
        sizes = {name: (out / name).stat().st_size for name in ("index.html", "leaderboard.html", "plots.html",
                                                                  "lineage.html")}
        pages = sorted((out / "c").iterdir(), key=lambda p: p.stat().st_size)
        print(f"candidates: {len(entries)} (synthetic data made in {made:.1f} s)")
        print(f"build: {first.seconds:.1f} s, rebuild (unchanged pages skipped): {again.seconds:.1f} s")
        print(f"site: {first.pages} pages, {first.bytes / 1e6:.1f} MB in all")
        print("pages: " + ", ".join(f"{k} {v / 1e3:.0f} kB" for k, v in sizes.items()))
        print(f"candidate pages: median {pages[len(pages) // 2].stat().st_size / 1e3:.0f} kB, "
              f"largest {pages[-1].stat().st_size / 1e3:.0f} kB")
    finally:
        if args.out is None:
            shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
