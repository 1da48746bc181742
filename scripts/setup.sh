#!/usr/bin/env bash
# Create .venv and install lstm-serve into it (with extras "$1", e.g. "test"); reruns only when
# pyproject.toml or constraints.txt changed, so repeated serve/test commands start at once.
# constraints.txt pins every transitive dependency to the versions the tests last passed with.
#
# The Python: $PYTHON if set, else the first of python3.11, python3.12, python3 that runs and is 3.11 or
# 3.12 (TensorFlow and the pins need one of these). None: stop at once and say what to install. A .venv made
# with another Python (or whose Python is gone) is rebuilt, never reused.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"

# "3.11" for a Python that runs, nothing for one that does not (a pyenv shim without that version fails here).
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
supported() { [ "$1" = "3.11" ] || [ "$1" = "3.12" ]; }

python=""
seen=()
for candidate in ${PYTHON:-} python3.11 python3.12 python3; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  version="$(version_of "$candidate")"
  seen+=("$candidate (${version:-does not run})")
  if supported "$version"; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup.sh: lstm-serve needs Python 3.11 or 3.12; found ${seen[*]:-no python3 at all}." >&2
  echo "Install one (Debian/Ubuntu: apt-get install python3.11 python3.11-venv; pyenv: pyenv install 3.11)" >&2
  echo "or point PYTHON at it: PYTHON=/path/to/python3.11 bash $0 ${extras}" >&2
  exit 1
fi

if [ -e .venv ]; then
  venv_version="$(version_of .venv/bin/python)"
  if ! supported "$venv_version"; then
    echo "setup.sh: .venv was made with ${venv_version:+Python }${venv_version:-a Python that no longer runs}; rebuilding it with $python ($(version_of "$python"))." >&2
    rm -rf .venv
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e "$spec"
  touch "$stamp"
fi
