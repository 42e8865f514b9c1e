#!/usr/bin/env bash
# The project's own Slurm test cluster, on this machine: munge, MariaDB + slurmdbd (accounting is
# always on, so sacct works), slurmctld, two slurmd nodes, a key-only sshd "login node" on
# 127.0.0.1:2222, a second sshd as jump host on 127.0.0.1:2223 and a third door to the login node
# on 127.0.0.1:2224 that takes a password and then a TOTP code through PAM (pam_unix, pam_oath;
# it owns /etc/pam.d/sshd and /etc/users.oath while up). Partitions, QoS, accounts and
# (stand-in) GPUs mimic the sites in clusters/*.yaml, so the job scripts rendered from those
# profiles can be tried with `sbatch --test-only` and really run, on one or two nodes.
#
#   scripts/test-cluster.sh up              # install (once), configure, start, smoke test; re-runnable
#   scripts/test-cluster.sh status
#   scripts/test-cluster.sh down            # cancel jobs, stop every daemon by its PID file
#   scripts/test-cluster.sh down --purge    # ... and delete the state dir and the configs written here
#   scripts/test-cluster.sh install         # packages only (used by docker/Dockerfile)
#   scripts/test-cluster.sh stop DAEMON     # fault injection: stop one daemon (an sshd-* also drops
#   scripts/test-cluster.sh start DAEMON    #   every open session, as a reboot would), start it again
#   scripts/test-cluster.sh flaky-squeue on|off   # squeue fails every other call for the test user,
#                                           #   as on a busy controller ("Socket timed out")
#   DAEMON: munged mariadb slurmdbd slurmctld slurmd-hpc-node1 ... sshd-login sshd-jump sshd-otp
#
# Debian 12, run as root, no systemd: daemons are started by hand and tracked by PID files.
# After `up`: source "$HPC_TEST_CLUSTER_DIR/env.sh" (connection details for tests and the docker profile).
#
# Knobs (environment):
#   HPC_TEST_CLUSTER_DIR  client files (ssh/, env.sh); default ${TMPDIR:-/tmp}/hpc-test-cluster
#   HPC_TEST_STATE_DIR    daemon state, logs, PID files; default $HPC_TEST_CLUSTER_DIR/state
#                         (docker-compose keeps it inside the container, off the host bind mount)
#   HPC_TEST_USER (slurmuser), HPC_TEST_SSH_PORT (2222), HPC_TEST_JUMP_PORT (2223),
#   HPC_TEST_OTP_PORT (2224: password + TOTP through PAM keyboard-interactive, as VSC-5's port 22)
#   HPC_TEST_SSH_LISTEN   address every sshd listens on (127.0.0.1; 0.0.0.0 inside a container)
#   HPC_TEST_NODE_COUNT   number of slurmd nodes (2; 1 for a single node)
#   HPC_TEST_CGROUPS      auto|0|1 (cgroup v1 memory/core enforcement; auto = when v1 is mounted)
#   HPC_TEST_CLUSTER_OWNER  uid:gid that gets ssh/ and env.sh (a host user reading a bind mount)
#   HPC_TEST_OFFLINE_COMPUTE auto|0|1 (slurmd, and so every job, in a network namespace without a
#                         route out, as on Leonardo; auto = when this machine can create one)
#
# Site-like, as the profiles in clusters/ expect: the test user gets Python only through
# `module load` (Environment Modules, modulefiles named as VSC-5, Leonardo and MUSICA name theirs),
# $DATA and $WORK from the login shell, and compute nodes that cannot reach the internet while the
# login node can.
set -euo pipefail

DIR=${HPC_TEST_CLUSTER_DIR:-${TMPDIR:-/tmp}/hpc-test-cluster}
STATE=${HPC_TEST_STATE_DIR:-$DIR/state}
TEST_USER=${HPC_TEST_USER:-slurmuser}
SSH_PORT=${HPC_TEST_SSH_PORT:-2222}
JUMP_PORT=${HPC_TEST_JUMP_PORT:-2223}
OTP_PORT=${HPC_TEST_OTP_PORT:-2224}
SSH_LISTEN=${HPC_TEST_SSH_LISTEN:-127.0.0.1}
NODE_COUNT=${HPC_TEST_NODE_COUNT:-2}
CGROUPS=${HPC_TEST_CGROUPS:-auto}
OWNER=${HPC_TEST_CLUSTER_OWNER:-}
OFFLINE=${HPC_TEST_OFFLINE_COMPUTE:-auto}

CLUSTER=hpctest
NODE_PREFIX=hpc-node
if [ "$NODE_COUNT" = 1 ]; then NODES=${NODE_PREFIX}1; else NODES="$NODE_PREFIX[1-$NODE_COUNT]"; fi
DB_PORT=3307          # not 3306, so a MariaDB/MySQL the machine already runs is left alone
DB_PASS=hpc-test-slurmdbd
GPUS_PER_NODE=4
MARKER="# Written by scripts/test-cluster.sh (dagster-hpc test cluster); 'down --purge' removes it."
SSH=$DIR/ssh
RUN=$STATE/run
LOG=$STATE/log
DB=$STATE/mysql
SITE=$STATE/site      # the stand-in site software stack: apps/ and modulefiles/
OTP=$STATE/otp        # the test user's password and TOTP secret (0600)
OATH_USERS=/etc/users.oath
# OpenSSH 9.2 has no PAMServiceName: every sshd with UsePAM uses the service `sshd`. Only the OTP
# node has UsePAM yes; the original file is kept beside it and put back by `down`.
PAM_SSHD=/etc/pam.d/sshd
PAM_SSHD_ORIG=/etc/pam.d/sshd.hpc-test-orig
NETNS=hpctest-compute
HOST_ADDR=10.251.0.1  # the controller as the compute namespace reaches it
NODE_ADDR=10.251.0.2

