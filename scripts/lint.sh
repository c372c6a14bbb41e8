#!/usr/bin/env bash
# Lint, format check and strict type check (configured in pyproject.toml); part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "lint: ruff check" >&2
.venv/bin/ruff check securetrain attacks defenses tests examples benchmarks
echo "lint: ruff format --check" >&2
.venv/bin/ruff format --check securetrain attacks defenses tests examples benchmarks
echo "lint: mypy --strict (securetrain, attacks, defenses)" >&2
.venv/bin/mypy
