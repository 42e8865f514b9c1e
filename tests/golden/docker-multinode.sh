#!/bin/bash
# Job script for asset raw/numbers
# Cluster profile: docker (clusters/docker.yaml)

# Local Slurm test cluster (127.0.0.1:2222)
#
# Directive <- the setting it comes from
#   --job-name=raw__numbers <- asset raw/numbers
#   --output=slurm-%j.out <- job directory layout
#   --error=slurm-%j.err <- job directory layout
#   --open-mode=append <- job directory layout (a requeued job adds to its output instead of erasing it)
#   --partition=cpu <- clusters/docker.yaml:27 slurm.partitions.cpu.partition
#   --qos=normal <- clusters/docker.yaml:28 slurm.partitions.cpu.qos
#   --account=hpc-test <- clusters/docker.yaml:16 slurm.account
#   --nodes=2 <- resources.nodes
#   --ntasks=4 <- resources.ntasks
#   --cpus-per-task=1 <- resources.cpus_per_task
#   --mem=1G <- resources.mem
#   --time=00:20:00 <- resources.time
#SBATCH --job-name=raw__numbers
#SBATCH --output=slurm-%j.out
#SBATCH --error=slurm-%j.err
#SBATCH --open-mode=append
#SBATCH --partition=cpu
#SBATCH --qos=normal
#SBATCH --account=hpc-test
#SBATCH --nodes=2
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:20:00

set -euo pipefail
# Job directories and everything the workload writes stay private to the user.
umask 077
# A requeued job runs this script again in the same directory, appending to its output files:
# mark where each execution starts, and let no exit code of an earlier one stand.
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  echo "[hpc] job ${SLURM_JOB_ID} requeued: execution $((SLURM_RESTART_COUNT + 1)) starts on $(hostname)"
  echo "[hpc] job ${SLURM_JOB_ID} requeued: execution $((SLURM_RESTART_COUNT + 1)) starts on $(hostname)" >&2
fi
rm -f .hpc-exit-code

# Batch shells are not login shells: make sure the module command exists. Site scripts are not
# written for set -u, so it is off while they run.
set +u
command -v module >/dev/null 2>&1 || source /etc/profile
module purge
set -u

export HPC_DATA_DIR="${HOME}"/dagster-hpc/data
# The job directory holds hpc_runtime, the helpers workloads import.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=2
# Passed from the orchestrator's environment at run time, never written here: HF_TOKEN

set +e
srun python3 -u workloads/draw_numbers.py --count 100
status=$?
set -e
# The exit code survives even when accounting is unavailable.
echo "$status" > .hpc-exit-code

# On a line of its own, even after a last line of the workload's that had no newline.
[ -z "$(tail -c 1 "slurm-${SLURM_JOB_ID:-}.err" 2>/dev/null)" ] || echo >&2
echo "job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?} finished with exit code ${status}" >&2
exit "$status"
