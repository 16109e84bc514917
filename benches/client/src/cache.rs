//! The FETCH cache, cold vs warm, behind a slow upstream (`imapgate-bench cache`).
//!
//! Two imapgates sit in front of the same delay relay (`delay-relay`: +10 ms each way, 50 Mbit/s)
//! and Dovecot: `cold` with `--cache-size 0` (every request a miss) and `warm` with the cache
//! (every request after the first a hit). Both run with `--admin`, so the upstream bytes of each
//! request are read from the proxy's own `imapgate_bytes_total{side="upstream"}` (sent +
//! received), scraped right before and after it. Workloads: a webmail list view of 50 messages
//! with realistic headers, and a 1 MB `BODY.PEEK[]`. Requests alternate cold/warm (order swapped
//! every round). Then the proxies' CPU per request, from /proc/PID/stat (utime+stime, in clock
//! ticks) the sum of /proc/PID/task/*/schedstat (run time of the live threads in ns) and the
//! process CPU-time clock (clock_getcpuclockid: ns, every thread), over blocks of requests
//! with no metrics scrapes (a short pause at each block's end lets the proxy finish its work).
//!
//! The mailbox (default `BenchCache`) is created and filled through Dovecot directly (`--direct`)
//! when it does not exist yet: 50 messages of ~2-3 KB headers and 1-4 KB text, then one of
//! `--big-bytes` (1,000,000).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::blocking::Conn;
use crate::json::Obj;
use crate::{Args, stats};

const MESSAGES: usize = 50;

fn list_cmd() -> String {
    format!(
        "UID FETCH 1:{MESSAGES} (UID RFC822.SIZE FLAGS INTERNALDATE \
         BODY.PEEK[HEADER.FIELDS (DATE FROM TO SUBJECT)])"
    )
}

fn body_cmd() -> String {
    format!("UID FETCH {} (BODY.PEEK[])", MESSAGES + 1)
}

/// A small deterministic generator (xorshift), so every run seeds the same bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn b64(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n).map(|_| A[self.below(64) as usize] as char).collect()
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &[
    "Alice Example <alice@example.org>",
    "Bob Builder <bob@example.com>",
    "Carol Jones <carol.jones@mail.example.net>",
    "\"Dave O'Neil\" <dave@corp.example>",
    "Eve Martin <eve.martin@example.co.uk>",
    "=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>",
    "GitHub <notifications@github.example>",
    "Newsletter <news@shop.example>",
];
const WORDS: &[&str] = &[
    "quarterly",
    "report",
    "meeting",
    "notes",
    "invoice",
    "update",
    "project",
    "release",
    "review",
    "draft",
    "budget",
    "schedule",
    "follow-up",
    "question",
    "about",
    "the",
    "next",
    "week",
    "roadmap",
    "team",
    "design",
    "proposal",
    "feedback",
    "ticket",
    "deployment",
];

fn date(i: usize) -> String {
    // Mon, 03 Nov 2025 08:00:00 +0000 onwards, 97 minutes apart (day names kept plausible).
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let m = i * 97;
    let (d, h, mi) = (m / 1440, (m / 60) % 24, m % 60);
    format!(
        "{}, {:02} Nov 2025 {:02}:{:02}:00 +0000",
        DAYS[d % 7],
        3 + d,
        8 + h % 16,
        mi
    )
}

fn headers(r: &mut Rng, i: usize, subject: &str, extra: &str) -> String {
    let from = r.pick(NAMES);
    let to = r.pick(NAMES);
    let mut h = String::new();
    h += &format!("Return-Path: <bounce-{i}@mail.example.net>\r\n");
    for hop in 0..3 {
        h += &format!(
            "Received: from mail-out{}.example.net (mail-out{}.example.net [198.51.100.{}])\r\n\
             \tby mx{}.example.org (Postfix) with ESMTPS id {}\r\n\
             \tfor <alice@example.org>; {}\r\n",
            r.below(40),
            r.below(40),
            r.below(250) + 1,
            hop + 1,
            r.b64(12).replace(['+', '/'], "X"),
            date(i)
        );
    }
    h += &format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=s{};\r\n\
         \th=from:to:subject:date:message-id:mime-version;\r\n\tbh={}=;\r\n\tb={}\r\n\t {}\r\n\t {}\r\n\t {}==\r\n",
        r.below(9),
        r.b64(43),
        r.b64(70),
        r.b64(70),
        r.b64(70),
        r.b64(60)
    );
    h += "Authentication-Results: mx1.example.org; dkim=pass header.d=example.net;\r\n\
          \tspf=pass smtp.mailfrom=mail.example.net; dmarc=pass header.from=example.net\r\n";
    h += &format!("Date: {}\r\nFrom: {from}\r\nTo: {to}\r\n", date(i));
    if i.is_multiple_of(3) {
        h += &format!("Cc: {}, {}\r\n", r.pick(NAMES), r.pick(NAMES));
    }
    h += &format!(
        "Subject: {subject}\r\nMessage-ID: <{}.{i}@mail.example.net>\r\n",
        r.b64(16).replace(['+', '/'], "x")
    );
    if i.is_multiple_of(2) && i > 1 {
        h += &format!(
            "In-Reply-To: <prev.{}@mail.example.net>\r\nReferences: <root.{}@mail.example.net>\r\n\t<prev.{}@mail.example.net>\r\n",
            i - 1,
            i / 2,
            i - 1
        );
    }
    h += "MIME-Version: 1.0\r\n";
    if i % 4 == 1 {
        h += "List-Id: Project discussion <project.lists.example.net>\r\n\
              List-Unsubscribe: <https://lists.example.net/unsubscribe/project>,\r\n\
              \t<mailto:project-leave@lists.example.net>\r\n";
    }
    h += "X-Mailer: Example Mail 4.2\r\n";
    h += extra;
    h
}

