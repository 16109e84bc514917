# shellcheck shell=bash disable=SC2153,SC2034
# scripts/bench-scale.sh: the `scale` section of scripts/bench (BENCH_ONLY=scale, or part of a
# full run unless BENCH_SKIP_SCALE=1). Sourced by scripts/bench after Dovecot is up: it uses
# log, run, start_proxy, stop_proxy, PROXY_PIDS, WORK, RESULTS, D_IMAP, D_HOST, IMAPGATE, ROOT.
#
# First the machine's wake-up cost (`imapgate-bench wake-cost`: CPU charged per sleep and
# wake-up, on one CPU and across two), the floor under every target's CPU per message. Then
# CPU per command under imaptest's long-session load (issue 9): imaptest (built from source by
# scripts/build-imaptest.sh) with BENCH_SCALE_CLIENTS (50) clients, logout=0, mailbox ImapTest, for
# BENCH_SCALE_SECS (12) seconds, against each target in turn, BENCH_SCALE_ROUNDS (5) rounds with
# the order rotated each round (more, shorter rounds: runs of the same target here differ by
# 10-15% as the machine's load drifts, and the report also gives the median over rounds of each
# run's ratio to the same round's nginx run):
#   direct        Dovecot's imap port (no proxy: the reference for commands/s and latency)
#   proxy         imapgate --cache-size 0 (the pure relay)
#   proxy_default imapgate with the default config (FETCH cache on)
#   proxy_1thread imapgate --cache-size 0 with one session thread ([runtime] session_threads = 1)
#   nginx         nginx mail proxy (Debian nginx-light + libnginx-mod-mail), auth_http answered
#                 by the same nginx (Auth-Status OK, Auth-Server/Auth-Port = Dovecot)
#   socat         socat TCP-LISTEN,fork,nodelay -> TCP,nodelay (the relay floor; a process per
#                 connection)
#   relay         benches/client relay: a parse-free tokio relay (copy_bidirectional), what a
#                 relay on imapgate's runtime pays before it looks at a byte
#   baseline      with BENCH_SCALE_BASELINE=PATH only: that imapgate binary with the default
#                 config (an A/B of two builds in one run, interleaved like the rest)
# BENCH_SCALE_TARGETS="proxy_default baseline nginx" runs only those targets. Each run gets a
# fresh process of its target (BENCH_SCALE_FRESH=0: one process per target for all rounds): two
# processes of the same binary, each kept for all rounds, differed by 10% in one run here (paired
# median 0.89), a layout or placement effect a process keeps for its life; fresh processes draw it
# anew each run, so the mean over rounds is fair.
# Per run: commands completed (imaptest's Totals), the target's CPU time (utime+stime of its
# process tree plus the reaped children's cutime+cstime, /proc/PID/stat, before and after the
# run, after imaptest has exited and its sessions have closed) / commands, split into user and
# kernel time (the kernel's tick accounting: a split, not a second measurement), and imaptest's
# own ms/cmd averages. Every target talks plaintext to the same Dovecot. nginx and socat are
# installed with apt-get when missing (as root).
# Then the throughput ceiling with p99 < 10 ms (ceiling_section, BENCH_SCALE_SKIP_CEILING=1 skips
# it), TLS both sides (tls_section) and 10,000 idle sessions (idle_section).

SCALE_SECS=${BENCH_SCALE_SECS:-12}
SCALE_CLIENTS=${BENCH_SCALE_CLIENTS:-50}
SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-5}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# tree_cpu_ticks PID [split]: utime+stime of PID and all its descendants, plus PID's
# cutime+cstime; with `split`, the user and the kernel part and the context switches (voluntary
# and not) of the tree's live threads ("USER SYS SWITCHES": a reaped child's switches are lost,
# so socat's are only those of its live children).
tree_cpu_ticks() {
    python3 - "$1" "${2:-}" <<'PY'
import os, sys
root = int(sys.argv[1])
def stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()
kids = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            kids.setdefault(int(stat(int(p))[1]), []).append(int(p))
        except (OSError, IndexError):
            pass
def switches(pid):
    n = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n
user, kernel, switched, todo, first = 0, 0, 0, [root], True
while todo:
    pid = todo.pop()
    try:
        f = stat(pid)
    except OSError:
        continue
    switched += switches(pid)
    user += int(f[11])  # utime
    kernel += int(f[12])  # stime
    if first:
        user += int(f[13])  # cutime and cstime of reaped children
        kernel += int(f[14])
        first = False
    todo.extend(kids.get(pid, []))
print("%d %d %d" % (user, kernel, switched) if sys.argv[2] == "split" else user + kernel)
PY
}

