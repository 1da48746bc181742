#!/usr/bin/env bash
# Set up and run every test. Starts redis-server on 127.0.0.1:6379 when none answers there (the Redis
# session store is tested against a real server) and installs Chromium when missing (the HTML page is
# rendered headless). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test

redis_up() { .venv/bin/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_timeout=1).ping()" 2>/dev/null; }
if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi

# Headless Chromium renders the HTML page in tests/test_ui.py (required when CI is set).
if ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
