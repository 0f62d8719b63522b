#!/bin/bash
# Inside an allocation obtained with salloc: the boss on the allocation's first node and one agent per
# node (two job steps; each agent's slots: Slurm's CPUs on its node), then, once every agent has
# registered, the driver script here, with TAYLORISM_BOSS set.
# Usage: salloc --nodes=4 daemons/slurm-taylorism-salloc.sh driver.py [args...]
set -euo pipefail
: "${SLURM_JOB_NODELIST:?run this inside an allocation: salloc --nodes=N $0 driver.py}"
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# the boss reads TAYLORISM_PORT (control, default 5555) and TAYLORISM_REPORTS_PORT (reports; here 0, a free
# port, unless set: agents learn it when they register)
export TAYLORISM_PORT=${TAYLORISM_PORT:-5555} TAYLORISM_REPORTS_PORT=${TAYLORISM_REPORTS_PORT:-0}
export TAYLORISM_BOSS="tcp://${head}:${TAYLORISM_PORT}"
# tcp is CURVE-authenticated: one key pair in the shared $HOME serves boss, agents and driver
[ -f "${TAYLORISM_KEY_DIR:-$HOME/.taylorism}/id.key_secret" ] || taylorism-ctl keygen

srun --nodes=1 --ntasks=1 --nodelist="$head" --overlap taylorism-boss --control "tcp://0.0.0.0" --port "$TAYLORISM_PORT" &
boss_pid=$!
srun --ntasks-per-node=1 --overlap --kill-on-bad-exit=0 taylorism-agent --boss "$TAYLORISM_BOSS" &
agents_pid=$!
trap 'kill $agents_pid $boss_pid 2>/dev/null; wait' EXIT

taylorism-ctl wait --agents "$SLURM_JOB_NUM_NODES" --timeout 120
python "$@"