# Partitions as the site profiles name them (clusters/*.yaml), with the QoS each profile pairs with
# them. AllowQos makes a wrong partition/QoS pair fail like it does at the sites. MaxTime is the
# site's partition limit; Leonardo's *_lprod QoS may exceed it (Flags=PartitionTimeLimit below).
#   partition          MaxTime     AllowQos
PARTITIONS='
cpu                  1-00:00:00  normal
gpu                  1-00:00:00  normal
debug                00:30:00    debug
zen3_0512            3-00:00:00  zen3_0512,zen3_0512_devel
zen3_1024            3-00:00:00  zen3_1024
zen3_0512_a100x2     3-00:00:00  zen3_0512_a100x2,zen3_0512_a100x2_devel
zen2_0256_a40x2      3-00:00:00  zen2_0256_a40x2
dcgp_usr_prod        1-00:00:00  normal,dcgp_qos_dbg,dcgp_qos_lprod
boost_usr_prod       1-00:00:00  normal,boost_qos_dbg,boost_qos_lprod
zen4_0768            3-00:00:00  zen4_0768,dev_zen4_0768
zen4_0768_h100x4     3-00:00:00  zen4_0768_h100x4,dev_zen4_0768_h100x4
'
# QoS limits like the sites' development/debug/long QoS (wall time, node count). DenyOnLimit makes
# a job over a limit fail at submission instead of pending forever, which is what tests want.
#   qos                     sacctmgr settings
QOS='
normal
debug                     MaxWall=00:30:00 MaxTRESPerJob=node=1 Flags=DenyOnLimit
zen3_0512
zen3_0512_devel           MaxWall=00:10:00 MaxTRESPerJob=node=5 Flags=DenyOnLimit
zen3_1024
zen3_0512_a100x2
zen3_0512_a100x2_devel    MaxWall=00:10:00 MaxTRESPerJob=node=2 Flags=DenyOnLimit
zen2_0256_a40x2
dcgp_qos_dbg              MaxWall=00:30:00 MaxTRESPerJob=node=2 Flags=DenyOnLimit
dcgp_qos_lprod            MaxWall=4-00:00:00 MaxTRESPerJob=node=3 Flags=DenyOnLimit,PartitionTimeLimit
boost_qos_dbg             MaxWall=00:30:00 MaxTRESPerJob=node=2 Flags=DenyOnLimit
boost_qos_lprod           MaxWall=4-00:00:00 MaxTRESPerJob=node=3 Flags=DenyOnLimit,PartitionTimeLimit
zen4_0768
dev_zen4_0768             MaxWall=00:10:00 MaxTRESPerJob=node=2 Flags=DenyOnLimit
zen4_0768_h100x4
dev_zen4_0768_h100x4      MaxWall=00:10:00 MaxTRESPerJob=node=2 Flags=DenyOnLimit
'
# Accounts the profiles use: docker (hpc-test), VSC-5 (p71234), Leonardo (EUHPC_D20_063), MUSICA
# (p72000). Slurm stores account names in lower case and matches them case-insensitively.
ACCOUNTS='hpc-test p71234 EUHPC_D20_063 p72000'
DEFAULT_ACCOUNT=hpc-test

log() { printf '[test-cluster %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# A PID counts only if it is alive, not a zombie (PID 1 in a container may reap slowly) and runs the
# expected program: a stale PID file must never make us signal an unrelated process.
running() { # running <pid> <program>
  local pid=$1 want=$2 stat comm
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }; [ "${stat%% *}" != Z ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [ "$comm" = "$want" ]
}
# After a reboot or a container restart PIDs repeat, and a PID file left behind can name another of
# our daemons. A daemon writes its PID file after it starts, so a process younger than the file is
# not the one the file is about.
started_before() { # started_before <pid> <file>
  local f btime
  read -ra f <<< "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null)" || return 1
  btime=$(awk '/^btime/ {print $2}' /proc/stat)
  [ $(( btime + f[19] / $(getconf CLK_TCK) )) -le $(( $(stat -c %Y "$2") + 2 )) ]
}
# Daemon name -> PID file and program name. Each daemon writes its own PID file.
pidfile() {
  case $1 in
    munged) echo /run/munge/munged.pid ;;
    mariadb) echo "$DB/mariadbd.pid" ;;
    *) echo "$RUN/$1.pid" ;;
  esac
}
program() { case $1 in mariadb) echo mariadbd ;; sshd-*) echo sshd ;; slurmd-*) echo slurmd ;; *) echo "$1" ;; esac; }
alive() {
  local f p; f=$(pidfile "$1"); [ -s "$f" ] || return 1
  p=$(cat "$f"); running "$p" "$(program "$1")" && started_before "$p" "$f"
}
daemons() { # in start order
  local i; printf '%s\n' munged mariadb slurmdbd slurmctld
  for i in $(seq 1 "$NODE_COUNT"); do echo "slurmd-$NODE_PREFIX$i"; done
  printf '%s\n' sshd-login sshd-jump sshd-otp
}

wait_for() { # wait_for <timeout_s> <cmd...>
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.2; done
}
# Write stdin to $1 only when the content differs, so an unchanged `up` restarts nothing.
# Returns 0 when the file changed.
write_if_changed() { # write_if_changed <file> [mode]
  local dst=$1 mode=${2:-644} tmp
  tmp=$(mktemp); cat > "$tmp"
  if [ -f "$dst" ] && cmp -s "$tmp" "$dst"; then rm -f "$tmp"; return 1; fi
  mkdir -p "$(dirname "$dst")"; chmod "$mode" "$tmp"; mv "$tmp" "$dst"; return 0
}

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge openssh-server slurmdbd mariadb-server environment-modules acl
    libpam-oath oathtool) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  # Package scripts would start munge/slurm/mariadb/ssh through init scripts; we start them ourselves.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  log "apt-get install ${missing[*]}"
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ $own_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  log "packages installed in $((SECONDS - t0))s"
}

prepare_dirs() {
  mkdir -p "$DIR" "$STATE"; chmod 755 "$DIR" "$STATE"
  install -d -m 0700 "$SSH" "$STATE/sshd"
  install -d -o slurm -g slurm -m 0755 "$RUN" "$LOG" "$STATE/slurmctld"
  install -d -m 0755 "$STATE/slurmd"
  # slurm and mysql write below $STATE: every parent must let them through (not so under /root).
  runuser -u slurm -- test -w "$RUN" \
    || die "$STATE is not reachable for the slurm user (a parent dir is not world-searchable); set HPC_TEST_STATE_DIR elsewhere"
}

