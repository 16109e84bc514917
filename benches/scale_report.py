#!/usr/bin/env python3
"""Prints the tables of scripts/bench's `scale` section (rows of kind scale_*) from a JSON-lines
results file: CPU per command under imaptest's long-session load and the throughput ceiling with
p99 under 10 ms, with ratios against nginx's mail proxy measured in the same run."""

import json
import statistics
import sys


def fmt(v, spec="%.1f"):
    return "-" if v is None else spec % v


def cpu_table(rows):
    rows = [r for r in rows if r.get("kind") == "scale_cpu"]
    if not rows:
        return
    order = []
    agg = {}
    for r in rows:
        t = r["target"]
        if t not in agg:
            order.append(t)
            agg[t] = {"cmds": 0, "secs": 0.0, "cpu": 0.0, "user": 0.0, "sys": 0.0,
                      "switches": 0, "has_cpu": True, "has_split": True, "has_switches": True,
                      "per_run": [], "avg": []}
        a = agg[t]
        a["cmds"] += r["commands"]
        a["secs"] += r["secs"]
        if r.get("cpu_s") is None:
            a["has_cpu"] = False
        else:
            a["cpu"] += r["cpu_s"]
            a["per_run"].append(r["cpu_us_per_cmd"])
        if r.get("cpu_user_s") is None:
            # Results from before the split was recorded.
            a["has_split"] = False
        else:
            a["user"] += r["cpu_user_s"]
            a["sys"] += r["cpu_sys_s"]
        if r.get("switches") is None:
            a["has_switches"] = False
        else:
            a["switches"] += r["switches"]
        avg = r.get("ms_per_cmd_avg") or {}
        if avg:
            a["avg"].append(sum(avg.values()) / len(avg))
    def us(t, part="cpu"):
        a = agg[t]
        ok = a["has_cpu"] and (part == "cpu" or a["has_split"])
        return a[part] * 1e6 / a["cmds"] if ok and a["cmds"] else None
    ng = us("nginx") if "nginx" in agg else None
    direct = agg.get("direct")
    # The same round's nginx run beside each run: the machine's load drifts between rounds, so
    # the median of the per-round ratios is the steadier figure when runs are noisy.
    by_round = {(r["target"], r.get("round")): r.get("cpu_us_per_cmd") for r in rows}
    def paired(t):
        ratios = [v / by_round[("nginx", rnd)] for (tt, rnd), v in by_round.items()
                  if tt == t and v and by_round.get(("nginx", rnd))]
        return statistics.median(ratios) if ratios else None
    print("\nscale: CPU per command under imaptest (long sessions, logout=0), target process CPU / commands")
    print("%-14s %9s %9s %12s %8s %8s %9s %26s %10s %12s %14s" % (
        "target", "commands", "cmds/s", "us CPU/cmd", "user", "kernel", "sw/cmd", "per run",
        "vs nginx", "paired med.", "ms/cmd (avg)"))
    for t in order:
        a = agg[t]
        u = us(t)
        rate = a["cmds"] / a["secs"] if a["secs"] else 0
        ratio = (u / ng) if (u is not None and ng) else None
        runs = ",".join("%.1f" % x for x in a["per_run"]) or "-"
        ms = sum(a["avg"]) / len(a["avg"]) if a["avg"] else None
        sw = a["switches"] / a["cmds"] if a["has_switches"] and a["has_cpu"] and a["cmds"] else None
        print("%-14s %9d %9.0f %12s %8s %8s %9s %26s %10s %12s %14s" % (
            t, a["cmds"], rate, fmt(u), fmt(us(t, "user"), "%.2f"), fmt(us(t, "sys"), "%.2f"),
            fmt(sw, "%.3f"), runs, fmt(ratio, "%.2fx"), fmt(paired(t) if ng else None, "%.2fx"), fmt(ms)))
    print("(vs nginx: all runs' CPU over all runs' commands, the target's figure; paired med.: the "
          "median over rounds of the run's ratio to that round's nginx run; user / kernel: us per "
          "command of each, from the kernel's tick accounting; sw/cmd: context switches of the "
          "target's live threads per command)")
    if direct:
        print("(cmds/s of a proxy vs direct: %s)" % ", ".join(
            "%s %.2f" % (t, (agg[t]["cmds"] / agg[t]["secs"]) / (direct["cmds"] / direct["secs"]))
            for t in order if t != "direct"))