scale_deps() {
    local missing=()
    [[ -e /usr/lib/nginx/modules/ngx_mail_module.so ]] || missing+=(nginx-light libnginx-mod-mail)
    command -v socat >/dev/null || missing+=(socat)
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || { log "scale: needs apt-get install ${missing[*]}"; exit 1; }
        log "scale: installing ${missing[*]}"
        # policy-rc.d exits 101 here, so the package's own nginx is not started.
        DEBIAN_FRONTEND=noninteractive run apt-get install -y -q "${missing[@]}" >"$WORK/apt.log" 2>&1
    fi
    IMAPTEST=$("$ROOT/scripts/build-imaptest.sh")
}

# An mbox for imaptest's APPENDs: 200 text messages of 1-8 KB (deterministic).
scale_mbox() {
    python3 - "$1" <<'PY'
import random, sys
r = random.Random(9)
words = "alpha beta gamma delta imap proxy mailbox message server client fetch store search header body latency".split()
with open(sys.argv[1], "w") as f:
    for i in range(200):
        f.write("From bench@example.com Fri Mar  1 09:%02d:00 2024\n" % (i % 60))
        f.write("From: Sender %d <s%d@example.com>\nTo: alice@example.com\nSubject: bench %d %s\n"
                "Date: Fri, 1 Mar 2024 09:%02d:00 +0000\nMessage-ID: <bench-%d@example.com>\n"
                "Content-Type: text/plain; charset=us-ascii\n\n"
                % (i, i, i, " ".join(r.choice(words) for _ in range(4)), i % 60, i))
        for _ in range(r.randint(10, 120)):
            f.write(" ".join(r.choice(words) for _ in range(r.randint(5, 12))) + "\n")
        f.write("\n")
PY
}

# start_nginx UPSTREAM_HOST UPSTREAM_PORT : sets NG_PID, NG_ADDR
start_nginx() {
    local dir=$WORK/nginx auth_port mail_port
    mkdir -p "$dir/tmp"
    auth_port=$(free_port)
    mail_port=$(free_port)
    cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes auto;
user root;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$auth_port;
        location = /auth {
            add_header Auth-Status OK;
            add_header Auth-Server $1;
            add_header Auth-Port $2;
            return 204;
        }
    }
}
mail {
    auth_http 127.0.0.1:$auth_port/auth;
    proxy_pass_error_message on;
    imap_capabilities IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE;
    server {
        listen 127.0.0.1:$mail_port;
        protocol imap;
    }
}
CONF
    "${WRAP[@]}" nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' >"$dir/out.log" 2>&1 &
    NG_PID=$!
    PROXY_PIDS+=("$NG_PID")
    NG_ADDR=127.0.0.1:$mail_port
    for _ in $(seq "$START_TRIES"); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "$mail_port" 2>/dev/null && return 0
        kill -0 "$NG_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "nginx did not start:"; cat "$dir/out.log" "$dir/error.log" >&2 2>/dev/null; exit 1
}

# start_socat UPSTREAM : sets SO_PID, SO_ADDR
start_socat() {
    local port
    port=$(free_port)
    socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,nodelay,backlog=1024" "TCP:$1,nodelay" \
        >"$WORK/socat.log" 2>&1 &
    SO_PID=$!
    PROXY_PIDS+=("$SO_PID")
    SO_ADDR=127.0.0.1:$port
    sleep 0.3
    kill -0 "$SO_PID" 2>/dev/null || { log "socat did not start"; exit 1; }
}

