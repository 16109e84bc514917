# shellcheck shell=bash disable=SC2153,SC2034
# scripts/bench-profile.sh: the `profile` section of scripts/bench (BENCH_ONLY=profile only; not
# part of a full run: it is a diagnosis, slow under valgrind, and has no target of its own).
# Sourced by scripts/bench after scripts/bench-scale.sh, whose helpers it uses (scale_deps,
# scale_prepare, imaptest_run, scale_target_start/stop, T_ADDR, T_PID).
#
# Where a proxy's CPU per command goes under the scale section's load (issue 9: "profile first",
# and the profile that shows why a target is out of reach). For each target of
# BENCH_PROFILE_TARGETS (default "proxy proxy_default relay nginx"; the scale section's names,
# `baseline` with BENCH_SCALE_BASELINE=PATH), two imaptest runs (BENCH_PROFILE_CLIENTS (20)
# clients, logout=0, BENCH_PROFILE_SECS (20) s each) on a fresh process of the target:
#   perf       `perf stat` on the target's processes (every thread): system calls in all and by
#              name (epoll, reads, writes, futex, memory mapping), context switches and CPU
#              migrations, page faults; and TCP segments sent (/proc/net/snmp OutSegs, the
#              whole machine: the target, imaptest and Dovecot). `direct` (Dovecot's own port)
#              is run too, for its segments only: the count a proxy adds to.
#   callgrind  the target under `valgrind --tool=callgrind --instr-atstart=no`, instrumentation
#              (and with it collection) switched on after start-up (`callgrind_control -i on`)
#              and dumped once imaptest has exited and its sessions have closed: user-space
#              instructions, which do not depend on what else the machine runs, and the
#              functions that execute them
#              (BENCH_PROFILE_TOP (15) by self cost; the whole dumps are kept in the work dir with
#              BENCH_KEEP=1, for callgrind_annotate or kcachegrind).
# Everything is divided by the commands imaptest completed in that run. Then, unless
# BENCH_PROFILE_SKIP_WAKE=1, the wake-up probe (`imapgate-bench wake-cost`): what a sleep and
# wake-up is charged here on one CPU and across two. valgrind and perf (linux-perf) are installed
# with apt-get when missing (as root). benches/profile_report.py prints the tables.

PROFILE_CLIENTS=${BENCH_PROFILE_CLIENTS:-20}
PROFILE_SECS=${BENCH_PROFILE_SECS:-20}
PROFILE_TARGETS=${BENCH_PROFILE_TARGETS:-proxy proxy_default relay nginx}

# The `perf stat` events (comma-separated, as -e takes them).
PROFILE_EVENTS=raw_syscalls:sys_enter,context-switches,cpu-migrations,page-faults
for _e in epoll_wait epoll_pwait epoll_ctl recvfrom read readv recvmsg sendto write writev \
    sendmsg futex mmap munmap madvise brk setsockopt; do
    PROFILE_EVENTS+=,syscalls:sys_enter_$_e
done
unset _e

profile_deps() {
    local missing=()
    command -v valgrind >/dev/null || missing+=(valgrind)
    command -v perf >/dev/null || missing+=(linux-perf)
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || { log "profile: needs apt-get install ${missing[*]}"; exit 1; }
        log "profile: installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive run apt-get install -y -q "${missing[@]}" >"$WORK/apt-profile.log" 2>&1
    fi
    perf stat -e "$PROFILE_EVENTS" -- true >/dev/null 2>&1 ||
        { log "profile: perf cannot count $PROFILE_EVENTS here (root and tracefs needed)"; exit 1; }
}