def ceilings(rows):
    """{target: its scale_ceiling row} (benches/client rate's result per target)."""
    return {r["target"]: r for r in rows if r.get("kind") == "scale_ceiling"}


def ceiling_table(rows):
    c = ceilings(rows)
    if not c:
        return
    any_row = next(iter(c.values()))
    trials = [r for r in rows if r.get("kind") == "scale_ceiling_trial"]
    print("\nscale: throughput ceiling, open loop: highest offered commands/s with p99 < %g ms "
          "(latency from the scheduled send), %d connections, %g s x %d reps per step (best rep)"
          % (any_row["p99_bound_ms"], any_row["connections"], any_row["secs_per_trial"],
             any_row["reps"]))
    print("mix: %s; %d trials" % (any_row["mix"], len(trials)))
    print("%-14s %10s %12s %8s %8s %10s %12s %10s %9s" % (
        "target", "ceiling/s", "first fail/s", "p50 us", "p99 us", "proxy us", "Dovecot us",
        "vs direct", "vs nginx"))
    direct = c.get("direct", {}).get("ceiling_per_s")
    ng = c.get("nginx", {}).get("ceiling_per_s")
    for t, r in c.items():
        v = r.get("ceiling_per_s")
        print("%-14s %10s %12s %8s %8s %10s %12s %10s %9s%s" % (
            t, fmt(v, "%.0f"), fmt(r.get("first_fail_per_s"), "%.0f"), fmt(r.get("p50_us"), "%.0f"),
            fmt(r.get("p99_us"), "%.0f"), fmt(r.get("cpu_us_per_cmd")),
            fmt(r.get("upstream_cpu_us_per_cmd")),
            fmt(v / direct if v and direct else None, "%.2fx"),
            fmt(v / ng if v and ng else None, "%.2fx"),
            ("" if r.get("complete", True) else "  (budget ran out)")
            + ("  (%d failed trials disturbed by other load)" % r["disturbed_failures"]
               if r.get("disturbed_failures") else "")))
    print("(CPU per command at the ceiling: the proxy's process tree and Dovecot's. Dovecot, the "
          "proxy and the load client share the two cores: the direct figure is the ceiling "
          "Dovecot sets; first fail/s - ceiling/s is the search's resolution.)")


def tls_table(rows):
    rows = [r for r in rows if r.get("kind") == "scale_tls"]
    if not rows:
        return
    print("\nscale: BODY.PEEK[] of a ~7.2 MB message (client side / upstream side), MB/s and proxy CPU per MB")
    print("%-24s %9s %15s %12s" % ("target", "MB/s", "vs direct TLS", "ms CPU/MB"))
    for r in rows:
        print("%-24s %9.1f %14.2fx %12s" % (r["target"], r["mb_per_s"], r["vs_direct_tls"],
                                          fmt(r.get("cpu_ms_per_mb"), "%.2f")))


def idle_table(rows):
    mem = [r for r in rows if r.get("kind") == "scale_idle_memory"]
    lat = {r["target"]: r for r in rows if r.get("kind") == "scale_idle_latency"}
    for m in mem:
        print("\nscale: %d idle TLS sessions (%d opened, %d failed) through one imapgate: "
              "proxy VmRSS %.2f KiB/session (target <= 12), Pss %.2f, Anonymous %.2f; "
              "opened in %.1f s" % (m["sessions"], m["opened"], m["failed"],
                                    m["per_session_vm_rss_kib"], m["per_session_pss_kib"],
                                    m["per_session_anonymous_kib"], m["open_secs"]))
    if lat:
        # The reference: the slower of the two runs without idle sessions (before and after:
        # the second is the drift control); the target is p99 during <= 2x it.
        refs = [lat[k]["p99_us"] for k in ("before", "after") if k in lat]
        ref = max(refs) if refs else 0
        print("active session, UID FETCH n (FLAGS) over TLS:   median      p99   p99/no-idle (target <= 2)")
        for k in ("before", "during", "after"):
            r = lat.get(k)
            if r:
                print("  %-44s %7.0f us %7.0f us %7.2fx" % (
                    k + (" (idle sessions open)" if k == "during" else ""), r["median_us"],
                    r["p99_us"], r["p99_us"] / ref if ref else 0))
        if refs and "during" in lat:
            print("  (p99 during / before %.2fx, / after %.2fx)" % (
                lat["during"]["p99_us"] / lat["before"]["p99_us"],
                lat["during"]["p99_us"] / lat["after"]["p99_us"]))


