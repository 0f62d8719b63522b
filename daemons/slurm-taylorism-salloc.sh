#!/bin/bash
# Inside an allocation obtained with salloc: the boss on the allocation's first node and one agent per
# node (two job steps), and the driver script here, with TAYLORISM_BOSS set.
# Usage: salloc --nodes=4 daemons/slurm-taylorism-salloc.sh driver.py [args...]
set -euo pipefail
: "${SLURM_JOB_NODELIST:?run this inside an allocation: salloc --nodes=N $0 driver.py}"
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
port=${TAYLORISM_PORT:-5555}
# reports: a port the boss finds free unless TAYLORISM_REPORTS_PORT is set; agents learn it when they register
export TAYLORISM_BOSS="tcp://${head}:${port}"
# tcp is CURVE-authenticated: one key pair in the shared $HOME serves boss, agents and driver
[ -f "${TAYLORISM_KEY_DIR:-$HOME/.taylorism}/id.key_secret" ] || taylorism-ctl keygen

srun --nodes=1 --ntasks=1 --nodelist="$head" --overlap \
    taylorism-boss --control "tcp://0.0.0.0:${port}" --reports "tcp://0.0.0.0:${TAYLORISM_REPORTS_PORT:-*}" &
boss_pid=$!
srun --ntasks-per-node=1 --overlap --kill-on-bad-exit=0 taylorism-agent --boss "$TAYLORISM_BOSS" &
agents_pid=$!
trap 'kill $agents_pid $boss_pid 2>/dev/null; wait' EXIT

python "$@"
