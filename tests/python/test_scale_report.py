"""benches/scale_report.py, the scale section's report: CPU per command with context switches,
the wake-up probe, and result files written before those were recorded."""

from bench_report import run_report


def report(tmp_path, rows):
    return run_report("scale_report.py", tmp_path, rows)


def cpu_row(target, rnd, commands, cpu_s, switches=None):
    row = {"kind": "scale_cpu", "target": target, "round": rnd, "commands": commands,
           "secs": 10.0, "cpu_s": cpu_s, "cpu_user_s": cpu_s / 4, "cpu_sys_s": cpu_s * 3 / 4,
           "cpu_us_per_cmd": cpu_s * 1e6 / commands, "ms_per_cmd_avg": {}}
    if switches is not None:
        row["switches"] = switches
    return row


def line_of(out, target):
    return next(line for line in out.splitlines() if line.startswith(target + " "))


def test_switches_per_command_and_ratio_against_nginx(tmp_path):
    out = report(tmp_path, [
        cpu_row("proxy", 0, 10000, 0.2, switches=5300),
        cpu_row("nginx", 0, 10000, 0.16, switches=5000),
        cpu_row("proxy", 1, 10000, 0.2, switches=5300),
        cpu_row("nginx", 1, 10000, 0.16, switches=5000),
    ])
    proxy = line_of(out, "proxy").split()
    assert "0.530" in proxy and "20.0" in proxy and "1.25x" in proxy, proxy
    assert "0.500" in line_of(out, "nginx").split()
    assert "CPU/command proxy <= nginx" in out and "NO" in out


def test_results_without_switches_still_report(tmp_path):
    out = report(tmp_path, [cpu_row("proxy", 0, 10000, 0.15), cpu_row("nginx", 0, 10000, 0.16)])
    proxy = line_of(out, "proxy").split()
    assert proxy[6] == "-", proxy
    assert "0.94x" in proxy


def test_wake_cost_line(tmp_path):
    out = report(tmp_path, [
        {"kind": "wake_cost", "placement": "same_cpu", "round_trips": 100,
         "wall_us_per_round_trip": 2.7, "cpu_us_per_wake": 1.3},
        {"kind": "wake_cost", "placement": "two_cpus", "round_trips": 100,
         "wall_us_per_round_trip": 80.0, "cpu_us_per_wake": 32.5},
    ])
    assert "1.3 us CPU per wake on one CPU, 32.5 us" in out