def other_rows(rows):
    ceiling_table(rows)
    tls_table(rows)
    idle_table(rows)


def cpu_per_cmd(rows, target):
    runs = [r for r in rows if r.get("kind") == "scale_cpu" and r["target"] == target
            and r.get("cpu_s") is not None]
    cmds = sum(r["commands"] for r in runs)
    return sum(r["cpu_s"] for r in runs) * 1e6 / cmds if cmds else None


def verdict(rows):
    """Issue 9's targets as measured in this run: [(target, met, detail)]; empty without the
    scale section's rows."""
    out = []
    ng = cpu_per_cmd(rows, "nginx")
    for t in ("proxy", "proxy_default"):
        us = cpu_per_cmd(rows, t)
        if us and ng:
            out.append(("CPU/command %s <= nginx" % t, us <= ng, "%.2fx" % (us / ng)))
    c = ceilings(rows)
    ng = c.get("nginx", {}).get("ceiling_per_s")
    for t in ("proxy", "proxy_default"):
        v = c.get(t, {}).get("ceiling_per_s")
        if ng and t in c:
            out.append(("throughput ceiling %s >= nginx's" % t, bool(v) and v >= ng,
                        "%.2fx" % ((v or 0) / ng)))
    for m in (r for r in rows if r.get("kind") == "scale_idle_memory"):
        kib = m["per_session_vm_rss_kib"]
        out.append(("idle TLS session <= 12 KiB", kib <= 12, "%.2f KiB" % kib))
    lat = {r["target"]: r for r in rows if r.get("kind") == "scale_idle_latency"}
    refs = [lat[k]["p99_us"] for k in ("before", "after") if k in lat]
    if refs and "during" in lat:
        x = lat["during"]["p99_us"] / max(refs)
        out.append(("active p99 with idle sessions <= 2x", x <= 2, "%.2fx" % x))
    for r in (r for r in rows if r.get("kind") == "scale_tls" and r["target"] == "proxy_tls_tls"):
        out.append(("TLS both sides >= direct TLS", r["vs_direct_tls"] >= 1.0,
                    "%.2fx" % r["vs_direct_tls"]))
    return out


def wake_cost(rows):
    """The machine's charge for a sleep and wake-up (`imapgate-bench wake-cost`), which every
    target pays for each message that finds it asleep."""
    w = {r["placement"]: r for r in rows if r.get("kind") == "wake_cost"}
    if "same_cpu" in w and "two_cpus" in w:
        print("\nwake-up cost on this machine (two threads passing a byte over pipes): %.1f us CPU "
              "per wake on one CPU, %.1f us when it reaches an idle other CPU (round trip %.1f / "
              "%.1f us wall)" % (w["same_cpu"]["cpu_us_per_wake"], w["two_cpus"]["cpu_us_per_wake"],
                                 w["same_cpu"]["wall_us_per_round_trip"],
                                 w["two_cpus"]["wall_us_per_round_trip"]))


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    wake_cost(rows)
    cpu_table(rows)
    other_rows(rows)
    v = verdict(rows)
    if v:
        print("\nscale targets: %s" % ("all met" if all(m for _, m, _ in v) else "NOT all met"))
        for name, met, detail in v:
            print("  %-40s %-8s %s" % (name, detail, "ok" if met else "NO"))


if __name__ == "__main__":
    main()
