#!/bin/bash
# Job script for asset raw/numbers
# Cluster profile: musica (clusters/musica.yaml)

# MUSICA, Vienna (Zen4 192-core CPU nodes, 4x H100 94 GB GPU nodes)
#
# Directive <- the setting it comes from
#   --job-name=raw__numbers <- asset raw/numbers
#   --output=slurm-%j.out <- job directory layout
#   --error=slurm-%j.err <- job directory layout
#   --open-mode=append <- job directory layout (a requeued job adds to its output instead of erasing it)
#   --partition=zen4_0768_h100x4 <- clusters/musica.yaml:44 slurm.partitions.gpu.partition
#   --qos=zen4_0768_h100x4 <- clusters/musica.yaml:45 slurm.partitions.gpu.qos
#   --account=p72000 <- $MUSICA_ACCOUNT (clusters/musica.yaml:15 slurm.account_env)
#   --ntasks=1 <- resources.nodes (one task per node)
#   --cpus-per-task=2 <- resources.cpus_per_task
#   --gres=gpu:1 <- resources.gpus via clusters/musica.yaml:23 slurm.gpu_directive
#   --time=00:30:00 <- resources.time
#SBATCH --job-name=raw__numbers
#SBATCH --output=slurm-%j.out
#SBATCH --error=slurm-%j.err
#SBATCH --open-mode=append
#SBATCH --partition=zen4_0768_h100x4
#SBATCH --qos=zen4_0768_h100x4
#SBATCH --account=p72000
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --gres=gpu:1
#SBATCH --time=00:30:00
# note: --nodes left out for a single-node job (clusters/musica.yaml:51 slurm.partitions.gpu.nodes_directive)
# note: --mem=2G requested but not set: musica rejects it here (clusters/musica.yaml:50 slurm.partitions.gpu.omit_directives)

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

# MUSICA exports the submitting shell's environment (--export=ALL): drop a leaked virtualenv.
unset VIRTUAL_ENV PYTHONHOME
export HPC_DATA_DIR="${DATA}"/dagster-hpc/data
# The job directory holds hpc_runtime, the helpers workloads import.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=2
# Passed from the orchestrator's environment at run time, never written here: HF_TOKEN

set +e
python3 -u workloads/draw_numbers.py --count 100
status=$?
set -e
# The exit code survives even when accounting is unavailable.
echo "$status" > .hpc-exit-code

# On a line of its own, even after a last line of the workload's that had no newline.
[ -z "$(tail -c 1 "slurm-${SLURM_JOB_ID:-}.err" 2>/dev/null)" ] || echo >&2
echo "job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?} finished with exit code ${status}" >&2
exit "$status"