# imaptest_run NAME HOST:PORT PID|"" : one imaptest run; appends a JSON row to $RESULTS, of kind
# $SCALE_KIND (scale_cpu) with $SCALE_PROBE (the profile section's runs) as its "probe"
imaptest_run() {
    local name=$1 addr=$2 pid=$3 before="0 0 0" after="0 0 0"
    local out=$WORK/imaptest-$1-$SCALE_ROUND${SCALE_PROBE:+-$SCALE_PROBE}.txt
    [[ -n $pid ]] && before=$(tree_cpu_ticks "$pid" split)
    local t0 t1
    t0=$(date +%s.%N)
    run "$IMAPTEST" "host=${addr%:*}" "port=${addr##*:}" "user=$USER_NAME" "pass=$USER_PASS" \
        "mbox=$WORK/scale.mbox" box=ImapTest "clients=$SCALE_CLIENTS" logout=0 "secs=$SCALE_SECS" \
        >"$out" 2>&1 || { log "imaptest against $name failed:"; tail -20 "$out" >&2; exit 1; }
    t1=$(date +%s.%N)
    # Sessions close when imaptest exits: let the target finish them (their CPU counts).
    sleep 1
    [[ -n $pid ]] && after=$(tree_cpu_ticks "$pid" split)
    python3 - "$name" "$out" "$before" "$after" "$(getconf CLK_TCK)" "$t0" "$t1" "$SCALE_ROUND" \
        "${SCALE_KIND:-scale_cpu}" "${SCALE_PROBE:-}" >>"$RESULTS" <<'PY'
import json, re, sys
name, path, before, after, hz, t0, t1, rnd, kind, probe = sys.argv[1:]
(user0, sys0, sw0), (user1, sys1, sw1) = (map(int, before.split()), map(int, after.split()))
text = open(path, errors="replace").read()
tail = text[text.rindex("Totals:"):].splitlines()
heads = tail[1].split()
counts = [int(x) for x in tail[4].split()]
by = dict(zip(heads, counts))
avg = {}
for line in text.splitlines():
    if line.rstrip().endswith("ms/cmd avg"):
        vals = line.split()[:-2]
        avg = dict(zip(heads, (int(v) for v in vals)))
cmds = sum(counts)
measured = bool(user1 + sys1)
user_s, sys_s = (user1 - user0) / float(hz), (sys1 - sys0) / float(hz)
cpu_s = user_s + sys_s
row = {"kind": kind, "target": name, "round": int(rnd), "commands": cmds,
       "by_command": by, "secs": float(t1) - float(t0),
       "cpu_s": cpu_s if measured else None,
       "cpu_user_s": user_s if measured else None,
       "cpu_sys_s": sys_s if measured else None,
       "cpu_us_per_cmd": (cpu_s * 1e6 / cmds) if measured and cmds else None,
       "switches": (sw1 - sw0) if measured else None,
       "ms_per_cmd_avg": avg}
if probe:
    row["probe"] = probe
print(json.dumps(row))
PY
    log "scale: $name round $SCALE_ROUND: $(tail -1 "$RESULTS")"
}

scale_section() {
    scale_deps
    # What a sleep and wake-up costs here: the floor under every target's CPU per message.
    run "$CLIENT" wake-cost >>"$RESULTS"
    [[ -z ${BENCH_SCALE_SKIP_CPU:-} ]] && cpu_section
    [[ -z ${BENCH_SCALE_SKIP_CEILING:-} ]] && ceiling_section
    [[ -z ${BENCH_SCALE_SKIP_TLS:-} ]] && tls_section
    [[ -z ${BENCH_SCALE_SKIP_IDLE:-} ]] && idle_section
    python3 "$ROOT/benches/scale_report.py" "$RESULTS"
}

# scale_prepare: imaptest's APPEND source and its mailbox (imaptest appends and expunges in
# its mailbox: its own, so INBOX, with UID 4, the 5 MiB message of the TLS runs, stays as the
# other sections expect).
scale_prepare() {
    scale_mbox "$WORK/scale.mbox"
    python3 -c 'import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2])); m.login(sys.argv[3], sys.argv[4])
m.create("ImapTest"); m.logout()' "${D_IMAP%:*}" "${D_IMAP##*:}" "$USER_NAME" "$USER_PASS"
}

