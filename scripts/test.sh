#!/usr/bin/env bash
# Set up (if needed), lint and type-check, then run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh
# two worker processes (pytest-xdist): the suite takes about 5 minutes on 2 cores instead of 9
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 "$@"
