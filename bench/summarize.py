"""Print a worker result JSON as a short table (torch-free, so it runs on the GPU machine too).

`python3 bench/summarize.py result.json [more.json ...]`: status, per-task mean ± std, the six-task
mean, timings and execution mode of each file; with --settings, every setting's score as well.
"""
from __future__ import annotations

import argparse
import json

TASKS = ("compress", "context_recall", "fuzzy_recall", "memorize", "noisy_recall", "selective_copy")
SHORT = {"compress": "Compress", "context_recall": "CtxRecall", "fuzzy_recall": "Fuzzy", "memorize": "Memorize",
         "noisy_recall": "Noisy", "selective_copy": "SelCopy"}


def line(path: str, r: dict) -> str:
    if r["status"] != "ok":
        return f"{path}: {r['status']}: {r['reason']}: {r['message']}"
    cells = [f"{SHORT[t]} {r['scores'][t]['mean']:.3f}±{r['scores'][t]['std']:.3f}" for t in TASKS if t in r["scores"]]
    ex, tm = r["execution"], r["timings"]
    return (f"{path}: {r['model']} {r['profile']} seeds={r['seeds']} | " + " | ".join(cells)
            + f" | mean {r['mean']:.3f}±{r['std']:.3f} | total {tm.get('total_s', 0):.1f}s "
            f"(train {tm.get('train_s', 0):.1f}, eval {tm.get('eval_s', 0):.1f}, checks {tm.get('checks_s', 0):.1f}, "
            f"capture {tm.get('capture_s', 0):.1f}) | {ex.get('mode')} graphs={ex.get('cuda_graphs')} "
            f"groups={len(ex.get('groups', []))} {ex.get('fallback_reason', '')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--settings", action="store_true", help="also list every setting's score")
    args = ap.parse_args()
    for path in args.files:
        with open(path) as f:
            r = json.load(f)
        print(line(path, r))
        if args.settings:
            for s in r.get("settings", []):
                print(f"  {s['task']:15} {s['setting']:28} seed {s['seed']} lr {s['lr']:g} wd {s['weight_decay']:g}: "
                      f"acc {s['accuracy']:.4f} tok {s['token_accuracy']:.4f} val {s['valid_accuracy']:.4f} "
                      f"steps {s['best_step']}/{s['steps']} {s['seconds']:.1f}s")


if __name__ == "__main__":
    main()
