#!/usr/bin/env bash
# Container entry point: bring the test cluster up with the project's own script, stay in the
# foreground, and on `docker stop` stop the daemons cleanly (MariaDB and slurmctld keep their state
# in the volume). Run with `init: true`: tini is PID 1, reaps the daemons' orphans and forwards
# SIGTERM here.
set -euo pipefail
script=/opt/hpc-test-cluster/test-cluster.sh
ready=/run/hpc-test-cluster.ready
sleeper=

stop() {
  rm -f "$ready"
  bash "$script" down || true
  [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
  exit 0
}
trap stop TERM INT

rm -f "$ready"
bash "$script" up
touch "$ready"   # the compose healthcheck waits for this
# `wait` returns as soon as a trapped signal arrives, so `docker stop` does not wait for its timeout.
sleep infinity & sleeper=$!
wait "$sleeper"
