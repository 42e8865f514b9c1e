#!/bin/bash
# Job script for asset raw/numbers
# Cluster profile: vsc5 (clusters/vsc5.yaml)

# VSC-5, Vienna (AMD Zen3 CPU nodes, A100 and A40 GPU nodes)
#
# Directive <- the setting it comes from
#   --job-name=raw__numbers <- asset raw/numbers
#   --output=slurm-%j.out <- job directory layout
#   --error=slurm-%j.err <- job directory layout
#   --open-mode=append <- job directory layout (a requeued job adds to its output instead of erasing it)
#   --partition=zen3_0512 <- clusters/vsc5.yaml:27 slurm.partitions.cpu.partition
#   --qos=zen3_0512 <- clusters/vsc5.yaml:28 slurm.partitions.cpu.qos
#   --account=p71234 <- $VSC5_ACCOUNT (clusters/vsc5.yaml:15 slurm.account_env)
#   --nodes=2 <- resources.nodes
#   --ntasks=4 <- resources.ntasks
#   --cpus-per-task=1 <- resources.cpus_per_task
#   --mem=1G <- resources.mem
#   --time=00:20:00 <- resources.time
#SBATCH --job-name=raw__numbers
#SBATCH --output=slurm-%j.out
#SBATCH --error=slurm-%j.err
#SBATCH --open-mode=append
#SBATCH --partition=zen3_0512
#SBATCH --qos=zen3_0512
#SBATCH --account=p71234
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

# VSC-5 asks jobs not to rely on ~/.bashrc: start from a clean module environment.
# Batch shells are not login shells: make sure the module command exists. Site scripts are not
# written for set -u, so it is off while they run.
set +u
command -v module >/dev/null 2>&1 || source /etc/profile
module purge
set -u

export HPC_DATA_DIR="${DATA}"/dagster-hpc/data
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