fn sentence(r: &mut Rng) -> String {
    let n = 6 + r.below(10) as usize;
    let mut s: Vec<&str> = (0..n).map(|_| r.pick(WORDS)).collect();
    let first = s[0].to_string();
    let cap = first[..1].to_uppercase() + &first[1..];
    s[0] = &cap;
    s.join(" ") + "."
}

/// Message `i` (1-based) of the list view.
fn list_message(i: usize) -> Vec<u8> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 * 0x1000_0001));
    let mut subject = String::from(if i.is_multiple_of(3) { "Re: " } else { "" });
    subject += &sentence(&mut r);
    subject.pop();
    let mut m = headers(
        &mut r,
        i,
        &subject,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n",
    );
    m += "\r\n";
    let target = 1000 + r.below(3000) as usize;
    let mut line = String::new();
    while m.len() < target + 2000 {
        line.clear();
        while line.len() < 60 {
            line += &sentence(&mut r);
            line.push(' ');
        }
        m += line.trim_end();
        m += "\r\n";
        if r.below(5) == 0 {
            m += "\r\n";
        }
    }
    m.into_bytes()
}

/// The large message: text/plain, 76-character lines, exactly `size` bytes.
fn big_message(size: usize) -> Vec<u8> {
    let mut r = Rng(0x5151_5151_0bad_cafe);
    let mut m = headers(
        &mut r,
        MESSAGES + 1,
        "Large message (1 MB of text)",
        "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n",
    )
    .into_bytes();
    m.extend_from_slice(b"\r\n");
    while m.len() + 78 <= size {
        let s = r.b64(76);
        m.extend_from_slice(s.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    while m.len() + 2 < size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n");
    m.truncate(size);
    m
}

fn seed(addr: &str, user: &str, pass: &str, mailbox: &str, big: usize) -> Result<bool, String> {
    let mut c = Conn::open(addr, None, user, pass, "INBOX").map_err(|e| format!("seed: {e}"))?;
    let (_, created, _) = c
        .command_verbose(format!("CREATE {}", crate::blocking::quote(mailbox)).as_bytes())
        .map_err(|e| format!("seed: {e}"))?;
    if created {
        for i in 1..=MESSAGES {
            c.append(mailbox, &list_message(i))
                .map_err(|e| format!("seed: {e}"))?;
        }
        c.append(mailbox, &big_message(big))
            .map_err(|e| format!("seed: {e}"))?;
        // This session takes the new messages' \Recent, so that neither proxied session sees
        // it (it would make the first one's answers longer).
        c.command(format!("SELECT {}", crate::blocking::quote(mailbox)).as_bytes())
            .map_err(|e| format!("seed: {e}"))?;
    }
    c.logout();
    Ok(created)
}

/// GET /metrics from an imapgate admin listener.
fn scrape(admin: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(admin).map_err(|e| format!("metrics {admin}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("metrics {admin}: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("metrics {admin}: {e}"))?;
    if !body.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "metrics {admin}: {}",
            body.lines().next().unwrap_or("")
        ));
    }
    Ok(body)
}

