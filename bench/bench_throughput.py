"""Candidates per GPU-hour: plain eager one-run-at-a-time against batched members with CUDA graphs.

`python3 bench/bench_throughput.py [--profile quick] [--seeds 0]` on a GPU machine, from the repo root:
the same candidate (sandbox/naive.py) evaluated both ways in real worker processes, one after the
other on the same GPU (bench/bench_eval.py does the timing); prints both rates and their ratio.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval import main  # noqa: E402

if __name__ == "__main__":
    main(default_modes="eager-seq,graphs-batched")
