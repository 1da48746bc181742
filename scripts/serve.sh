#!/usr/bin/env bash
# Set up and run lstm-serve with its embedded defaults: in-process sessions, models under var/models,
# http://127.0.0.1:8000 (override with HOST, PORT, MODEL_DIR, SESSION_STORE, API_KEY, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m service