cpu_section() {
    scale_prepare
    log "scale: imaptest $IMAPTEST, $SCALE_CLIENTS clients, logout=0, $SCALE_SECS s per run, $SCALE_ROUNDS rounds"
    local names=("${SCALE_TARGETS[@]}")
    [[ -n ${BENCH_SCALE_BASELINE:-} ]] && log "scale: baseline is $BENCH_SCALE_BASELINE"
    if [[ -n ${BENCH_SCALE_TARGETS:-} ]]; then
        # Only the named targets (e.g. "proxy_default baseline nginx"), in the order given.
        local t
        names=()
        for t in $BENCH_SCALE_TARGETS; do
            scale_target_known "$t" BENCH_SCALE_TARGETS
            names+=("$t")
        done
    fi
    local n=${#names[@]} i t
    if [[ ${BENCH_SCALE_FRESH:-1} == 1 ]]; then
        log "scale: a fresh process of each target for each run"
    else
        for t in "${names[@]}"; do scale_target_start "$t"; done
    fi
    for ((SCALE_ROUND = 0; SCALE_ROUND < SCALE_ROUNDS; SCALE_ROUND++)); do
        for ((i = 0; i < n; i++)); do
            t=${names[$(((i + SCALE_ROUND) % n))]}
            [[ ${BENCH_SCALE_FRESH:-1} == 1 ]] && scale_target_start "$t"
            imaptest_run "$t" "${T_ADDR[$t]}" "${T_PID[$t]}"
            [[ ${BENCH_SCALE_FRESH:-1} == 1 ]] && scale_target_stop "$t"
        done
    done
    if [[ ${BENCH_SCALE_FRESH:-1} != 1 ]]; then
        for t in "${names[@]}"; do scale_target_stop "$t"; done
    fi
}

# The CPU section's targets, by name (see cpu_section): where each listens (T_ADDR) and the
# process whose tree's CPU is counted (T_PID; none for Dovecot itself).
SCALE_TARGETS=(direct proxy proxy_default proxy_1thread nginx socat relay)
if [[ -n ${BENCH_SCALE_BASELINE:-} ]]; then
    [[ -x $BENCH_SCALE_BASELINE ]] || { log "BENCH_SCALE_BASELINE=$BENCH_SCALE_BASELINE is not an executable"; exit 1; }
    SCALE_TARGETS+=(baseline)
fi
declare -A T_ADDR T_PID

# scale_target_known NAME VARIABLE: exits, naming VARIABLE, unless NAME is one of SCALE_TARGETS.
scale_target_known() {
    [[ " ${SCALE_TARGETS[*]} " == *" $1 "* ]] || { log "$2: no target $1 (${SCALE_TARGETS[*]})"; exit 1; }
}

# scale_target_start NAME: starts target NAME (see cpu_section) and records its address and pid.
scale_target_start() {
    local t=$1
    case $t in
    direct) T_ADDR[$t]=$D_IMAP T_PID[$t]="" ; return ;;
    proxy) start_proxy scale-proxy --upstream "$D_IMAP" --upstream-tls none --cache-size 0 ;;
    proxy_default) start_proxy scale-default --upstream "$D_IMAP" --upstream-tls none ;;
    proxy_1thread)
        IMAPGATE_RUNTIME__SESSION_THREADS=1 start_proxy scale-1t --upstream "$D_IMAP" \
            --upstream-tls none --cache-size 0 ;;
    baseline)
        IMAPGATE=$BENCH_SCALE_BASELINE start_proxy scale-baseline --upstream "$D_IMAP" \
            --upstream-tls none ;;
    nginx) start_nginx "${D_IMAP%:*}" "${D_IMAP##*:}"; T_ADDR[$t]=$NG_ADDR T_PID[$t]=$NG_PID; return ;;
    socat) start_socat "$D_IMAP"; T_ADDR[$t]=$SO_ADDR T_PID[$t]=$SO_PID; return ;;
    relay) start_relay scale-relay "$D_IMAP"; T_ADDR[$t]=$R_ADDR T_PID[$t]=$R_PID; return ;;
    *) log "scale: no target $t"; exit 1 ;;
    esac
    T_ADDR[$t]=$P_PLAIN T_PID[$t]=$P_PID
}

