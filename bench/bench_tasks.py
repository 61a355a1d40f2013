"""Time the generation of every MAD setting (train + valid + test), as the `screen` profile does.

Run: .venv/bin/python bench/bench_tasks.py [--seed 0] [--valid 1280]
Prints wall-clock and CPU seconds per setting and the totals (CPU time is the steadier figure
on a shared machine); the figures go in reports, not in tests.
"""
import argparse
import time

from sandbox.tasks import generate, mad_settings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--valid", type=int, default=1280, help="validation examples per setting")
    args = parser.parse_args()
    total_wall = total_cpu = 0.0
    print(f"{'task':16s} {'setting':26s} {'wall s':>8s} {'cpu s':>8s}")
    for setting in mad_settings():
        wall, cpu = time.perf_counter(), time.process_time()
        generate(setting, "train", setting.num_train_examples, args.seed)
        generate(setting, "valid", args.valid, args.seed)
        generate(setting, "test", setting.num_test_examples, args.seed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        print(f"{setting.task:16s} {setting.name:26s} {wall:8.3f} {cpu:8.3f}")
    print(f"{'total':16s} {str(len(mad_settings())) + ' settings':26s} {total_wall:8.3f} {total_cpu:8.3f}")


if __name__ == "__main__":
    main()
