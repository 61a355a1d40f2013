"""Timings of the history at scale: builds a workspace of N candidates (default 5,000) and prints how long
`archer log`, regenerating results.csv, and recording one more candidate take (goal: each under 2 s).

Run: .venv/bin/python bench/bench_history.py [--n 5000] [--keep DIR]. The workspace is built directly (files
written, then one bulk commit) so that building takes a minute, not hours; the timed operations are real.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import table  # noqa: E402
from agent.history import CANDIDATES, RESULTS, Workspace, folder_name, unified_diff  # noqa: E402
from agent.records import TASKS, Candidate, Score, SettingScore  # noqa: E402


def synthetic(id: int, parent: int, rng: random.Random) -> Candidate:
    """A candidate.json of realistic size: 66 settings of one seed, scores, checks, a log tail."""
    scores = {t: Score(mean=rng.random(), std=0.0, per_seed=[rng.random()]) for t in TASKS}
    settings = [SettingScore(task=TASKS[i % 6], setting=f"setting_{i}", seed=0, lr=1e-3, weight_decay=0.0,
                             accuracy=rng.random(), token_accuracy=rng.random(), steps=2000, best_step=1500,
                             seconds=30.0) for i in range(66)]
    status = "ok" if rng.random() < 0.8 else rng.choice(["rejected", "crashed", "timeout", "nan"])
    return Candidate(id=id, name=f"cand_{id:05d}_{rng.choice(['tanh', 'decay', 'gate', 'norm'])}", parent=parent,
                     proposer=rng.choice(["mutate", "llm:gpt-4o"]), status=status, profile="screen", seeds=[0],
                     scores=scores if status == "ok" else {}, settings=settings if status == "ok" else [],
                     mean=sum(s.mean for s in scores.values()) / 6 if status == "ok" else None,
                     log_tail="step 2000 loss 0.01\n" * 40)


def build(path: Path, n: int) -> Workspace:
    rng = random.Random(0)
    ws = Workspace.init(path)
    base_code = ws.code(0)
    rows = dict(ws._load_rows())
    for i in range(1, n):
        cand = synthetic(i, rng.randrange(i), rng)
        code = base_code.replace("chunk_size=32", f"chunk_size=32  # variant {i}")
        folder = ws.path / CANDIDATES / folder_name(i, cand.name)
        folder.mkdir()
        (folder / "naive.py").write_text(code)
        (folder / "candidate.json").write_text(cand.model_dump_json(indent=1) + "\n")
        (folder / "report.md").write_text(f"# {i:04d} {cand.name}\n\n## English\n\n...\n\n## 中文\n\n...\n" * 20)
        (folder / "diff.patch").write_text(unified_diff(base_code, code, "a/naive.py", "b/naive.py"))
        rows[i] = table.row_of(cand)
    (ws.path / RESULTS).write_text(table.to_csv(table.frame_of(list(rows.values()))))
    ws.repo.git.add("-A", "--", CANDIDATES, RESULTS)
    ws.repo.git.commit("-q", "-m", f"bench: {n - 1} synthetic candidates")
    return ws


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (less sensitive than wall time to a busy machine)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(label: str, fn) -> float:
    start, cpu = time.perf_counter(), cpu_seconds()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<58} {seconds:6.2f} s wall {cpu_seconds() - cpu:6.2f} s cpu", flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="candidates in the workspace, baseline included")
    ap.add_argument("--keep", type=Path, default=None, help="build here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="archer-bench-")) / "ws"
    try:
        t0 = time.perf_counter()
        build(root, args.n)
        print(f"built {args.n} candidates in {time.perf_counter() - t0:.0f} s at {root}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        archer = [sys.executable, "-c", "from agent.cli import main; main()"]
        with open("/dev/null", "w") as sink:
            timed("archer log (all rows, new process, imports included)",
                  lambda: subprocess.run([*archer, "log", str(root)], cwd=ROOT, stdout=sink, check=True))
            timed("archer status (new process)",
                  lambda: subprocess.run([*archer, "status", str(root)], cwd=ROOT, stdout=sink, check=True))
            timed("archer log --sort mean -n 20 (new process)",
                  lambda: subprocess.run([*archer, "log", str(root), "--sort", "mean", "-n", "20"], cwd=ROOT,
                                         stdout=sink, check=True))
        ws = None

        def reopen():
            nonlocal ws
            ws = Workspace.open(root)
        timed("Workspace.open (consistency check and repair scan)", reopen)
        timed("results.csv regeneration (from the index)", ws._write_results)
        rng = random.Random(1)
        cand = synthetic(ws.next_id(), 3, rng)
        timed("record one more candidate (files, csv, git add, git commit)",
              lambda: ws.record(cand, ws.code(3) + "# one more\n", "# report\n"))
        timed("records(): parse every candidate.json (first call)", ws.records)
        timed("records(): again (cached)", ws.records)
        timed("results.csv full rebuild from every candidate.json",
              lambda: table.to_csv(table.results_frame(Workspace.open(root).records())))
    finally:
        if args.keep is None:
            shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
