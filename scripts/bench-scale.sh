# shellcheck shell=bash disable=SC2153
# scripts/bench-scale.sh: the `scale` section of scripts/bench (BENCH_ONLY=scale, or part of a
# full run unless BENCH_SKIP_SCALE=1). Sourced by scripts/bench after Dovecot is up: it uses
# log, run, start_proxy, stop_proxy, PROXY_PIDS, WORK, RESULTS, D_IMAP, D_HOST, IMAPGATE, ROOT.
#
# CPU per command under imaptest's long-session load (issue 9): imaptest (built from source by
# scripts/build-imaptest.sh) with BENCH_SCALE_CLIENTS (50) clients, logout=0, for
# BENCH_SCALE_SECS (20) seconds, against each target in turn, BENCH_SCALE_ROUNDS (2) rounds with
# the order rotated each round:
#   direct        Dovecot's imap port (no proxy: the reference for commands/s and latency)
#   proxy         imapgate --cache-size 0 (the pure relay)
#   proxy_default imapgate with the default config (FETCH cache on)
#   nginx         nginx mail proxy (Debian nginx-light + libnginx-mod-mail), auth_http answered
#                 by the same nginx (Auth-Status OK, Auth-Server/Auth-Port = Dovecot)
#   socat         socat TCP-LISTEN,fork,nodelay -> TCP,nodelay (the relay floor; a process per
#                 connection)
# Per run: commands completed (imaptest's Totals), the target's CPU time (utime+stime of its
# process tree plus the reaped children's cutime+cstime, /proc/PID/stat, before and after the
# run, after imaptest has exited and its sessions have closed) / commands, and imaptest's own
# ms/cmd averages. Every target talks plaintext to the same Dovecot. nginx and socat are
# installed with apt-get when missing (as root).

SCALE_SECS=${BENCH_SCALE_SECS:-20}
SCALE_CLIENTS=${BENCH_SCALE_CLIENTS:-50}
SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-2}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# tree_cpu_ticks PID: utime+stime of PID and all its descendants, plus PID's cutime+cstime.
tree_cpu_ticks() {
    python3 - "$1" <<'PY'
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
total, todo, first = 0, [root], True
while todo:
    pid = todo.pop()
    try:
        f = stat(pid)
    except OSError:
        continue
    total += int(f[11]) + int(f[12])  # utime, stime
    if first:
        total += int(f[13]) + int(f[14])  # cutime, cstime of reaped children
        first = False
    todo.extend(kids.get(pid, []))
print(total)
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
    nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' >"$dir/out.log" 2>&1 &
    NG_PID=$!
    PROXY_PIDS+=("$NG_PID")
    NG_ADDR=127.0.0.1:$mail_port
    for _ in $(seq 100); do
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

# imaptest_run NAME HOST:PORT PID|"" : one imaptest run; appends a JSON row to $RESULTS
imaptest_run() {
    local name=$1 addr=$2 pid=$3 before=0 after=0 out=$WORK/imaptest-$1-$SCALE_ROUND.txt
    [[ -n $pid ]] && before=$(tree_cpu_ticks "$pid")
    local t0 t1
    t0=$(date +%s.%N)
    run "$IMAPTEST" "host=${addr%:*}" "port=${addr##*:}" "user=$USER_NAME" "pass=$USER_PASS" \
        "mbox=$WORK/scale.mbox" "clients=$SCALE_CLIENTS" logout=0 "secs=$SCALE_SECS" \
        >"$out" 2>&1 || { log "imaptest against $name failed:"; tail -20 "$out" >&2; exit 1; }
    t1=$(date +%s.%N)
    # Sessions close when imaptest exits: let the target finish them (their CPU counts).
    sleep 1
    [[ -n $pid ]] && after=$(tree_cpu_ticks "$pid")
    python3 - "$name" "$out" "$before" "$after" "$(getconf CLK_TCK)" "$t0" "$t1" "$SCALE_ROUND" >>"$RESULTS" <<'PY'
import json, re, sys
name, path, before, after, hz, t0, t1, rnd = sys.argv[1:]
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
cpu_s = (int(after) - int(before)) / float(hz)
print(json.dumps({"kind": "scale_cpu", "target": name, "round": int(rnd), "commands": cmds,
                  "by_command": by, "secs": float(t1) - float(t0),
                  "cpu_s": cpu_s if int(after) else None,
                  "cpu_us_per_cmd": (cpu_s * 1e6 / cmds) if int(after) and cmds else None,
                  "ms_per_cmd_avg": avg}))
PY
    log "scale: $name round $SCALE_ROUND: $(tail -1 "$RESULTS")"
}

scale_section() {
    scale_deps
    scale_mbox "$WORK/scale.mbox"
    log "scale: imaptest $IMAPTEST, $SCALE_CLIENTS clients, logout=0, $SCALE_SECS s per run, $SCALE_ROUNDS rounds"
    start_proxy scale-proxy --upstream "$D_IMAP" --upstream-tls none --cache-size 0
    SP_PID=$P_PID SP=$P_PLAIN
    start_proxy scale-default --upstream "$D_IMAP" --upstream-tls none
    SD_PID=$P_PID SD=$P_PLAIN
    start_nginx "${D_IMAP%:*}" "${D_IMAP##*:}"
    start_socat "$D_IMAP"
    local names=(direct proxy proxy_default nginx socat)
    declare -A addr=([direct]=$D_IMAP [proxy]=$SP [proxy_default]=$SD [nginx]=$NG_ADDR [socat]=$SO_ADDR)
    declare -A pid=([direct]="" [proxy]=$SP_PID [proxy_default]=$SD_PID [nginx]=$NG_PID [socat]=$SO_PID)
    local n=${#names[@]} i
    for ((SCALE_ROUND = 0; SCALE_ROUND < SCALE_ROUNDS; SCALE_ROUND++)); do
        for ((i = 0; i < n; i++)); do
            local t=${names[$(((i + SCALE_ROUND) % n))]}
            imaptest_run "$t" "${addr[$t]}" "${pid[$t]}"
        done
    done
    for p in "$SP_PID" "$SD_PID" "$NG_PID" "$SO_PID"; do
        kill -0 "$p" 2>/dev/null || { log "a scale target died during the runs"; exit 1; }
        stop_proxy "$p"
    done
    python3 "$ROOT/benches/scale_report.py" "$RESULTS"
}
