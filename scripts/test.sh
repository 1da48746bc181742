#!/usr/bin/env bash
# Set up and run every test. Extra arguments go to pytest.
#
# Three system programs are needed: redis-server (the Redis session store and job queue are tested against a
# real server; one is started on 127.0.0.1:6379 when none answers there), chromium (the HTML page is
# rendered headless) and haproxy (the compose front door, deploy/compose/haproxy.cfg, is run before real
# replicas). When one is missing it is installed from Debian's packages with apt-get, after saying so; when
# all are present nothing is installed. kubectl, when present, renders the Kubernetes
# manifests (the test says it skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test

install_system_package() {  # <command it provides> <Debian package> <what it is for>
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "test.sh: $1 is not installed ($3); installing the Debian package $2 with apt-get." >&2
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: cannot install it here (needs root and apt-get): install $2 yourself and rerun." >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

redis_up() { .venv/bin/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_timeout=1).ping()" 2>/dev/null; }
if ! redis_up; then
  install_system_package redis-server redis-server "Redis tests need a real server"
  echo "test.sh: starting redis-server on 127.0.0.1:6379 (nothing answered there)." >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi
# Fault tests start their own redis-server on a free port, even when another Redis answers on 6379.
install_system_package redis-server redis-server "fault tests start their own Redis"
install_system_package chromium chromium "tests/test_ui.py renders the page headless"
install_system_package haproxy haproxy "tests/e2e/test_front_door.py runs the compose front door"

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
