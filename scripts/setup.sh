#!/usr/bin/env bash
# Create .venv and install lstm-serve into it (with extras "$1", e.g. "test"); reruns only when
# pyproject.toml or constraints.txt changed, so repeated serve/test commands start at once.
# constraints.txt pins every transitive dependency to the versions the tests last passed with.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e "$spec"
  touch "$stamp"
fi
