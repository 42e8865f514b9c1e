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
#   --ntasks=2 <- resources.nodes (one task per node)
#   --cpus-per-task=2 <- resources.cpus_per_task
#   --mem=2G <- resources.mem
#   --time=00:30:00 <- resources.time
#SBATCH --job-name=raw__numbers
#SBATCH --output=slurm-%j.out
#SBATCH --error=slurm-%j.err
#SBATCH --open-mode=append
#SBATCH --partition=cpu
#SBATCH --qos=normal
#SBATCH --account=hpc-test
#SBATCH --nodes=2
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --time=00:30:00

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

# --- Ray cluster over the job's nodes: head on the first node, one worker per other node ---
export HPC_RAY_NODES=2
export HPC_RAY_START_TIMEOUT_S=180
# Only this job's processes may join or drive its Ray cluster: a fresh token, never written to disk.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export RAY_AUTH_TOKEN
mapfile -t ray_nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
# Ports: a block of 10 per node, chosen by job id, so jobs sharing a node do not collide.
ray_span=$((10 * HPC_RAY_NODES))
ray_base=$(( 20000 + (SLURM_JOB_ID % ((65000 - 20000) / ray_span)) * ray_span ))
ray_node_args() {
  local p=$((ray_base + 10 * $1))
  # A short node-local temp dir: Ray's socket paths must stay under 107 bytes.
  echo --node-manager-port=$p --object-manager-port=$((p + 1)) --dashboard-agent-listen-port=$((p + 2)) \
    --dashboard-agent-grpc-port=$((p + 3)) --runtime-env-agent-port=$((p + 4)) --metrics-export-port=$((p + 5)) \
    --temp-dir=/tmp/ray-$SLURM_JOB_ID-$1
}
# Ray sees the whole node unless told: give it the job's share.
ray_resources=(--num-cpus="${SLURM_CPUS_PER_TASK:-1}" --num-gpus=0 --disable-usage-stats --block)
if [ -n "${SLURM_MEM_PER_NODE:-}" ]; then ray_resources+=(--memory=$((SLURM_MEM_PER_NODE * 1024 * 1024))); fi
ray_resources+=(--object-store-memory=2147483648)
ray_head_ip=$(srun --nodes=1 --ntasks=1 -w "${ray_nodes[0]}" hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS="$ray_head_ip:$((ray_base + 6))"
ray_steps=()
ray_teardown() {
  # Only this job's Ray: ending its srun steps ends their processes. `ray stop` would also stop
  # every other Ray of this user on the node (a shared node, or a second job of the same run).
  if [ -n "${ray_steps[*]:-}" ]; then kill ${ray_steps[*]} 2>/dev/null || true; wait ${ray_steps[*]} 2>/dev/null || true; fi
  rm -rf /tmp/ray-"$SLURM_JOB_ID"-* 2>/dev/null || true
}
trap ray_teardown EXIT
echo "ray: head ${ray_nodes[0]} ($RAY_ADDRESS), $HPC_RAY_NODES node(s)" >&2
# shellcheck disable=SC2046
srun --nodes=1 --ntasks=1 -w "${ray_nodes[0]}"  \
  ray start --head --node-ip-address="$ray_head_ip" --port=$((ray_base + 6)) \
  --include-dashboard=false $(ray_node_args 0) "${ray_resources[@]}" &
ray_steps+=($!)
for ((i = 1; i < HPC_RAY_NODES; i++)); do
  # shellcheck disable=SC2046
  srun --nodes=1 --ntasks=1 -w "${ray_nodes[$i]}"  \
    ray start --address="$RAY_ADDRESS" $(ray_node_args "$i") "${ray_resources[@]}" &
  ray_steps+=($!)
done
# The driver (below) waits until all $HPC_RAY_NODES nodes have joined.
set +e
python3 -u workloads/convert_documents.py
status=$?
set -e
# The exit code survives even when accounting is unavailable.
echo "$status" > .hpc-exit-code

# On a line of its own, even after a last line of the workload's that had no newline.
[ -z "$(tail -c 1 "slurm-${SLURM_JOB_ID:-}.err" 2>/dev/null)" ] || echo >&2
echo "job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?} finished with exit code ${status}" >&2
exit "$status"