setup_user() {
  id "$TEST_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$TEST_USER"
  # useradd leaves the password '!' (locked), and sshd without PAM refuses locked accounts even for
  # key logins. The OTP node needs a real password anyway; the key-only nodes never ask for it.
  setup_password
  chmod 755 "/home/$TEST_USER"
}

# A random password and TOTP secret, made once and kept in $OTP (hex, so env.sh needs no quoting).
# chpasswd salts anew each time, so the hash it wrote is remembered: an unchanged `up` keeps it.
setup_password() {
  install -d -m 0700 "$OTP"
  [ -s "$OTP/password" ] || (umask 077; od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$OTP/password")
  [ -s "$OTP/secret" ]   || (umask 077; od -An -N20 -tx1 /dev/urandom | tr -d ' \n' > "$OTP/secret")
  chmod 0600 "$OTP/password" "$OTP/secret"
  if [ "$(getent shadow "$TEST_USER" | cut -d: -f2)" != "$(cat "$OTP/password.hash" 2>/dev/null)" ]; then
    printf '%s:%s\n' "$TEST_USER" "$(cat "$OTP/password")" | chpasswd
    (umask 077; getent shadow "$TEST_USER" | cut -d: -f2 > "$OTP/password.hash")
    log "password of $TEST_USER set (in $OTP/password)"
  fi
}

# pam_oath reads the secret from $OATH_USERS and writes the last accepted code back into that line
# (a step counter, the code, the time), then refuses that code and, as tried, any of an earlier
# step; rewriting the file only when the secret changed keeps that record across `up`.
setup_otp() {
  local secret; secret=$(cat "$OTP/secret")
  # pam_oath separates the fields it writes back with tabs.
  if ! grep -qxE "HOTP/T30[[:space:]]+$TEST_USER[[:space:]]+-[[:space:]]+$secret([[:space:]].*)?" "$OATH_USERS" 2>/dev/null; then
    (umask 077; printf 'HOTP/T30 %s - %s\n' "$TEST_USER" "$secret" > "$OATH_USERS")
    log "TOTP secret of $TEST_USER written to $OATH_USERS"
  fi
  chown root:root "$OATH_USERS"; chmod 0600 "$OATH_USERS"
  if [ -f "$PAM_SSHD" ] && ! grep -qF "$MARKER" "$PAM_SSHD" && [ ! -e "$PAM_SSHD_ORIG" ]; then
    cp -p "$PAM_SSHD" "$PAM_SSHD_ORIG"
  fi
  # Password first, then the code, each its own prompt ("Password: ", then "One-time password
  # (OATH) for `USER': "); `requisite` stops at a wrong password before any code is asked for.
  # nodelay: no 2 s pause after a failure, tests provoke many. No pam_loginuid/pam_systemd: they
  # fail inside a container and the test cluster needs neither.
  write_if_changed "$PAM_SSHD" <<EOF || true
$MARKER
# For the OTP login node (sshd-otp); \`down\` puts back the original, kept in $PAM_SSHD_ORIG.
auth     requisite  pam_unix.so nodelay
auth     required   pam_oath.so usersfile=$OATH_USERS window=20 digits=6
account  required   pam_unix.so
session  required   pam_unix.so
password required   pam_deny.so
EOF
}

restore_pam() {
  if [ -f "$PAM_SSHD" ] && grep -qF "$MARKER" "$PAM_SSHD" && [ -f "$PAM_SSHD_ORIG" ]; then
    mv -f "$PAM_SSHD_ORIG" "$PAM_SSHD"; log "restored $PAM_SSHD"
  fi
}

# The compute nodes' network: a namespace joined to this machine by a veth pair and nothing else, so
# jobs reach slurmctld but not the internet (Leonardo's compute nodes are offline). Only the
# network is namespaced (nsenter --net), so cgroups, files and munge's socket stay shared.
# Sets COMPUTE_NETNS to the namespace name, or leaves it empty where it cannot be made.
setup_network() {
  COMPUTE_NETNS=
  [ "$OFFLINE" = 0 ] && { log "compute nodes share the login node's network (HPC_TEST_OFFLINE_COMPUTE=0)"; return 0; }
  if [ ! -e "/run/netns/$NETNS" ]; then
    if ! { ip netns add "$NETNS" && ip link add hpc-c0 type veth peer name hpc-c1 && ip link set hpc-c1 netns "$NETNS" \
           && ip addr add "$HOST_ADDR/24" dev hpc-c0 && ip link set hpc-c0 up \
           && ip -n "$NETNS" addr add "$NODE_ADDR/24" dev hpc-c1 && ip -n "$NETNS" link set hpc-c1 up \
           && ip -n "$NETNS" link set lo up; } 2>"$LOG/netns.err"; then
      ip link del hpc-c0 2>/dev/null || true; ip netns del "$NETNS" 2>/dev/null || true
      [ "$OFFLINE" = 1 ] && die "cannot create the compute network namespace: $(cat "$LOG/netns.err")"
      log "WARNING: no network namespace here ($(head -1 "$LOG/netns.err")): compute nodes are online"
      return 0
    fi
    log "compute nodes offline: namespace $NETNS ($NODE_ADDR), controller at $HOST_ADDR, no route out"
  fi
  COMPUTE_NETNS=$NETNS
}

# Python for the test user only through `module load`, as on the sites: Debian's interpreter is
# copied under $SITE/apps (it finds its standard library in /usr by its build prefix) and the
# system one is made unexecutable for the test user alone (an ACL; root and Dagster keep it).
# Modulefiles carry the sites' naming: Spack's name-version-compiler-hash (VSC-5), plain
# name/version (Leonardo), and an EESSI-style stack behind ASC/2025.06 (MUSICA).
setup_site_software() {
  local py ver app mf
  py=$(readlink -f /usr/bin/python3)
  ver=$("$py" -c 'import platform; print(platform.python_version())')
  app=$SITE/apps/python-$ver
  install -d -m 0755 "$SITE" "$app/bin" "$SITE/modulefiles/python" "$SITE/modulefiles/ASC" "$SITE/eessi/Python"
  cmp -s "$py" "$app/bin/$(basename "$py")" || install -m 0755 "$py" "$app/bin/$(basename "$py")"
  ln -sfn "$(basename "$py")" "$app/bin/python3"; ln -sfn "$(basename "$py")" "$app/bin/python"
  python_modulefile() {
    printf '#%%Module1.0\n%s\nmodule-whatis "Python %s (test cluster stand-in)"\nconflict python Python\nprepend-path PATH %s/bin\n' \
      "$MARKER" "$ver" "$app"
  }
  python_modulefile | write_if_changed "$SITE/modulefiles/python/$ver-gcc-12.2.0-q4vx2pc" || true
  python_modulefile | write_if_changed "$SITE/modulefiles/python/$ver" || true
  python_modulefile | write_if_changed "$SITE/eessi/Python/$ver-GCCcore-12.2.0" || true
  printf '#%%Module1.0\n%s\nmodule-whatis "ASC software stack 2025.06 (test cluster stand-in)"\nmodule use %s\n' \
    "$MARKER" "$SITE/eessi" | write_if_changed "$SITE/modulefiles/ASC/2025.06" || true
  # Every shell that loads the module system sees the stand-in tree.
  mf=/etc/environment-modules/modulespath
  grep -qxF "$SITE/modulefiles" "$mf" 2>/dev/null || echo "$SITE/modulefiles" >> "$mf"
  # Site variables from the login shell: $DATA (VSC-5, MUSICA) and $WORK (Leonardo).
  install -d -o "$TEST_USER" -g "$TEST_USER" -m 0700 "/home/$TEST_USER/data" "/home/$TEST_USER/work"
  printf '%s\nif [ "$(id -un)" = %s ]; then export DATA=$HOME/data WORK=$HOME/work; fi\n' "$MARKER" "$TEST_USER" \
    | write_if_changed /etc/profile.d/hpc-test-site.sh || true
  setfacl -m "u:$TEST_USER:---" "$py" || die "cannot set an ACL on $py (the acl package and filesystem support are needed)"
  runuser -u "$TEST_USER" -- "$py" -c pass 2>/dev/null && die "$TEST_USER can still run $py"
  runuser -u "$TEST_USER" -- bash -lc "module load python/$ver && python3 -c pass" \
    || die "module load python/$ver does not give $TEST_USER a Python"
  log "site software: python/$ver (+ Spack and EESSI-style names) through module load only; \$DATA, \$WORK set"
}

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  [ -s /etc/munge/munge.key ] || mungekey -c -k /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0600 /etc/munge/munge.key
  alive munged && return 0
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force 9>&-   # --force: a dead munged's socket may be left over
  wait_for 10 test -s /run/munge/munged.pid || die "munged did not start"
  wait_for 10 bash -c 'munge -n | unmunge' || die "munge does not work"
  log "munged started (pid $(cat /run/munge/munged.pid))"
}

