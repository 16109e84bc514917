"""benches/profile_report.py, the profile section's report: figures per command from the perf
and callgrind runs (each divided by its own run's commands), ratios to nginx, top functions."""

from bench_report import run_report


def report(tmp_path, rows):
    return run_report("profile_report.py", tmp_path, rows)


def run(target, probe, commands, secs=20.0):
    return {"kind": "profile_run", "probe": probe, "target": target, "round": 0,
            "commands": commands, "secs": secs, "cpu_s": None, "ms_per_cmd_avg": {}}


def perf(target, out_segs, **events):
    return {"kind": "profile_perf", "target": target, "out_segs": out_segs,
            "events": {k.replace("_", "-") if k in ("context_switches", "page_faults",
                                                     "cpu_migrations") else k: v
                       for k, v in events.items()}}


def line_of(out, target):
    return next(line for line in out.splitlines() if line.startswith(target + " "))


def rows_two_targets():
    return [
        run("direct", "perf", 20000), perf("direct", 21400),
        run("proxy", "perf", 10000),
        perf("proxy", 18200, raw_syscalls=15800, epoll_wait=5200, recvfrom=5300, sendto=5300,
             context_switches=5300, cpu_migrations=10, page_faults=0),
        run("proxy", "callgrind", 2000),
        {"kind": "profile_callgrind", "target": "proxy", "instructions": 11_104_000,
         "processes": 1, "top": [["imapgate::proto::framer::Framer::next", 2_000_000]]},
        run("nginx", "perf", 8000),
        perf("nginx", 14000, raw_syscalls=16640, epoll_wait=4240, recvfrom=6480, sendto=6480,
             context_switches=4240, cpu_migrations=8, page_faults=4),
        run("nginx", "callgrind", 1000),
        {"kind": "profile_callgrind", "target": "nginx", "instructions": 446_000, "processes": 3,
         "top": [["ngx_mail_proxy_handler", 100_000]]},
    ]


def test_each_figure_is_divided_by_its_own_runs_commands(tmp_path):
    out = report(tmp_path, rows_two_targets())
    proxy = line_of(out, "proxy").split()
    # callgrind run: 11,104,000 / 2,000; perf run: 15,800 / 10,000 and so on.
    assert proxy[1:5] == ["500", "5552", "12.45x", "1.58"], proxy
    assert proxy[5:10] == ["0.52", "0.53", "0.53", "0.00", "0.00"], proxy
    assert proxy[10:] == ["0.530", "0.001", "0.000", "1.82"], proxy
    nginx = line_of(out, "nginx").split()
    assert nginx[2:4] == ["446", "1.00x"] and nginx[-1] == "1.75", nginx
    assert nginx[6:8] == ["0.81", "0.81"], nginx
    direct = line_of(out, "direct").split()
    assert direct[2] == "-" and direct[-1] == "1.07", direct


def test_top_functions_per_command_and_share(tmp_path):
    out = report(tmp_path, rows_two_targets())
    assert "proxy: 5552 instructions per command in 1 process(es)" in out
    assert "1000   18.0%  imapgate::proto::framer::Framer::next" in out
    assert "nginx: 446 instructions per command in 3 process(es)" in out


def test_no_nginx_no_ratio_and_no_rows_said_so(tmp_path):
    rows = [r for r in rows_two_targets() if r["target"] != "nginx"]
    proxy = line_of(report(tmp_path, rows), "proxy").split()
    assert proxy[2:4] == ["5552", "-"], proxy
    assert "no rows" in report(tmp_path, [run("proxy", "perf", 10)])


def test_the_bench_summary_claims_no_target_for_a_profile_run(tmp_path):
    dst = str(tmp_path / "results.json")
    out = run_report("report.py", tmp_path, rows_two_targets(), dst)
    assert "targets: none in a profile run" in out and "all met" not in out, out
    # A run with anything else in it is judged as before.
    out = run_report("report.py", tmp_path, rows_two_targets() + [
        {"kind": "scale_cpu", "target": "proxy", "round": 0, "commands": 100, "secs": 1.0,
         "cpu_s": 0.01, "cpu_us_per_cmd": 100.0, "ms_per_cmd_avg": {}}], dst)
    assert "targets: " in out and "none in a profile run" not in out, out