# scale_target_stop NAME: stops target NAME, which must have lived through its runs.
scale_target_stop() {
    local p=${T_PID[$1]}
    [[ -z $p ]] && return 0
    kill -0 "$p" 2>/dev/null || { log "scale target $1 died during the runs"; exit 1; }
    stop_proxy "$p"
}

# Throughput ceiling (issue 9): the largest commands/s each target sustains with p99 under
# BENCH_SCALE_RATE_P99_MS (10) ms, by `benches/client rate`: open loop (commands on a fixed
# schedule, latency from the scheduled send time), BENCH_SCALE_RATE_CONNECTIONS (50) logged-in
# connections with INBOX selected, a read-only mix of small commands (UID FETCH FLAGS / HEADER,
# NOOP, UID SEARCH). Rates step up from BENCH_SCALE_RATE_START (2500/s) x BENCH_SCALE_RATE_FACTOR
# (1.6) to the first failed step, then BENCH_SCALE_RATE_BISECT (3) bisections; every step
# up to BENCH_SCALE_RATE_REPS (3) times for BENCH_SCALE_RATE_SECS (2) s, the targets interleaved
# in rotated order (a step passes at the first repetition that does; a failure while other processes took
# over 20% of the CPUs is retried once the machine is quiet); the whole search within
# BENCH_SCALE_RATE_BUDGET (420) s. Targets: Dovecot
# directly, imapgate --cache-size 0 and default, nginx mail, socat nodelay, all plaintext. Dovecot
# shares the two cores, so the direct figure is the ceiling Dovecot itself sets. The CPU per
# command of each proxy's process tree and of Dovecot's is recorded per trial.
ceiling_section() {
    start_proxy scale-rate-proxy --upstream "$D_IMAP" --upstream-tls none --cache-size 0
    local RP_PID=$P_PID RP=$P_PLAIN
    start_proxy scale-rate-default --upstream "$D_IMAP" --upstream-tls none
    local RD_PID=$P_PID RD=$P_PLAIN
    start_nginx "${D_IMAP%:*}" "${D_IMAP##*:}"
    start_socat "$D_IMAP"
    local pids=("$RP_PID" "$RD_PID" "$NG_PID" "$SO_PID") p
    log "scale: throughput ceiling (p99 < ${BENCH_SCALE_RATE_P99_MS:-10} ms), targets interleaved"
    run "$CLIENT" rate --kind scale_ceiling --target "direct=plain:$D_IMAP" \
        --target "proxy=plain:$RP" --target "proxy_default=plain:$RD" \
        --target "nginx=plain:$NG_ADDR" --target "socat=plain:$SO_ADDR" \
        --upstream-pid "$(cat "$D_PIDFILE")" --pid "proxy=$RP_PID" --pid "proxy_default=$RD_PID" \
        --pid "nginx=$NG_PID" --pid "socat=$SO_PID" \
        --connections "${BENCH_SCALE_RATE_CONNECTIONS:-50}" --secs "${BENCH_SCALE_RATE_SECS:-2}" \
        --reps "${BENCH_SCALE_RATE_REPS:-3}" --start-rate "${BENCH_SCALE_RATE_START:-2500}" \
        --factor "${BENCH_SCALE_RATE_FACTOR:-1.6}" --bisect "${BENCH_SCALE_RATE_BISECT:-3}" \
        --p99-ms "${BENCH_SCALE_RATE_P99_MS:-10}" --budget-secs "${BENCH_SCALE_RATE_BUDGET:-420}" \
        "${AUTH[@]}" >>"$RESULTS"
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { log "a ceiling target died during the runs"; exit 1; }
        stop_proxy "$p"
    done
}

