#!/usr/bin/env python3
"""Prints the tables of scripts/bench's `profile` section (scripts/bench-profile.sh) from a
JSON-lines results file: per command, each target's user-space instructions (callgrind), system
calls by name, context switches and page faults (perf stat) and the TCP segments sent, then the
functions that execute the instructions. Every figure is divided by the commands imaptest
completed in the run that measured it (the perf run and the callgrind run are separate)."""

import json
import sys

import scale_report

# The report's system-call columns: (heading, perf event names summed into it).
SYSCALL_COLUMNS = (
    ("epoll", ("epoll_wait", "epoll_pwait")),
    ("reads", ("recvfrom", "read", "readv", "recvmsg")),
    ("writes", ("sendto", "write", "writev", "sendmsg")),
    ("futex", ("futex",)),
    ("mm", ("mmap", "munmap", "madvise", "brk")),
)


def run_of(rows, target, probe):
    """The imaptest run of TARGET that PROBE measured (the last one), or None."""
    runs = [r for r in rows if r.get("kind") == "profile_run" and r.get("target") == target
            and r.get("probe") == probe]
    return runs[-1] if runs else None


def commands(rows, target, probe):
    """Commands completed in the run of TARGET measured by PROBE."""
    run = run_of(rows, target, probe)
    return run["commands"] if run else None


def per(v, n):
    return None if v is None or not n else v / n


def targets(rows):
    order = []
    for r in rows:
        if r.get("kind") in ("profile_perf", "profile_callgrind") and r["target"] not in order:
            order.append(r["target"])
    return order


def table(rows):
    """One line per target: the figures per command."""
    perf = {r["target"]: r for r in rows if r.get("kind") == "profile_perf"}
    cg = {r["target"]: r for r in rows if r.get("kind") == "profile_callgrind"}
    order = targets(rows)
    if not order:
        print("profile: no rows (was the section run? BENCH_ONLY=profile)")
        return
    instr = {t: per(cg[t]["instructions"], commands(rows, t, "callgrind")) for t in cg}
    ref = instr.get("nginx")
    heads = ["target", "cmds/s", "instr/cmd", "vs nginx", "syscalls"] + \
        [h for h, _ in SYSCALL_COLUMNS] + ["switches", "migr", "faults", "segs"]
    print("\nprofile: per command (callgrind: user-space instructions after start-up; perf stat: "
          "the target's threads; segs: TCP segments sent by the whole machine)")
    print(" ".join("%-14s" % h if i == 0 else "%9s" % h for i, h in enumerate(heads)))
    for t in order:
        p = perf.get(t)
        n = commands(rows, t, "perf")
        ev = p["events"] if p else {}
        run = run_of(rows, t, "perf")
        rate = n / run["secs"] if run and run.get("secs") else None
        i = instr.get(t)
        cells = [scale_report.fmt(rate, "%.0f"), scale_report.fmt(i, "%.0f"),
                 scale_report.fmt(per(i, ref) if ref else None, "%.2fx")]
        if ev:
            cells.append(scale_report.fmt(per(ev.get("raw_syscalls"), n), "%.2f"))
            for _, names in SYSCALL_COLUMNS:
                cells.append(scale_report.fmt(per(sum(ev.get(e, 0) for e in names), n), "%.2f"))
            for e in ("context-switches", "cpu-migrations", "page-faults"):
                cells.append(scale_report.fmt(per(ev.get(e), n), "%.3f"))
        else:
            cells += ["-"] * (1 + len(SYSCALL_COLUMNS) + 3)
        cells.append(scale_report.fmt(per(p["out_segs"], n) if p else None, "%.2f"))
        print("%-14s " % t + " ".join("%9s" % c for c in cells))


def top_functions(rows):
    """Each target's functions by self instructions per command."""
    for r in (r for r in rows if r.get("kind") == "profile_callgrind"):
        n = commands(rows, r["target"], "callgrind")
        if not n:
            continue
        print("\n%s: %.0f instructions per command in %d process(es); by function (self):"
              % (r["target"], r["instructions"] / n, r.get("processes", 1)))
        for func, ir in r["top"]:
            print("  %8.0f  %5.1f%%  %s" % (ir / n, 100.0 * ir / r["instructions"] if
                                           r["instructions"] else 0.0, func[:110]))


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    table(rows)
    top_functions(rows)
    scale_report.wake_cost(rows)


if __name__ == "__main__":
    main()