/// Sum of the samples of metric `name` whose labels contain `filter`.
fn metric(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// Sends a command; returns the bytes of its untagged responses (the tagged line, whose
/// Dovecot timing text and tag vary, left out). Not OK is an error.
fn fetch(s: &mut Side, cmd: &str) -> Result<u64, String> {
    let (n, ok, last) = s
        .conn
        .command_verbose(cmd.as_bytes())
        .map_err(|e| format!("{}: {e}", s.name))?;
    if !ok {
        return Err(format!(
            "{}: {cmd}: {}",
            s.name,
            String::from_utf8_lossy(&last)
        ));
    }
    Ok(n - last.len() as u64)
}

fn upstream_bytes(admin: &str) -> Result<u64, String> {
    Ok(metric(&scrape(admin)?, "imapgate_bytes_total", "side=\"upstream\"") as u64)
}

/// The process's CPU time (every thread, exited ones included) in ns, from its CPU-time clock.
fn process_clock_ns(pid: u32) -> Result<u64, String> {
    let mut clk: libc::clockid_t = 0;
    // SAFETY: plain libc calls with valid out-pointers.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clk) };
    if rc != 0 {
        return Err(format!("clock_getcpuclockid({pid}): error {rc}"));
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(clk, &mut ts) } != 0 {
        return Err(format!(
            "clock_gettime(process {pid}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// (utime+stime in clock ticks, summed run time of the live threads in ns, the process's CPU
/// clock in ns).
fn cpu(pid: u32) -> Result<(u64, u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let after = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())? {
        let p = t.map_err(|e| e.to_string())?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
        }
    }
    Ok((ticks, ns, process_clock_ns(pid)?))
}

fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

struct Side {
    name: &'static str,
    // (kept in order: cold, warm, then the optional miss)
    admin: String,
    pid: u32,
    conn: Conn,
}

pub fn run(a: &Args) -> Result<(), String> {
    let user = a.str_or("user", "alice");
    let pass = a.str_or("pass", "alice-pass-1");
    let mailbox = a.str_or("mailbox", "BenchCache");
    let direct = a
        .get("direct")
        .ok_or("cache needs --direct (Dovecot, for seeding)")?;
    let n: usize = a.num("n", 30)?.max(1);
    let cpu_blocks: usize = a.num("cpu-blocks", 10)?.max(1);
    let cpu_per_block: usize = a.num("cpu-per-block", 5)?.max(1);
    let big: usize = a.num("big-bytes", 1_000_000)?;
    let need = |k: &str| {
        a.get(k)
            .map(str::to_string)
            .ok_or(format!("cache needs --{k}"))
    };

    let created = seed(direct, &user, &pass, &mailbox, big)?;
    eprintln!(
        "cache: mailbox {mailbox} {}",
        if created {
            "seeded (50 + 1 messages)"
        } else {
            "already there"
        }
    );
    let mut sides = Vec::new();
    for name in ["cold", "warm", "miss"] {
        // `miss` (optional): a proxy with the cache on but too small to hold any item, so every
        // request is a miss through the cache stage.
        if name == "miss" && a.get("miss").is_none() {
            continue;
        }
        let addr = need(name)?;
        let conn = Conn::open(&addr, None, &user, &pass, &mailbox)
            .map_err(|e| format!("{name} ({addr}): {e}"))?;
        sides.push(Side {
            name,
            admin: need(&format!("{name}-admin"))?,
            pid: a.num(&format!("{name}-pid"), 0)?,
            conn,
        });
    }
    let workloads = [("list", list_cmd()), ("body", body_cmd())];
    let mut out = Vec::new();

    // First request of each workload on each proxy: the cold proxy's warms Dovecot (its caches,
    // the page cache) for both; the warm proxy's fills its cache ("fill").
    let ns_ = sides.len();
    let mut client_bytes = [[0u64; 3]; 2];
    for (wi, (w, cmd)) in workloads.iter().enumerate() {
        for (si, s) in sides.iter_mut().enumerate() {
            let b0 = upstream_bytes(&s.admin)?;
            let t0 = Instant::now();
            let got = fetch(s, cmd)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let up = upstream_bytes(&s.admin)? - b0;
            client_bytes[wi][si] = got;
            let mut o = Obj::new();
            o.str("kind", "cache_first")
                .str("workload", w)
                .str("target", s.name)
                .num("ms", ms)
                .int("upstream_bytes", up)
                .int("client_untagged_bytes", got);
            out.push(o);
        }
    }

    // Latency and upstream bytes, cold and warm alternating (order swapped every round).
    let mut lat = vec![vec![Vec::with_capacity(n); ns_]; 2];
    let mut up = vec![vec![Vec::with_capacity(n); ns_]; 2];
    let mut mismatches = 0u64;
    for r in 0..n {
        for (wi, (_, cmd)) in workloads.iter().enumerate() {
            for k in 0..ns_ {
                let si = (k + r) % ns_;
                let s = &mut sides[si];
                let b0 = upstream_bytes(&s.admin)?;
                let t0 = Instant::now();
                let got = fetch(s, cmd)?;
                lat[wi][si].push(t0.elapsed().as_nanos() as u64);
                up[wi][si].push(upstream_bytes(&s.admin)? - b0);
                if got != client_bytes[wi][0] {
                    mismatches += 1;
                }
            }
        }
    }
    for (wi, (w, cmd)) in workloads.iter().enumerate() {
        for (si, s) in sides.iter().enumerate() {
            let st = stats(&mut lat[wi][si]);
            let mut ub = up[wi][si].clone();
            let ust = stats(&mut ub);
            let mut o = Obj::new();
            o.str("kind", "cache_latency")
                .str("workload", w)
                .str("command", cmd)
                .str("target", s.name)
                .int("n", st.n as u64)
                .num("median_ms", st.median / 1e6)
                .num("min_ms", st.min / 1e6)
                .num("p90_ms", st.p90 / 1e6)
                .num("max_ms", st.max / 1e6)
                .num("upstream_bytes_median", ust.median)
                .num("upstream_bytes_min", ust.min)
                .num("upstream_bytes_max", ust.max)
                .int("client_untagged_bytes", client_bytes[wi][si]);
            out.push(o);
        }
    }

    // CPU per request: blocks of requests per proxy, no scrapes; /proc before the block and
    // after it plus a pause (work the proxy does after the client has its answer counts too).
    let tck = clk_tck();
    let mut ticks = [[0u64; 3]; 2];
    let mut ns = [[0u64; 3]; 2];
    let mut reqs = [[0u64; 3]; 2];
    let mut clock = [[0u64; 3]; 2];
    for b in 0..cpu_blocks {
        for (wi, (_, cmd)) in workloads.iter().enumerate() {
            for k in 0..ns_ {
                let si = (k + b) % ns_;
                let s = &mut sides[si];
                if s.pid == 0 {
                    continue;
                }
                let (t0, n0, c0) = cpu(s.pid)?;
                for _ in 0..cpu_per_block {
                    fetch(s, cmd)?;
                }
                std::thread::sleep(Duration::from_millis(30));
                let (t1, n1, c1) = cpu(s.pid)?;
                clock[wi][si] += c1 - c0;
                ticks[wi][si] += t1 - t0;
                ns[wi][si] += n1 - n0;
                reqs[wi][si] += cpu_per_block as u64;
            }
        }
    }
    for (wi, (w, _)) in workloads.iter().enumerate() {
        for (si, s) in sides.iter().enumerate() {
            if reqs[wi][si] == 0 {
                continue;
            }
            let r = reqs[wi][si] as f64;
            let mut o = Obj::new();
            o.str("kind", "cache_cpu")
                .str("workload", w)
                .str("target", s.name)
                .int("requests", reqs[wi][si])
                .int("ticks", ticks[wi][si])
                .int("clk_tck", tck)
                .num(
                    "stat_us_per_req",
                    ticks[wi][si] as f64 * 1e6 / tck as f64 / r,
                )
                .num("sched_us_per_req", ns[wi][si] as f64 / 1e3 / r)
                .num("clock_us_per_req", clock[wi][si] as f64 / 1e3 / r)
                // The pause: a per-block constant that is not per request.
                .num("pause_ms_per_block", 30.0);
            out.push(o);
        }
    }

    std::thread::sleep(Duration::from_millis(200));
    let mut o = Obj::new();
    // Answers (untagged bytes) that differed from the cold proxy's first one: expected 0.
    o.str("kind", "cache_metrics")
        .int("answer_size_mismatches", mismatches);
    for s in &sides {
        let text = scrape(&s.admin)?;
        let mut m = Obj::new();
        for k in [
            "hits_total",
            "misses_total",
            "served_bytes_total",
            "saved_bytes_total",
            "evictions_total",
            "entries",
            "bytes",
        ] {
            m.num(k, metric(&text, &format!("imapgate_cache_{k}"), ""));
        }
        m.num(
            "upstream_sent",
            metric(
                &text,
                "imapgate_bytes_total",
                "direction=\"sent\",side=\"upstream\"",
            ),
        );
        m.num(
            "upstream_received",
            metric(
                &text,
                "imapgate_bytes_total",
                "direction=\"received\",side=\"upstream\"",
            ),
        );
        o.obj(s.name, m);
    }
    out.push(o);
    for o in &out {
        println!("{}", o.render());
    }
    for s in sides {
        s.conn.logout();
    }
    Ok(())
}
