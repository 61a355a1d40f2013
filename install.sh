#!/usr/bin/env bash
# Sets up archer in ./.venv: keeps a torch the machine already has (CUDA builds included),
# otherwise installs the CPU build of torch where there is no NVIDIA GPU, then archer itself.
#   ARCHER_TORCH      torch requirement to install when none is present (default torch==2.13.0)
#   ARCHER_TORCH_INDEX  extra index for it, e.g. https://download.pytorch.org/whl/cpu on a CPU-only
#                     machine whose pip would otherwise take PyPI's CUDA build
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    # system site-packages: a torch installed by the cluster's image stays visible
    "$PY" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
if "$VPY" -c "import torch" 2>/dev/null; then
    echo "install: keeping torch $("$VPY" -c 'import torch; print(torch.__version__)')"
else
    spec=${ARCHER_TORCH:-torch==2.13.0}
    extra=()
    if [ -n "${ARCHER_TORCH_INDEX:-}" ]; then extra=(--extra-index-url "$ARCHER_TORCH_INDEX"); fi
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "install: NVIDIA GPU found, installing $spec (CUDA build)"
    else
        echo "install: no GPU found, installing $spec (CPU build)"
    fi
    "$VPY" -m pip install -q "${extra[@]}" "$spec"
fi
"$VPY" -m pip install -q -e ".[dev]"
echo "install: done; run .venv/bin/archer --help"