cgroups_enabled() {
  case $CGROUPS in
    1) return 0 ;; 0) return 1 ;;
    *) [ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/cpuset ] ;;
  esac
}

# Sets SLURM_CHANGED=1 when slurm.conf, cgroup.conf or gres.conf changed.
write_slurm_conf() {
  local cpus sockets cores threads mem node_mem defmem i
  read -r cpus sockets cores threads mem < <(slurmd -C | head -1 | sed -E \
    's/.*CPUs=([0-9]+).*SocketsPerBoard=([0-9]+).*CoresPerSocket=([0-9]+).*ThreadsPerCore=([0-9]+).*RealMemory=([0-9]+).*/\1 \2 \3 \4 \5/')
  # Headroom keeps a node from registering with "Low RealMemory"; the nodes share this machine's
  # memory, so each declares its part. CPUs cannot be split, so every node declares all of them.
  mem=$(( mem > 2048 ? mem - 1024 : mem ))
  node_mem=$(( mem / NODE_COUNT ))
  # Jobs without --mem (the GPU profiles omit it) must not claim the whole node.
  defmem=$(( node_mem / cpus < 2048 ? node_mem / cpus : 2048 ))
  local proctrack=proctrack/linuxproc task=task/none
  if cgroups_enabled; then proctrack=proctrack/cgroup; task=task/cgroup,task/affinity
  else log "WARNING: no cgroup v1 memory controller: --mem and core limits are not enforced (no OUT_OF_MEMORY)"; fi

  local node_addr=127.0.0.1
  [ -z "${COMPUTE_NETNS:-}" ] || node_addr=$NODE_ADDR
  SLURM_CHANGED=0
  {
    echo "$MARKER"
    cat <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost${COMPUTE_NETNS:+($HOST_ADDR)}
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
ProctrackType=$proctrack
TaskPlugin=$task
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
GresTypes=gpu
SchedulerType=sched/backfill
# Start jobs at once instead of batching submissions.
SchedulerParameters=batch_sched_delay=0
# A node an admin (or a test) sets DOWN stays DOWN until \`scontrol update state=resume\`; one that
# was only unresponsive comes back by itself. (With 2 the node's next ping answer, milliseconds
# later, would undo the DOWN and a RESUME would fail with "Invalid node state specified".)
ReturnToService=1
# A job on a node that fails ends NODE_FAIL (a state our tool must report) instead of being
# requeued and run again behind the test's back.
JobRequeue=0
# Jobs over a partition limit are rejected at submission (sbatch --test-only shows it).
EnforcePartLimits=ALL
MpiDefault=none
MailProg=/bin/true
# MaxRSS is sampled: sample every second so that short test jobs show their memory too.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# Finished jobs stay visible to squeue/scontrol for 5 minutes (sacct keeps them for good).
MinJobAge=300
KillWait=5
Waittime=0
EOF
    # Several slurmd on one host (Debian builds Slurm with --enable-multiple-slurmd): one port each.
    for i in $(seq 1 "$NODE_COUNT"); do
      echo "NodeName=$NODE_PREFIX$i NodeHostname=$(hostname -s) NodeAddr=$node_addr Port=$((6818 + 2 * (i - 1))) CPUs=$cpus Boards=1 SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$node_mem Gres=gpu:$GPUS_PER_NODE State=UNKNOWN"
    done
    local part maxtime qos default
    while read -r part maxtime qos; do
      [ -n "$part" ] || continue
      default=NO; [ "$part" = cpu ] && default=YES
      echo "PartitionName=$part Nodes=$NODES Default=$default MaxTime=$maxtime AllowQos=$qos State=UP"
    done <<< "$PARTITIONS"
  } | write_if_changed /etc/slurm/slurm.conf && SLURM_CHANGED=1

  # No GPUs here: jobs get --gres=gpu:N scheduled, accounted and CUDA_VISIBLE_DEVICES set, nothing
  # more. Slurm 22.05 drops a GPU without File= ("Removing file-less GPU") and wants a device
  # node there, so each one is a stand-in with /dev/null's numbers; ConstrainDevices=no, so the
  # device numbers are never used.
  install -d -m 0755 "$STATE/gpu"
  for i in $(seq 0 $((GPUS_PER_NODE - 1))); do
    [ -c "$STATE/gpu/fake-gpu$i" ] || { rm -f "$STATE/gpu/fake-gpu$i"; mknod -m 0666 "$STATE/gpu/fake-gpu$i" c 1 3; SLURM_CHANGED=1; }
  done
  printf '%s\nAutoDetect=off\nNodeName=%s Name=gpu File=%s\n' "$MARKER" "$NODES" "$STATE/gpu/fake-gpu[0-$((GPUS_PER_NODE - 1))]" \
    | write_if_changed /etc/slurm/gres.conf && SLURM_CHANGED=1
  if cgroups_enabled; then
    printf '%s\n%s\n' "$MARKER" 'CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainDevices=no' | write_if_changed /etc/slurm/cgroup.conf && SLURM_CHANGED=1
  elif [ -f /etc/slurm/cgroup.conf ] && grep -qF "$MARKER" /etc/slurm/cgroup.conf; then
    rm -f /etc/slurm/cgroup.conf; SLURM_CHANGED=1
  fi
  log "slurm.conf: $NODE_COUNT node(s) $NODES, CPUs=$cpus RealMemory=$node_mem each, gpu:$GPUS_PER_NODE, cgroups=$proctrack changed=$SLURM_CHANGED"
}