# tree_pids PID: PID and its descendants, comma-separated (nginx's master and workers).
tree_pids() {
    local todo=("$1") out=() p
    while ((${#todo[@]})); do
        p=${todo[0]}
        todo=("${todo[@]:1}")
        out+=("$p")
        # shellcheck disable=SC2207
        todo+=($(pgrep -P "$p" || true))
    done
    local IFS=,
    echo "${out[*]}"
}

out_segs() { awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ {print $12}' /proc/net/snmp; }

# perf_control CMD: sends `perf stat` (started with --control) CMD (enable, disable) and waits
# for its ack, so the counting window is exactly the run's.
perf_control() {
    local reply=
    echo "$1" >&"$PERF_CTL"
    read -r -t 10 reply <&"$PERF_ACK" || true
    [[ $reply == ack ]] || { log "profile: perf stat did not acknowledge '$1'"; exit 1; }
}

# profile_perf NAME: one imaptest run on a fresh NAME under `perf stat`; appends a
# profile_perf row.
profile_perf() {
    local t=$1 perf_pid="" segs0 segs1 out=$WORK/perf-$1.csv
    scale_target_start "$t"
    if [[ -n ${T_PID[$t]} ]]; then
        rm -f "$WORK/perf.ctl" "$WORK/perf.ack"
        mkfifo "$WORK/perf.ctl" "$WORK/perf.ack"
        # Counting starts disabled (-D -1) and is switched on and off around the run.
        perf stat -x, -o "$out" -e "$PROFILE_EVENTS" -D -1 \
            --control "fifo:$WORK/perf.ctl,$WORK/perf.ack" -p "$(tree_pids "${T_PID[$t]}")" &
        perf_pid=$!
        exec {PERF_CTL}>"$WORK/perf.ctl" {PERF_ACK}<"$WORK/perf.ack"
        perf_control enable
    fi
    segs0=$(out_segs)
    SCALE_KIND=profile_run SCALE_PROBE=perf imaptest_run "$t" "${T_ADDR[$t]}" ""
    segs1=$(out_segs)
    if [[ -n $perf_pid ]]; then
        perf_control disable
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        exec {PERF_CTL}>&- {PERF_ACK}<&-
    fi
    scale_target_stop "$t"
    python3 - "$t" "$out" "$segs0" "$segs1" >>"$RESULTS" <<'PY'
import json, sys
name, path, s0, s1 = sys.argv[1:]
events = {}
try:
    lines = open(path).read().splitlines()
except OSError:
    lines = []
for line in lines:
    f = line.split(",")
    if len(f) >= 3 and f[0].strip().isdigit():
        # syscalls:sys_enter_NAME counts NAME; raw_syscalls:sys_enter counts them all.
        event = f[2]
        if event.startswith("syscalls:sys_enter_"):
            event = event[len("syscalls:sys_enter_"):]
        elif event.startswith("raw_syscalls:"):
            event = "raw_syscalls"
        events[event] = int(f[0])
print(json.dumps({"kind": "profile_perf", "target": name, "events": events,
                  "out_segs": int(s1) - int(s0)}))
PY
}

# cg_control NAME PID ARGS...: callgrind_control ARGS on PID, a process of target NAME (it exits
# 0 even when it reached nothing, so its "OK." is what tells).
cg_control() {
    local t=$1 p=$2 out
    shift 2
    out=$(callgrind_control "$@" "$p" 2>&1) || true
    [[ $out == *OK.* ]] || { log "profile: callgrind_control $* did not reach $t's process $p: $out"; exit 1; }
}

# profile_callgrind NAME: one imaptest run on a fresh NAME under callgrind; appends a
# profile_callgrind row (instructions in all, and the top functions by self cost).
profile_callgrind() {
    local t=$1 pids p
    [[ $t == direct ]] && return 0
    rm -f "$WORK"/cg."$t".*
    WRAP=(valgrind --tool=callgrind --instr-atstart=no --trace-children=yes
        "--callgrind-out-file=$WORK/cg.$t.%p")
    START_TRIES=600
    scale_target_start "$t"
    WRAP=()
    START_TRIES=100
    # Start-up is not what is measured: instrumentation starts now, in every process of the
    # target.
    pids=$(tree_pids "${T_PID[$t]}")
    for p in ${pids//,/ }; do
        cg_control "$t" "$p" -i on
    done
    SCALE_KIND=profile_run SCALE_PROBE=callgrind imaptest_run "$t" "${T_ADDR[$t]}" ""
    pids=$(tree_pids "${T_PID[$t]}")
    for p in ${pids//,/ }; do
        cg_control "$t" "$p" -d
    done
    scale_target_stop "$t"
    local dumps=("$WORK"/cg."$t".*.1)
    [[ -e ${dumps[0]} ]] || { log "profile: callgrind wrote no dump for $t"; exit 1; }
    local f
    for f in "${dumps[@]}"; do
        callgrind_annotate --inclusive=no --auto=no --threshold=100 "$f" >"$f.txt" 2>/dev/null || true
    done
    python3 - "$t" "${BENCH_PROFILE_TOP:-15}" "${dumps[@]}" >>"$RESULTS" <<'PY'
import json, re, sys
name, top, dumps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
total, funcs = 0, {}
for path in dumps:
    for line in open(path, errors="replace"):
        if line.startswith(("summary:", "totals:")):
            total += int(line.split()[1])
            break
    try:
        text = open(path + ".txt", errors="replace").read()
    except OSError:
        continue
    # The function table: "1,234,567 ( 5.12%)  file:function [object]", self cost. With debug
    # information a function is listed once per source file inlined into it: summed here.
    table = text.split("file:function", 1)[-1].split("\n\n", 1)[0]
    for m in re.finditer(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)\s*$", table, re.M):
        where = re.sub(r" \[[^\]]*\]$", "", m.group(2))
        func = where.split(":", 1)[1] if ":" in where else where
        funcs[func] = funcs.get(func, 0) + int(m.group(1).replace(",", ""))
print(json.dumps({"kind": "profile_callgrind", "target": name, "instructions": total,
                  "processes": len(dumps),
                  "top": sorted(funcs.items(), key=lambda kv: -kv[1])[:top]}))
PY
}

profile_section() {
    scale_deps
    profile_deps
    scale_prepare
    SCALE_CLIENTS=$PROFILE_CLIENTS SCALE_SECS=$PROFILE_SECS SCALE_ROUND=0
    local t
    for t in $PROFILE_TARGETS; do scale_target_known "$t" BENCH_PROFILE_TARGETS; done
    log "profile: imaptest $PROFILE_CLIENTS clients, logout=0, $PROFILE_SECS s per run; targets: direct $PROFILE_TARGETS"
    profile_perf direct
    for t in $PROFILE_TARGETS; do
        profile_perf "$t"
        profile_callgrind "$t"
    done
    [[ -z ${BENCH_PROFILE_SKIP_WAKE:-} ]] && run "$CLIENT" wake-cost >>"$RESULTS"
    python3 "$ROOT/benches/profile_report.py" "$RESULTS"
}