# TLS both sides at line rate, and CPU per MB relayed: BODY.PEEK[] of UID 4 (the 5 MiB
# attachment, ~7.2 MB on the wire), BENCH_SCALE_REPS (20) fetches per target, interleaved by
# benches/client throughput. Each proxy serves one target only, so its CPU time over the run
# (/proc/PID/stat) / MB it relayed is its CPU per MB.
tls_section() {
    local reps=${BENCH_SCALE_REPS:-20} before=() after=() i
    start_proxy scale-pp --upstream "$D_IMAP" --upstream-tls none --cache-size 0
    local PP_PID=$P_PID PP=$P_PLAIN
    start_proxy scale-tp --upstream "$D_IMAP" --upstream-tls none --cache-size 0
    local TP_PID=$P_PID TP=$P_TLS
    start_proxy scale-tt --upstream "$D_IMAPS" --upstream-tls implicit --upstream-ca "$D_CA" --cache-size 0
    local TT_PID=$P_PID TT=$P_TLS
    start_proxy scale-td --upstream "$D_IMAPS" --upstream-tls implicit --upstream-ca "$D_CA"
    local TD_PID=$P_PID TD=$P_TLS
    local pids=("$PP_PID" "$TP_PID" "$TT_PID" "$TD_PID")
    local names=(proxy_plain_plain proxy_tls_plain proxy_tls_tls proxy_default_tls_tls)
    for i in "${!pids[@]}"; do before[i]=$(tree_cpu_ticks "${pids[i]}"); done
    log "scale: TLS both sides: BODY.PEEK[] of UID 4, $reps fetches per target, interleaved"
    run "$CLIENT" throughput --uid 4 --reps "$reps" --target "direct_plain=plain:$D_IMAP" \
        --target "direct_tls=tls:$D_IMAPS" --target "proxy_plain_plain=plain:$PP" \
        --target "proxy_tls_plain=tls:$TP" --target "proxy_tls_tls=tls:$TT" \
        --target "proxy_default_tls_tls=tls:$TD" "${AUTH[@]}" >"$WORK/scale-tls.jsonl"
    sleep 0.5
    for i in "${!pids[@]}"; do after[i]=$(tree_cpu_ticks "${pids[i]}"); done
    local cpu_json="{"
    for i in "${!pids[@]}"; do
        cpu_json+="\"${names[i]}\": $((after[i] - before[i])),"
    done
    cpu_json="${cpu_json%,}}"
    python3 - "$WORK/scale-tls.jsonl" "$cpu_json" "$(getconf CLK_TCK)" >>"$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ticks, hz = json.loads(sys.argv[2]), float(sys.argv[3])
by = {r["target"]: r for r in rows if r.get("kind") == "throughput"}
for name, r in by.items():
    mb = r["reps"] * r["bytes_per_fetch"] / 1e6
    out = {"kind": "scale_tls", "target": name, "mb_per_s": r["mb_per_s"], "mb": mb,
           "vs_direct_tls": r["mb_per_s"] / by["direct_tls"]["mb_per_s"]}
    if name in ticks:
        out["cpu_s"] = ticks[name] / hz
        out["cpu_ms_per_mb"] = ticks[name] / hz * 1e3 / mb
    print(json.dumps(out))
PY
    for p in "${pids[@]}"; do stop_proxy "$p"; done
}

