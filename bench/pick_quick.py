"""Pick quick's harder setting per task from a `screen` result: the lowest-scoring non-baseline setting
still above chance (1 / number of target classes), and print the table it was chosen from.

`python3 bench/pick_quick.py screen.json` (torch-free). Chance per task: recall tasks score values only
(Context/Noisy: V/2 values, Fuzzy: (V-1)/2 value tokens), Selective Copy V-2 data tokens, Compress V
tokens, Memorize (V-1)/2 values.
"""
from __future__ import annotations

import json
import re
import sys

BASE_V = {"compress": 16, "context_recall": 16, "fuzzy_recall": 16, "memorize": 256, "noisy_recall": 32,
          "selective_copy": 16}


def chance(task: str, setting: str) -> float:
    m = re.search(r"vocab_size=(\d+)", setting)
    V = int(m.group(1)) if m else BASE_V[task]
    classes = {"compress": V, "context_recall": V // 2, "fuzzy_recall": (V - 1) // 2, "memorize": (V - 1) // 2,
               "noisy_recall": (V - 16) // 2, "selective_copy": V - 2}[task]
    return 1.0 / max(classes, 1)


def main() -> None:
    with open(sys.argv[1]) as f:
        r = json.load(f)
    by_task: dict[str, list] = {}
    for s in r["settings"]:
        by_task.setdefault(s["task"], []).append(s)
    for task, rows in sorted(by_task.items()):
        print(task)
        for s in sorted(rows, key=lambda s: s["accuracy"]):
            print(f"  {s['setting']:28} acc {s['accuracy']:.4f} tok {s['token_accuracy']:.4f} chance {chance(task, s['setting']):.4f}")
        ok = [s for s in rows if s["setting"] != "baseline" and s["accuracy"] > chance(task, s["setting"])]
        pick = min(ok, key=lambda s: s["accuracy"]) if ok else None
        print(f"  -> {pick['setting'] if pick else 'none'} ({pick['accuracy']:.4f})" if pick else "  -> none")


if __name__ == "__main__":
    main()
