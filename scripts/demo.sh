#!/usr/bin/env bash
# Set up (if needed) and run the main job: `securetrain demo` on the embedded digits data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/securetrain demo --out "${1:-demo-out}"
