#!/bin/bash
# Local run of asset raw/numbers: a subprocess of the Dagster step, no scheduler.
# Cluster profile: local (clusters/local.yaml)
# note: resources recorded, not enforced locally: nodes=1 ntasks=1 cpus_per_task=2 mem=2G time=00:30:00

set -euo pipefail
# Job directories and everything the workload writes stay private to the user.
umask 077

export HPC_DATA_DIR=<project>/.hpc/data
# The job directory holds hpc_runtime, the helpers workloads import.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=2
# Passed from the orchestrator's environment at run time, never written here: HF_TOKEN

set +e
<python> -u workloads/draw_numbers.py --count 100
status=$?
set -e
# The exit code survives even when accounting is unavailable.
echo "$status" > .hpc-exit-code

exit "$status"