start_mariadb() {
  install -d -o mysql -g mysql -m 0750 "$DB"
  if [ ! -d "$DB/mysql" ]; then
    log "initializing MariaDB in $DB"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || { tail -20 "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
  fi
  alive mariadb && return 0
  rm -f "$DB/mariadbd.pid"
  # --no-defaults: the packaged /etc/mysql config (datadir, socket) belongs to the system instance.
  # setsid: the server must not die with the caller's process group; fds closed so a caller that
  # captures our output does not wait for the daemon.
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB" --pid-file="$DB/mariadbd.pid" \
    --socket="$DB/mysqld.sock" --bind-address=127.0.0.1 --port=$DB_PORT --skip-name-resolve \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --log-error="$DB/error.log" \
    </dev/null >/dev/null 2>&1 9>&- &
  wait_for 60 mariadb-admin --no-defaults --socket="$DB/mysqld.sock" ping || { tail -20 "$DB/error.log"; die "mariadb did not start"; }
  wait_for 10 test -s "$DB/mariadbd.pid"
  log "mariadb started (pid $(cat "$DB/mariadbd.pid"), 127.0.0.1:$DB_PORT)"
}

start_slurmdbd() {
  mariadb --no-defaults --socket="$DB/mysqld.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  local changed=0
  write_if_changed /etc/slurm/slurmdbd.conf 600 <<EOF && changed=1
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  [ $changed = 1 ] && alive slurmdbd && { log "slurmdbd.conf changed -> restart"; stop_daemon slurmdbd; }
  if ! alive slurmdbd; then
    rm -f "$RUN/slurmdbd.pid"
    /usr/sbin/slurmdbd 9>&-
    wait_for 20 test -s "$RUN/slurmdbd.pid" || { tail -20 "$LOG/slurmdbd.log"; die "slurmdbd did not start"; }
    log "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
  fi
  wait_for 30 sacctmgr -n list cluster || { tail -20 "$LOG/slurmdbd.log"; die "slurmdbd does not answer"; }
}

# Cluster, QoS, accounts and the test user's associations. They live in the database under $STATE,
# so a stamp of the applied spec next to it lets an unchanged `up` skip the sacctmgr calls (~4 s).
setup_accounting() {
  local spec stamp=$STATE/accounting.applied
  spec=$(printf '%s\n' "$CLUSTER" "$QOS" "$ACCOUNTS" "$DEFAULT_ACCOUNT" "$TEST_USER" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec" ] \
     && sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    return 0
  fi
  local t0=$SECONDS name settings qos_names='' missing=() acct
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  log "  cluster $CLUSTER registered ($((SECONDS - t0))s)"
  # Batched (one call per kind of change): each sacctmgr call costs ~0.2 s.
  local have; have=$(sacctmgr -n -P list qos format=name)
  while read -r name settings; do
    [ -n "$name" ] || continue
    qos_names+=${qos_names:+,}$name
    grep -qx "$name" <<< "$have" || missing+=("$name")
  done <<< "$QOS"
  [ ${#missing[@]} -eq 0 ] || sacctmgr -i add qos "$(IFS=,; echo "${missing[*]}")" >/dev/null
  while read -r settings; do
    # shellcheck disable=SC2086  # settings are several words on purpose
    sacctmgr -i modify qos where name="$(awk -v s="$settings" '{n=$1; $1=""; sub(/^ /,""); if ($0==s) print n}' <<< "$QOS" | paste -sd,)" \
      set $settings >/dev/null || true
  done < <(awk 'NF>1 {$1=""; sub(/^ /,""); print}' <<< "$QOS" | sort -u)
  have=$(sacctmgr -n -P list account format=account); missing=()
  for acct in $ACCOUNTS; do grep -qix "$acct" <<< "$have" || missing+=("$acct"); done
  [ ${#missing[@]} -eq 0 ] || sacctmgr -i add account "$(IFS=,; echo "${missing[*]}")" Organization=hpc-test >/dev/null
  # Every association of the user may use every QoS; the partitions' AllowQos decides the pairing.
  sacctmgr -i add user "$TEST_USER" Account="${ACCOUNTS// /,}" DefaultAccount="$DEFAULT_ACCOUNT" \
    QOS="$qos_names" DefaultQOS=normal >/dev/null 2>&1 \
  || sacctmgr -i modify user where name="$TEST_USER" set DefaultAccount="$DEFAULT_ACCOUNT" \
    QOS="$qos_names" DefaultQOS=normal >/dev/null 2>&1 || true
  echo "$spec" > "$stamp"
  log "accounting: cluster $CLUSTER, accounts $ACCOUNTS, $(wc -w <<< "${qos_names//,/ }") QoS ($((SECONDS - t0))s)"
}

start_slurm() {
  local i node
  if [ "${SLURM_CHANGED:-0}" = 1 ]; then
    for node in $(daemons | grep '^slurmd-'); do alive "$node" && { log "config changed -> restart $node"; stop_daemon "$node"; }; done
    alive slurmctld && { log "config changed -> restart slurmctld"; stop_daemon slurmctld; }
  fi
  if ! alive slurmctld; then
    rm -f "$RUN/slurmctld.pid"
    /usr/sbin/slurmctld 9>&-
    wait_for 20 test -s "$RUN/slurmctld.pid" || { tail -20 "$LOG/slurmctld.log"; die "slurmctld did not start"; }
    log "slurmctld started (pid $(cat "$RUN/slurmctld.pid"))"
  fi
  for i in $(seq 1 "$NODE_COUNT"); do
    node=$NODE_PREFIX$i
    alive "slurmd-$node" && continue
    rm -f "$RUN/slurmd-$node.pid"
    install -d -m 0755 "$STATE/slurmd/$node"
    # In the compute namespace (offline), every job step inherits its network.
    ${COMPUTE_NETNS:+nsenter --net=/run/netns/$NETNS} /usr/sbin/slurmd -N "$node" 9>&-
    wait_for 20 test -s "$RUN/slurmd-$node.pid" || { tail -20 "$LOG/slurmd-$node.log"; die "slurmd $node did not start"; }
    log "slurmd $node started (pid $(cat "$RUN/slurmd-$node.pid"))"
  done
  # Nodes left DOWN/DRAIN by an earlier run or a test are put back into service.
  local t0=$SECONDS bad
  nodes_ready() {
    local st; st=$(sinfo -h -N -p cpu -o '%N %T') || return 1
    [ "$(grep -cE ' (idle|mixed|allocated|completing)$' <<< "$st")" = "$NODE_COUNT" ]
  }
  bad=$(sinfo -h -N -o '%N %T' | grep -E ' (down|drain|drained|draining|fail)' | cut -d' ' -f1 | sort -u | paste -sd, || true)
  if [ -n "$bad" ]; then log "resuming $bad"; scontrol update nodename="$bad" state=resume || true; fi
  wait_for 30 nodes_ready || { sinfo -N; tail -20 "$LOG/slurmctld.log"; die "nodes not ready"; }
  log "nodes ready: $(sinfo -h -N -p cpu -o '%N=%T' | paste -sd' ') (waited $((SECONDS - t0))s)"
}

start_sshd() {
  local hostkeys=$STATE/sshd name port cert auth
  [ -f "$hostkeys/login_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C hpc-test-login -f "$hostkeys/login_ed25519"
  [ -f "$hostkeys/jump_ed25519" ]  || ssh-keygen -q -t ed25519 -N '' -C hpc-test-jump  -f "$hostkeys/jump_ed25519"
  [ -f "$SSH/id_ed25519" ]         || ssh-keygen -q -t ed25519 -N '' -C hpc-test-client -f "$SSH/id_ed25519"
  chmod 0600 "$SSH/id_ed25519"
  # A host CA, as sites that ship `@cert-authority` lines use: the login node presents a host
  # certificate (no expiry) signed by it, so clients can trust the CA instead of the plain key.
  [ -f "$hostkeys/host_ca" ]       || ssh-keygen -q -t ed25519 -N '' -C hpc-test-host-ca -f "$hostkeys/host_ca"
  if [ ! -s "$hostkeys/login_ed25519-cert.pub" ] || [ "$hostkeys/host_ca" -nt "$hostkeys/login_ed25519-cert.pub" ] \
     || [ "$hostkeys/login_ed25519.pub" -nt "$hostkeys/login_ed25519-cert.pub" ]; then
    ssh-keygen -q -s "$hostkeys/host_ca" -h -I hpc-test-login -n 127.0.0.1,localhost "$hostkeys/login_ed25519.pub"
  fi
  install -d -o "$TEST_USER" -g "$TEST_USER" -m 0700 "/home/$TEST_USER/.ssh"
  install -o "$TEST_USER" -g "$TEST_USER" -m 0600 "$SSH/id_ed25519.pub" "/home/$TEST_USER/.ssh/authorized_keys"
  install -d -m 0755 /run/sshd   # sshd's privilege-separation directory
  setup_otp
  for name in login jump otp; do
    case $name in login) port=$SSH_PORT ;; jump) port=$JUMP_PORT ;; otp) port=$OTP_PORT ;; esac
    # Only the login node has a certificate; the jump host's config stays as it was. The OTP node
    # is another door to the same login node, so it presents the same host key.
    if [ $name = login ]; then cert=$'\n'"HostCertificate $hostkeys/login_ed25519-cert.pub"; else cert=; fi
    if [ $name = otp ]; then
      # Password + one-time code through PAM (setup_otp), nothing else, as VSC-5's port 22.
      auth="HostKey $hostkeys/login_ed25519
PubkeyAuthentication no
PasswordAuthentication no
KbdInteractiveAuthentication yes
UsePAM yes
AuthenticationMethods keyboard-interactive"
    else
      auth="HostKey $hostkeys/${name}_ed25519$cert
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys"
    fi
    # Our own config file (not /etc/ssh/sshd_config), this user only. No AcceptEnv: nothing the
    # client sends may change the job environment. MaxStartups/MaxSessions are raised because
    # parallel tests open many connections at once.
    write_if_changed "$hostkeys/sshd_$name.conf" <<EOF && alive "sshd-$name" && stop_daemon "sshd-$name"
$MARKER
Port $port
ListenAddress $SSH_LISTEN
PidFile $RUN/sshd-$name.pid
AllowUsers $TEST_USER
PermitRootLogin no
$auth
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 64:30:128
MaxSessions 64
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
    alive "sshd-$name" && continue
    /usr/sbin/sshd -t -f "$hostkeys/sshd_$name.conf"
    /usr/sbin/sshd -f "$hostkeys/sshd_$name.conf" -E "$LOG/sshd-$name.log" 9>&-
    wait_for 10 test -s "$RUN/sshd-$name.pid" || { tail -20 "$LOG/sshd-$name.log"; die "sshd $name did not start"; }
    log "sshd $name on $SSH_LISTEN:$port started (pid $(cat "$RUN/sshd-$name.pid"))"
  done
  # Clients pin these keys; the host names are what they connect to (also through the jump host).
  { echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$hostkeys/login_ed25519.pub")"
    echo "[127.0.0.1]:$JUMP_PORT $(cut -d' ' -f1,2 "$hostkeys/jump_ed25519.pub")"
    echo "[127.0.0.1]:$OTP_PORT $(cut -d' ' -f1,2 "$hostkeys/login_ed25519.pub")"; } \
    | write_if_changed "$SSH/known_hosts" || true
  # The CA's public key, for known_hosts files with a `@cert-authority` line (tests write their own).
  cut -d' ' -f1,2 "$hostkeys/host_ca.pub" | write_if_changed "$SSH/host_ca.pub" || true
  # `ssh -J` ignores -o UserKnownHostsFile on the jump hop, hence per-host entries here.
  write_if_changed "$SSH/ssh_config" <<EOF || true
$MARKER
Host hpc-login
  HostName 127.0.0.1
  Port $SSH_PORT
Host hpc-jump
  HostName 127.0.0.1
  Port $JUMP_PORT
Host hpc-login-via-jump
  HostName 127.0.0.1
  Port $SSH_PORT
  ProxyJump hpc-jump
Host hpc-login hpc-jump hpc-login-via-jump
  User $TEST_USER
  IdentityFile $SSH/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $SSH/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
EOF
}

write_env() {
  # 0600: it holds the OTP node's password.
  write_if_changed "$DIR/env.sh" 600 <<EOF || true
$MARKER
export HPC_TEST_CLUSTER_DIR=$DIR
export HPC_TEST_SSH_HOST=127.0.0.1
export HPC_TEST_SSH_PORT=$SSH_PORT
export HPC_TEST_JUMP_PORT=$JUMP_PORT
export HPC_TEST_OTP_PORT=$OTP_PORT
export HPC_TEST_OTP_PASSWORD=$(cat "$OTP/password")
export HPC_TEST_OTP_SECRET=$(cat "$OTP/secret")
export HPC_TEST_USER=$TEST_USER
export HPC_TEST_SSH_KEY=$SSH/id_ed25519
export HPC_TEST_KNOWN_HOSTS=$SSH/known_hosts
export HPC_TEST_SSH_CONFIG=$SSH/ssh_config
export HPC_TEST_NODELIST=$NODES
EOF
  [ -z "$OWNER" ] || chown -R "$OWNER" "$SSH" "$DIR/env.sh"
}

# One job through the whole path a user takes: jump host -> login -> sbatch -> node -> done.
smoke() {
  local t0=$SECONDS out
  out=$(ssh -F "$SSH/ssh_config" hpc-login-via-jump 'set -e
    j=$(sbatch --parsable -t 1 -c 1 --mem=100M -o /dev/null --wrap=true)
    for i in $(seq 1 300); do [ -z "$(squeue -h -j "$j" 2>/dev/null)" ] && break; sleep 0.1; done
    s=$(scontrol show job "$j" | grep -o "JobState=[A-Z_]*")
    echo "job $j as $(id -un): $s"; [ "$s" = JobState=COMPLETED ]') \
    || die "smoke job failed: $out"
  log "smoke (ssh via jump host, sbatch, poll squeue): $out ($((SECONDS - t0))s)"
}

stop_daemon() { # SIGTERM the recorded PID, wait, SIGKILL if it hangs
  local f p prog
  f=$(pidfile "$1"); prog=$(program "$1")
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  if alive "$1"; then
    kill "$p"
    for _ in $(seq 1 150); do running "$p" "$prog" || break; sleep 0.1; done
    running "$p" "$prog" && { log "$1 ($p) ignored SIGTERM -> SIGKILL"; kill -9 "$p"; }
    log "stopped $1 ($p)"
  fi
  rm -f "$f"
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "run as root"
  local t0=$SECONDS
  install_packages
  prepare_dirs
  setup_user
  setup_site_software
  setup_network
  start_munge
  write_slurm_conf
  start_mariadb
  start_slurmdbd
  setup_accounting   # QoS must exist before slurmctld reads AllowQos
  start_slurm
  start_sshd
  write_env
  smoke
  log "up in $((SECONDS - t0))s; source $DIR/env.sh"
}

cmd_down() {
  [ "$(id -u)" = 0 ] || die "run as root"
  # Cancel leftover jobs first, so no slurmstepd outlives its slurmd.
  if alive slurmctld && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    squeue -h -o %i | xargs -r scancel 2>/dev/null || true
    wait_for 15 bash -c '[ -z "$(squeue -h -t PD,R,CG,CF,S 2>/dev/null)" ]' || true
  fi
  local d
  cmd_flaky_squeue off >/dev/null
  for d in $(daemons | tac); do stop_daemon "$d"; done
  # slurmd of a node count that was changed since `up`
  for d in "$RUN"/slurmd-*.pid; do [ -e "$d" ] && stop_daemon "$(basename "$d" .pid)"; done
  restore_pam
  if [ "${1:-}" = --purge ]; then
    local f
    for f in slurm.conf gres.conf cgroup.conf slurmdbd.conf; do
      [ -f "/etc/slurm/$f" ] && grep -qF "$MARKER" "/etc/slurm/$f" && rm -f "/etc/slurm/$f"
    done
    if [ -f "/home/$TEST_USER/.ssh/authorized_keys" ] && [ -f "$SSH/id_ed25519.pub" ] \
       && cmp -s "$SSH/id_ed25519.pub" "/home/$TEST_USER/.ssh/authorized_keys"; then
      rm -f "/home/$TEST_USER/.ssh/authorized_keys"
    fi
    # Only what `up` created, in case a knob points at a directory that holds other things too.
    # The site-like set-up: Python back for the test user, the module path, $DATA/$WORK, the namespace.
    setfacl -x "u:$TEST_USER" "$(readlink -f /usr/bin/python3)" 2>/dev/null || true
    sed -i "\|^$STATE/site/modulefiles\$|d" /etc/environment-modules/modulespath 2>/dev/null || true
    [ -f /etc/profile.d/hpc-test-site.sh ] && grep -qF "$MARKER" /etc/profile.d/hpc-test-site.sh && rm -f /etc/profile.d/hpc-test-site.sh
    ip link del hpc-c0 2>/dev/null || true; ip netns del "$NETNS" 2>/dev/null || true
    [ -s "$OTP/secret" ] && grep -qF "$(cat "$OTP/secret")" "$OATH_USERS" 2>/dev/null && rm -f "$OATH_USERS"
    rm -rf "${STATE:?}"/{run,log,mysql,slurmctld,slurmd,sshd,gpu,site,otp,accounting.applied} "${DIR:?}"/{ssh,env.sh}
    rmdir "$STATE" "$DIR" 2>/dev/null || true
    log "purged $DIR, $STATE and the /etc/slurm configs written here"
  fi
}

cmd_status() {
  local d rc=0
  for d in $(daemons); do
    if alive "$d"; then echo "$d: running (pid $(cat "$(pidfile "$d")"))"; else echo "$d: stopped"; rc=1; fi
  done
  if alive slurmctld; then
    sinfo -s 2>/dev/null || true
    sinfo -N -p cpu -o '%N %T cpus=%c mem=%m gres=%G %E' 2>/dev/null || true
    sacctmgr -n -P list qos format=name,maxwall,maxtresperjob 2>/dev/null | sed 's/^/qos: /' || true
  fi
  return $rc
}

# Every process below a PID (the sessions an sshd forked), deepest first.
descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do descendants "$child"; echo "$child"; done
}

known_daemon() {
  local all; all=$(daemons | paste -sd' ')
  [[ " $all " == *" $1 "* ]] || die "unknown daemon '$1' (one of: $all)"
}

cmd_stop() { # stop <daemon>: what an outage looks like from outside
  local name=${1:?daemon name} pid sessions=''
  known_daemon "$name"
  if [[ $name == sshd-* ]] && alive "$name"; then
    # A rebooting login node takes its open connections with it, not only the listener.
    pid=$(cat "$(pidfile "$name")"); sessions=$(descendants "$pid")
  fi
  stop_daemon "$name"
  # shellcheck disable=SC2086  # a list of PIDs
  [ -z "$sessions" ] || kill -9 $sessions 2>/dev/null || true
  log "$name stopped${sessions:+ with $(wc -w <<< "$sessions") session process(es)}"
}

cmd_start() { # start <daemon>, waiting until it serves again
  local name=${1:?daemon name}
  known_daemon "$name"
  case $name in
    munged) start_munge ;;
    mariadb) start_mariadb ;;
    slurmdbd) start_slurmdbd ;;
    slurmctld|slurmd-*) setup_network; start_slurm ;;
    sshd-*) start_sshd ;;
  esac
}

