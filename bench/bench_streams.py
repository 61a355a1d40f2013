"""Would two shape groups of one evaluation train faster side by side on two CUDA streams than in turn?

`python3 bench/bench_streams.py [--pairs "SC L=256 G=2+CR L=128 G=6,..."] [--steps 50]` on a GPU machine.
Each group's real training step (bench_fuse.py's, the model's fused kernels) is captured in its own CUDA
graph; the pair is timed replayed one group after the other, then with each group on its own stream, issued
alternately. Prints both times and their ratio: above 1 means the GPU has room that one group leaves idle.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_fuse import STEPS, capture, cores, trainer, variant_body  # noqa: E402


def timed(fn) -> float:
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="SC L=256 G=2+CR L=128 G=6,CR L=128 G=6+CR L=128 G=6,Compress G=2+SC L=256 G=2")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--candidate", default="sandbox/naive.py")
    args = ap.parse_args()
    torch.set_float32_matmul_precision("high")
    core = cores(Path(args.candidate).read_text())["solve"]
    by_label = {s[0]: s for s in STEPS}
    print(f"{'pair':36} {'in turn ms':>10} {'side by side ms':>15} {'ratio':>6}")
    for pair in args.pairs.split(","):
        streams = [torch.cuda.Stream(), torch.cuda.Stream()]
        graphs, keep = [], []
        for label, stream in zip(pair.split("+"), streams):
            _, task, changes, members = by_label[label]
            t = trainer(task, changes, members, core)
            body, _ = variant_body(t, "plain")
            graphs.append(capture(body, stream))
            torch.cuda.synchronize()
            keep.append(t)
        n = args.steps

        def in_turn():
            for g in graphs:
                for _ in range(n):
                    g.replay()

        def side_by_side():
            for s in streams:
                s.wait_stream(torch.cuda.current_stream())
            for _ in range(n):
                for g, s in zip(graphs, streams):
                    with torch.cuda.stream(s):
                        g.replay()
            for s in streams:
                torch.cuda.current_stream().wait_stream(s)

        timed(in_turn)
        a, b = timed(in_turn), timed(side_by_side)
        a2, b2 = timed(in_turn), timed(side_by_side)
        a, b = min(a, a2), min(b, b2)
        print(f"{pair:36} {a:10.1f} {b:15.1f} {a / b:6.2f}", flush=True)
        del graphs, keep
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
