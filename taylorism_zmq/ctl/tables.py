"""What taylorism-ctl prints of a status: the hosts table, the jobs table."""

from __future__ import annotations

import time


def format_pair(pair: dict) -> str:
    """The pair line of taylorism-ctl status: which boss is active, the standby's sync and lag, the epoch, the
    last failover."""
    line = f"{pair['role']} boss of a pair (epoch {pair['epoch']}; peer {pair['peer']}, {pair['peer_role']})"
    standby = pair.get("standby")
    if pair["role"] == "active":
        line += (f"; standby {'in sync' if standby['in_sync'] else 'catching up'}, lag {standby['lag']:.3f}s, "
                 f"{standby['unacked_events']} event(s) unacknowledged" if standby else "; no standby in sync")
    else:
        line += f"; {'in sync' if standby and standby['in_sync'] else 'not in sync'}"
    last = pair.get("last_failover")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["time"])) if last else ""
    return line + (f"; last failover {when} ({last['why']})" if last else "; no failover")


def format_hosts(status: dict, address: str) -> str:
    """The hosts table of taylorism-ctl status: one row per agent (two agents of one host told apart)."""
    hosts = sorted(status["hosts"], key=lambda h: (h["host"], h["agent"]))
    lines = [f"boss {status['boss']} at {address}: {len(hosts)} agent(s) on {len({h['host'] for h in hosts})} "
             "host(s)",
             *([format_pair(status["pair"])] if status.get("pair") else []),
             f"{'HOST':16} {'AGENT':32} {'SLOTS USED':>10} {'LOAD':>6} {'CPU%':>5} {'MEM FREE':>10} {'DONE':>7} "
             f"{'SEEN':>6}  STATE"]
    for h in hosts:
        load = f"{h['load'][0]:.2f}" if h["load"] else "-"
        state = "draining" if h["draining"] else "ok"
        lines.append(f"{h['host'][:16]:16} {h['agent'][:32]:32} {h['running']:>4}/{h['slots']:<5} {load:>6} "
                     f"{h['cpu']:>5.0f} {h['mem_avail']:>7.0f}MiB {h['done']:>7} {h['last_seen']:>5.1f}s  {state}")
    return "\n".join(lines)


def format_jobs(status: dict) -> str:
    """The jobs table of taylorism-ctl status and jobs."""
    lines = [f"{'JOB':18} {'NAME':20} {'CLIENT':26} {'DONE':>6} {'RUN':>5} {'PEND':>6} {'FAIL':>5} {'AGE':>8}  "
             "RUNNING ON"]
    for j in status["jobs"]:
        on = " ".join(f"{aid}:{n}" for aid, n in sorted((j.get("agents") or {}).items()))
        lines.append(f"{j['job']:18} {j['name'][:20]:20} {j['client'][:26]:26} {j['done']:>6} {j['running']:>5} "
                     f"{j['pending']:>6} {j['failed']:>5} {j['age']:>7.1f}s  {on or '-'}".rstrip())
    if not status["jobs"]:
        lines.append("(no jobs)")
    others = status.get("other_jobs") or {}
    if others.get("jobs"):
        lines.append(f"and {others['jobs']} job(s) of other users: {others.get('running', 0)} task(s) running, "
                     f"{others.get('pending', 0)} pending")
    return "\n".join(lines)