FLAKY=/usr/local/bin/squeue
cmd_flaky_squeue() { # on|off
  case ${1:-} in
    on)
      # Ahead of /usr/bin in every PATH; only the test user's calls flake, every other one.
      cat > "$FLAKY" <<SHIM
#!/bin/bash
$MARKER
if [ "\$(id -un)" = "$TEST_USER" ]; then
  count=\$(( \$(cat "\$HOME/.hpc-flaky-squeue" 2>/dev/null || echo 0) + 1 ))
  echo "\$count" > "\$HOME/.hpc-flaky-squeue"
  if [ \$(( count % 2 )) = 1 ]; then
    echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2
    exit 1
  fi
fi
exec /usr/bin/squeue "\$@"
SHIM
      chmod 755 "$FLAKY"; log "squeue now fails every other call for $TEST_USER" ;;
    off)
      if [ -f "$FLAKY" ] && grep -qF "$MARKER" "$FLAKY"; then rm -f "$FLAKY"; fi
      log "squeue answers normally" ;;
    *) die "flaky-squeue on|off" ;;
  esac
}

# One `up`/`down` at a time on this machine: /etc/slurm, munged and the ports are shared, and test
# sessions running side by side each call `up` and `down`. Daemons are started with fd 9 closed
# (`9>&-`), or they would hold the lock for as long as they run.
lock() {
  exec 9>>/run/hpc-test-cluster.lock
  flock -n 9 && return 0
  log "waiting for another test-cluster.sh up/down to finish"
  flock -w 600 9 || die "still locked after 600s: /run/hpc-test-cluster.lock"
}

case ${1:-up} in
  up) lock; cmd_up ;;
  down) lock; cmd_down "${2:-}" ;;
  status) cmd_status ;;
  install) install_packages ;;
  stop) cmd_stop "${2:-}" ;;
  start) lock; cmd_start "${2:-}" ;;
  flaky-squeue) cmd_flaky_squeue "${2:-}" ;;
  *) echo "usage: $0 up | down [--purge] | status | install | stop DAEMON | start DAEMON | flaky-squeue on|off" >&2; exit 2 ;;
esac
