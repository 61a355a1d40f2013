#!/usr/bin/env bash
# One device call for the lead's GPU checks, from the repo root on the GPU machine:
#   bench/gpu_lead.sh tests search     (resume: continue a workspace carried in as .devws/ws.tgz)
# tests:  the GPU-marked tests (corpus CUDA OOM and hung kernel, CUDA-graph training, GPU pinning)
# search: a mutate search on the quick profile from the baseline (SEARCH_BUDGET candidates, at most
#         SEARCH_LIMIT seconds), then its table. Needs the controller's wheels carried in .whl/.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/archer-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
archer() { python3 -c "from agent.cli import main; main()" "$@"; }
for stage in "$@"; do
  echo "=== $stage"
  case $stage in
    tests) git --version; python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_corpus.py tests/test_naive.py tests/test_model.py tests/test_kernels.py tests/test_worker.py \
             tests/test_executor.py tests/test_train.py tests/test_spares.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25;;
    search|resume) rm -rf /tmp/ws
            if [ "$stage" = resume ]; then tar xzf .devws/ws.tgz -C /tmp; else archer init /tmp/ws > /dev/null; fi
            timeout -s INT "${SEARCH_LIMIT:-420}" python3 -c "from agent.cli import main; main()" run /tmp/ws \
              --budget "${SEARCH_BUDGET:-20}" --profile quick --proposer mutate > "$OUT/search.log" 2>&1
            archer log /tmp/ws --plain | tee "$OUT/search_table.txt"
            tar czf "$OUT/ws.tgz" -C /tmp ws;;
    *) echo "unknown stage $stage"; exit 2;;
  esac
done