# 10,000 idle sessions (BENCH_SCALE_IDLE) through one instance, clients on TLS, upstream
# plaintext: a second Dovecot parks idle imap processes (imap_hibernate_timeout = 2s, one
# imap-hibernate process) and allows that many sessions of one user from one address. A fresh
# imapgate (default config); an active session's UID FETCH n (FLAGS) latency (BENCH_N round
# trips) before, while the idle sessions sit there, and after they are gone (a drift control);
# proxy memory per idle session from /proc (benches/client idle).
idle_section() {
    local n=${BENCH_SCALE_IDLE:-10000} dir fds
    # Two descriptors per session in the proxy: without CAP_SYS_RESOURCE the hard limit may be
    # below 2n (20,000 here): then as many sessions as it allows, said so.
    fds=$(ulimit -Hn)
    if ((2 * n + 200 > fds)); then
        log "scale: open-file hard limit $fds < $((2 * n + 200)) (2 per session): $(((fds - 200) / 2)) idle sessions instead of $n"
        n=$(((fds - 200) / 2))
    fi
    # Not below $WORK (0700): the imap processes run as the unprivileged mail owner and must
    # reach the imap-hibernate socket in the instance's base_dir.
    dir=$(mktemp -d /tmp/imapgate-dc-idle.XXXXXX)
    chmod 755 "$dir"
    log "scale: a Dovecot for $n idle sessions (imap_hibernate), open-file limit $(ulimit -Sn)"
    IDLE_DC=$dir
    python3 - "$ROOT/scripts" "$dir" "$n" >"$WORK/dovecot-10k.out" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
import dovecot
n = int(sys.argv[3])
extra = """
imap_hibernate_timeout = 2s
protocol imap {
  mail_max_userip_connections = %d
}
service imap {
  process_limit = 4000
  unix_listener imap-master {
    mode = 0666
  }
}
service imap-hibernate {
  client_limit = %d
  process_limit = 1
  unix_listener imap-hibernate {
    mode = 0666
  }
}
service imap-login {
  client_limit = %d
}
""" % (2 * n, 2 * n, 2 * n)
print(json.dumps(dovecot.start(sys.argv[2], extra_config=extra)))
PY
    local I_IMAP
    I_IMAP=$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print("%s:%d" % (d["host"], d["imap_port"]))' "$WORK/dovecot-10k.out")
    # The default connection limit is 10,000 (and 2 descriptors per session): room for n.
    IMAPGATE_LIMITS__MAX_CONNECTIONS=$((n + 1000)) start_proxy scale-idle --upstream "$I_IMAP" --upstream-tls none
    local IP_PID=$P_PID IP_TLS=$P_TLS
    local lat=(latency --kind scale_idle_latency --op flags --n "$N" --warmup "$WARMUP"
        --target "proxy=tls:$IP_TLS" "${AUTH[@]}")
    log "scale: active session latency, no idle sessions"
    run "$CLIENT" "${lat[@]}" | sed 's/"target": "proxy"/"target": "before"/' >>"$RESULTS"
    rm -f "$WORK/idle.ready" "$WORK/idle.release"
    log "scale: opening $n idle TLS sessions (pid $IP_PID)"
    "$CLIENT" idle --label "tls-$n" --target "proxy=tls:$IP_TLS" --pid "$IP_PID" --n "$n" \
        --concurrency "$CONCURRENCY" --ready-file "$WORK/idle.ready" \
        --release-file "$WORK/idle.release" "${AUTH[@]}" >"$WORK/idle-10k.json" 2>"$WORK/idle-10k.err" &
    local idle_pid=$!
    PROXY_PIDS+=("$idle_pid")
    while [[ ! -e $WORK/idle.ready ]]; do
        kill -0 "$idle_pid" 2>/dev/null || { log "idle client failed:"; tail -5 "$WORK/idle-10k.err" >&2; exit 1; }
        sleep 0.5
    done
    # Dovecot parks each session's imap process 2 s after its IDLE began: wait until it has
    # (at most 20 imap processes left, or 120 s), so the run below measures the proxy holding
    # idle sessions, not Dovecot busy hibernating the last of them.
    local master
    master=$(cat "$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["pid_file"])' "$WORK/dovecot-10k.out")")
    for _ in $(seq 240); do
        (($(pgrep -x imap -P "$master" | wc -l) <= 20)) && break
        sleep 0.5
    done
    sleep 2
    log "scale: $(cat "$WORK/idle.ready") sessions idle ($(pgrep -x imap -P "$master" | wc -l) imap processes left); active session latency while they sit there"
    run "$CLIENT" "${lat[@]}" | sed 's/"target": "proxy"/"target": "during"/' >>"$RESULTS"
    touch "$WORK/idle.release"
    wait "$idle_pid" || { log "idle client failed:"; tail -5 "$WORK/idle-10k.err" >&2; exit 1; }
    sed 's/"kind": "memory"/"kind": "scale_idle_memory"/' "$WORK/idle-10k.json" >>"$RESULTS"
    log "scale: active session latency after the idle sessions closed"
    run "$CLIENT" "${lat[@]}" | sed 's/"target": "proxy"/"target": "after"/' >>"$RESULTS"
    stop_proxy "$IP_PID"
    python3 "$ROOT/scripts/dovecot.py" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
    IDLE_DC=
}
