#!/usr/bin/env bash
# The GPU measurements, one stage per argument, run from the repo root on the device machine:
#   bench/gpu_arena.sh env smoke step screen
# Logs and result JSON go to $OUT (default /tmp/archer-out); each stage prints a short table last.
# Stages: env (GPU, torch), smoke (worker end to end on CUDA), step (ms/step: eager vs graphs vs members),
# screen (delta_net baseline, one seed; SCREEN_LIMIT seconds at most), screen-file (the same for the
# file CANDIDATE names, output screen_<name>.json), noise (PROFILE's TASKS over SEEDS for each of the
# CANDIDATES files: is a difference beyond the seed-to-seed spread?), cap (screen's CAP_TASKS, narrowed to the
# task/setting list CAP_ONLY, with runs capped at MAX_STEPS instead of 1,000: is a score limited by the cap?), rest (the screen settings listed
# in bench/screen_rest.txt), quick3 (quick, 3 seeds, the three
# models), eval (bench_eval.py: one quick evaluation eager vs graphs), throughput (bench_throughput.py).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/archer-out}
mkdir -p "$OUT"
worker() { python3 -m sandbox eval --candidate sandbox/naive.py --device cuda "$@"; }
# screen_eval FILE NAME: FILE on `screen`, at most SCREEN_LIMIT seconds, into $OUT/NAME.json and NAME.log
screen_eval() {
  /usr/bin/time -f "screen wall %e s" timeout "${SCREEN_LIMIT:-3000}" \
    python3 -m sandbox eval --candidate "$1" --device cuda --profile screen --out "$OUT/$2.json" > "$OUT/$2.log" 2>&1
  tail -1 "$OUT/$2.log"; python3 bench/summarize.py "$OUT/$2.json"
}
for stage in "$@"; do
  echo "=== $stage"
  case $stage in
    env) nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
         python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)";;
    smoke) worker --profile smoke --out "$OUT/smoke.json" > "$OUT/smoke.log" 2>&1
           python3 bench/summarize.py "$OUT/smoke.json";;
    step) python3 bench/bench_step.py --out "$OUT/step.json";;
    core) python3 bench/bench_fuse.py --profile --variants plain --configs "CR L=1024 G=4";;
    screen) screen_eval sandbox/naive.py screen
            python3 bench/pick_quick.py "$OUT/screen.json" > "$OUT/pick_quick.txt"; grep -- "->" "$OUT/pick_quick.txt";;
    screen-file) f=${CANDIDATE:?set CANDIDATE to a naive.py file}; screen_eval "$f" "screen_$(basename "$f" .py)";;
    noise) for f in ${CANDIDATES:-sandbox/naive.py}; do n=$(basename "$f" .py)
              timeout "${NOISE_LIMIT:-300}" python3 -m sandbox eval --candidate "$f" --device cuda \
                --profile "${PROFILE:-screen}" --tasks "${TASKS:-memorize}" --seeds "${SEEDS:-1,2,3}" \
                --out "$OUT/noise_$n.json" > "$OUT/noise_$n.log" 2>&1
              python3 bench/summarize.py "$OUT/noise_$n.json"
            done;;
    quick3) for m in delta_net gated_delta_net transformer; do
              timeout "${QUICK_LIMIT:-3000}" python3 -m sandbox eval --candidate sandbox/naive.py --device cuda --profile quick --model "$m" --seeds 0,1,2 --out "$OUT/quick_$m.json" > "$OUT/quick_$m.log" 2>&1
            done
            python3 bench/summarize.py "$OUT"/quick_*.json;;
    cap) timeout "${CAP_LIMIT:-540}" python3 -m sandbox eval --candidate sandbox/naive.py --device cuda --profile screen \
           --tasks "${CAP_TASKS:-compress,selective_copy}" ${CAP_ONLY:+--only "$CAP_ONLY"} --max-steps "${MAX_STEPS:-4000}" \
           --out "$OUT/cap.json" > "$OUT/cap.log" 2>&1
         python3 bench/summarize.py "$OUT/cap.json";;
    rest) timeout "${REST_LIMIT:-3000}" python3 -m sandbox eval --candidate sandbox/naive.py --device cuda --profile screen \
            --only "$(cat bench/screen_rest.txt)" --out "$OUT/screen_rest.json" > "$OUT/screen_rest.log" 2>&1
          python3 bench/summarize.py "$OUT/screen_rest.json";;
    eval) timeout "${EVAL_LIMIT:-3000}" python3 bench/bench_eval.py ${EVAL_MODES:+--modes "$EVAL_MODES"} --out "$OUT/bench_eval.json" 2>&1 | grep -v "^{";;
    throughput) python3 bench/bench_throughput.py --out "$OUT/bench_throughput.json";;
    *) echo "unknown stage $stage"; exit 2;;
  esac
done
