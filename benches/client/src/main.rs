//! imapgate-bench: the load client behind `scripts/bench`.
//!
//! Every measurement runs the same client code against every target (Dovecot directly, imapgate
//! in front of it), interleaved in blocks so that drift (CPU frequency, other load) hits all
//! targets alike. Results are JSON lines on stdout; progress goes to stderr.
//!
//! ```text
//! imapgate-bench latency    --op flags|header --target NAME=plain|tls:HOST:PORT ... [opts]
//! imapgate-bench throughput --uid 4 --reps 20 --target NAME=plain|tls:HOST:PORT ... [opts]
//! imapgate-bench pipeline   --op flags|header --depth 32 --n 20000 --target NAME=plain|tls:HOST:PORT ... [opts]
//! imapgate-bench check      --target NAME=plain|tls:HOST:PORT [opts]
//! imapgate-bench login      --target NAME=plain|tls:HOST:PORT ... [--cred NAME=login|xoauth2:USER:SECRET ...]
//!                [--n 1000] [--warmup 50] [--max-failures 0] [opts]
//! imapgate-bench idle       --label L --target NAME=plain|tls:HOST:PORT --pid PID --n 2000 [opts]
//!                [--ready-file F --release-file R] (F written when the sessions are open and
//!                measured; they are held until R exists)
//! imapgate-bench relay      --listen 127.0.0.1:0 --upstream HOST:PORT   (bare TCP relay baseline)
//! imapgate-bench delay-relay --listen 127.0.0.1:0 --upstream HOST:PORT [--delay-ms 10] [--mbit 50]
//!                (each direction delayed --delay-ms and paced to --mbit Mbit/s)
//! imapgate-bench cache      --direct HOST:PORT --cold HOST:PORT --cold-admin HOST:PORT --cold-pid PID
//!                --warm HOST:PORT --warm-admin HOST:PORT --warm-pid PID [--n 30] [--cpu-blocks 10]
//!                [--cpu-per-block 5] [--mailbox BenchCache] [--big-bytes 1000000] [opts]
//! imapgate-bench login-attack --target NAME=plain:HOST:PORT --attacker-src 127.0.0.2
//!                --legit-src 127.0.0.3 --connections 20 --secs 60 --logins 200 [--warmup 100]
//!                [--after N] [--interval-ms 100] [--victim-prefix victim] [--wrong-pass P]
//!                [--pid PROXY] [opts]
//! imapgate-bench rate       --target NAME=plain|tls:HOST:PORT ... [--connections 50] [--secs 3]
//!                [--reps 2] [--start-rate 1000] [--factor 2] [--bisect 3] [--p99-ms 10]
//!                [--pid NAME=PID ...] [--upstream-pid PID] [--budget-secs 600] [--kind rate]
//!                [--foreign-max 0.2] [--retries 1] [opts]   (throughput ceiling: open-loop
//!                trials at fixed offered rates, targets interleaved; per target the highest
//!                rate with p99 under --p99-ms)
//!
//! imapgate-bench wake-cost  [--n 20000]   (CPU charged per sleep and wake-up: two threads
//!                passing a byte over pipes, on one CPU and on two)
//!
//! common options: --user U --pass P --pin CERT.pem (repeatable; TLS server certs to accept)
//! latency also takes --kind K: the JSON rows' "kind" (default "latency"), for a section of
//! scripts/bench that keeps its rows apart from the main table's.
//! ```

mod attack;
mod blocking;
mod cache;
mod delay;
mod idle;
mod json;
mod login;
mod rate;
mod relay;
mod tls;
mod wake;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blocking::Conn;
use json::Obj;

#[derive(Clone)]
struct Target {
    name: String,
    tls: bool,
    addr: String,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("target {s}: expected NAME=plain|tls:HOST:PORT"))?;
    let (mode, addr) = rest
        .split_once(':')
        .ok_or_else(|| format!("target {s}: expected NAME=plain|tls:HOST:PORT"))?;
    let tls = match mode {
        "plain" => false,
        "tls" => true,
        _ => return Err(format!("target {s}: mode must be plain or tls")),
    };
    Ok(Target {
        name: name.into(),
        tls,
        addr: addr.into(),
    })
}

struct Args {
    cmd: String,
    opts: HashMap<String, Vec<String>>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut it = std::env::args().skip(1);
        let cmd = it.next().ok_or("missing subcommand")?;
        let mut opts: HashMap<String, Vec<String>> = HashMap::new();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {k}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            opts.entry(key.to_string()).or_default().push(v);
        }
        Ok(Args { cmd, opts })
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.opts.get(k).and_then(|v| v.last()).map(String::as_str)
    }
    fn str_or(&self, k: &str, d: &str) -> String {
        self.get(k).unwrap_or(d).to_string()
    }
    fn num<T: std::str::FromStr>(&self, k: &str, d: T) -> Result<T, String> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad number {v}")),
        }
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.opts.get(k).cloned().unwrap_or_default()
    }
    fn targets(&self) -> Result<Vec<Target>, String> {
        let t: Vec<Target> = self
            .all("target")
            .iter()
            .map(|s| parse_target(s))
            .collect::<Result<_, _>>()?;
        if t.is_empty() {
            return Err("give at least one --target".into());
        }
        Ok(t)
    }
}

struct Common {
    user: String,
    pass: String,
    mailbox: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Common {
    fn new(a: &Args) -> Result<Common, String> {
        let pins = a.all("pin");
        let tls = if pins.is_empty() {
            None
        } else {
            Some(tls::client_config(&pins)?)
        };
        Ok(Common {
            user: a.str_or("user", "alice"),
            pass: a.str_or("pass", "alice-pass-1"),
            mailbox: a.str_or("mailbox", "INBOX"),
            tls,
        })
    }

    fn tls_for(&self, t: &Target) -> Result<Option<&Arc<rustls::ClientConfig>>, String> {
        if !t.tls {
            return Ok(None);
        }
        self.tls
            .as_ref()
            .map(Some)
            .ok_or_else(|| format!("target {} is TLS: give --pin CERT", t.name))
    }

    fn open(&self, t: &Target) -> Result<Conn, String> {
        Conn::open(
            &t.addr,
            self.tls_for(t)?,
            &self.user,
            &self.pass,
            &self.mailbox,
        )
        .map_err(|e| format!("{} ({}): {e}", t.name, t.addr))
    }
}

/// Summary statistics of durations in nanoseconds.
struct Stats {
    n: usize,
    min: f64,
    median: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn stats(samples: &mut [u64]) -> Stats {
    samples.sort_unstable();
    let n = samples.len();
    let pct = |p: f64| {
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        samples[rank - 1] as f64
    };
    let median = if n % 2 == 1 {
        samples[n / 2] as f64
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) as f64 / 2.0
    };
    Stats {
        n,
        min: samples[0] as f64,
        median,
        p90: pct(0.90),
        p99: pct(0.99),
        max: samples[n - 1] as f64,
        mean: samples.iter().sum::<u64>() as f64 / n as f64,
    }
}

/// Order of targets in block `b`: rotated, so no target always runs first.
fn rotation(len: usize, b: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |i| (i + b) % len)
}

fn latency(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    let targets = a.targets()?;
    let op = a.str_or("op", "flags");
    let kind = a.str_or("kind", "latency");
    let n: usize = a.num("n", 2000)?;
    let warmup: usize = a.num("warmup", 200)?;
    let blocks: usize = a.num("blocks", 20)?.max(1);
    let uids: u32 = a.num("uids", 11)?;
    let item = match op.as_str() {
        "flags" => "(FLAGS)",
        "header" => "(BODY.PEEK[HEADER])",
        _ => return Err(format!("--op {op}: flags or header")),
    };
    // One command per UID, built once.
    let cmds: Vec<Vec<u8>> = (1..=uids)
        .map(|u| format!("UID FETCH {u} {item}").into_bytes())
        .collect();
    let mut conns = Vec::new();
    for t in &targets {
        conns.push(common.open(t)?);
    }
    let mut bytes = vec![0u64; targets.len()];
    for (c, b) in conns.iter_mut().zip(bytes.iter_mut()) {
        for i in 0..warmup {
            *b = c
                .command(&cmds[i % cmds.len()])
                .map_err(|e| e.to_string())?;
        }
    }
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(n); targets.len()];
    let per_block = n.div_ceil(blocks);
    let mut k = 0usize;
    for b in 0..blocks {
        for ti in rotation(targets.len(), b) {
            let c = &mut conns[ti];
            for j in 0..per_block {
                let cmd = &cmds[(k + j) % cmds.len()];
                let t0 = Instant::now();
                c.command(cmd)
                    .map_err(|e| format!("{}: {e}", targets[ti].name))?;
                samples[ti].push(t0.elapsed().as_nanos() as u64);
            }
        }
        k += per_block;
    }
    for (ti, t) in targets.iter().enumerate() {
        let s = stats(&mut samples[ti]);
        let mut o = Obj::new();
        o.str("kind", &kind)
            .str("op", &op)
            .str("client", if t.tls { "tls" } else { "plain" })
            .str("target", &t.name)
            .str("addr", &t.addr)
            .int("n", s.n as u64)
            .int("warmup", warmup as u64)
            .num("min_us", s.min / 1e3)
            .num("median_us", s.median / 1e3)
            .num("p90_us", s.p90 / 1e3)
            .num("p99_us", s.p99 / 1e3)
            .num("max_us", s.max / 1e3)
            .num("mean_us", s.mean / 1e3)
            .num("cmds_per_s", 1e9 / s.mean)
            // SELECT, warm-up, measured, LOGOUT: what the proxy counts after login.
            .int("commands_after_login", (1 + warmup + s.n + 1) as u64)
            .int("last_response_bytes", bytes[ti]);
        if let Some(c) = &conns[ti].cipher {
            o.str("tls", c);
        }
        println!("{}", o.render());
    }
    for c in conns {
        c.logout();
    }
    Ok(())
}

fn throughput(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    let targets = a.targets()?;
    let uid: u32 = a.num("uid", 4)?;
    let reps: usize = a.num("reps", 20)?;
    let min_bytes: u64 = a.num("min-bytes", 5 * 1024 * 1024)?;
    let cmd = format!("UID FETCH {uid} BODY.PEEK[]").into_bytes();
    let mut conns = Vec::new();
    for t in &targets {
        conns.push(common.open(t)?);
    }
    // Warm-up: one fetch each (page cache, Dovecot's caches, the proxy's buffers).
    for (c, t) in conns.iter_mut().zip(&targets) {
        let got = c.command(&cmd).map_err(|e| format!("{}: {e}", t.name))?;
        if got < min_bytes {
            return Err(format!(
                "{}: UID {uid} returned only {got} bytes (expected the 5 MiB message)",
                t.name
            ));
        }
    }
    let mut secs = vec![Vec::with_capacity(reps); targets.len()];
    let mut total = vec![0u64; targets.len()];
    let mut per_fetch = vec![0u64; targets.len()];
    for r in 0..reps {
        for ti in rotation(targets.len(), r) {
            let t0 = Instant::now();
            let got = conns[ti]
                .command(&cmd)
                .map_err(|e| format!("{}: {e}", targets[ti].name))?;
            secs[ti].push(t0.elapsed().as_nanos() as u64);
            total[ti] += got;
            per_fetch[ti] = got;
        }
    }
    for (ti, t) in targets.iter().enumerate() {
        let sum_ns: u64 = secs[ti].iter().sum();
        let mbs = total[ti] as f64 / (sum_ns as f64 / 1e9) / 1e6;
        let s = stats(&mut secs[ti]);
        let mut o = Obj::new();
        o.str("kind", "throughput")
            .str("client", if t.tls { "tls" } else { "plain" })
            .str("target", &t.name)
            .str("addr", &t.addr)
            .int("reps", reps as u64)
            .int("bytes_per_fetch", per_fetch[ti])
            .num("mb_per_s", mbs)
            .num("median_fetch_ms", s.median / 1e6)
            .num("min_fetch_ms", s.min / 1e6)
            .num("max_fetch_ms", s.max / 1e6)
            .num(
                "median_mb_per_s",
                per_fetch[ti] as f64 / (s.median / 1e9) / 1e6,
            )
            .int("commands_after_login", (1 + 1 + reps + 1) as u64);
        if let Some(c) = &conns[ti].cipher {
            o.str("tls", c);
        }
        println!("{}", o.render());
    }
    for c in conns {
        c.logout();
    }
    Ok(())
}

/// Pipelined commands/s: batches of `depth` commands written at once, then all their responses
/// read; batches interleaved across the targets in rotated blocks, like `latency`.
fn pipeline(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    let targets = a.targets()?;
    let op = a.str_or("op", "flags");
    let n: usize = a.num("n", 20000)?;
    let depth: usize = a.num("depth", 32)?.max(1);
    let warmup: usize = a.num("warmup", 10)?;
    let blocks: usize = a.num("blocks", 20)?.max(1);
    let uids: u32 = a.num("uids", 11)?;
    let item = match op.as_str() {
        "flags" => "(FLAGS)",
        "header" => "(BODY.PEEK[HEADER])",
        _ => return Err(format!("--op {op}: flags or header")),
    };
    let cmds: Vec<Vec<u8>> = (1..=uids)
        .map(|u| format!("UID FETCH {u} {item}").into_bytes())
        .collect();
    let mut conns = Vec::new();
    for t in &targets {
        conns.push(common.open(t)?);
    }
    let batches = n.div_ceil(depth);
    let per_block = batches.div_ceil(blocks).max(1);
    let mut sent = vec![0usize; targets.len()];
    let mut ns = vec![0u64; targets.len()];
    let mut batch_ns: Vec<Vec<u64>> = vec![Vec::new(); targets.len()];
    let mut k = 0usize;
    for (ti, c) in conns.iter_mut().enumerate() {
        for _ in 0..warmup {
            c.batch(&cmds, k, depth)
                .map_err(|e| format!("{}: {e}", targets[ti].name))?;
            sent[ti] += depth;
        }
    }
    let mut done = 0usize;
    let mut b = 0usize;
    while done < batches {
        let todo = per_block.min(batches - done);
        for ti in rotation(targets.len(), b) {
            let c = &mut conns[ti];
            for j in 0..todo {
                let t0 = Instant::now();
                c.batch(&cmds, k + j * depth, depth)
                    .map_err(|e| format!("{}: {e}", targets[ti].name))?;
                let d = t0.elapsed().as_nanos() as u64;
                ns[ti] += d;
                batch_ns[ti].push(d);
                sent[ti] += depth;
            }
        }
        k += todo * depth;
        done += todo;
        b += 1;
    }
    for (ti, t) in targets.iter().enumerate() {
        let measured = batches * depth;
        let s = stats(&mut batch_ns[ti]);
        let mut o = Obj::new();
        o.str("kind", "pipeline")
            .str("op", &op)
            .str("client", if t.tls { "tls" } else { "plain" })
            .str("target", &t.name)
            .str("addr", &t.addr)
            .int("n", measured as u64)
            .int("depth", depth as u64)
            .num("cmds_per_s", measured as f64 / (ns[ti] as f64 / 1e9))
            .num("median_batch_us", s.median / 1e3)
            .num("median_cmds_per_s", depth as f64 / (s.median / 1e9))
            .int("commands_after_login", (1 + sent[ti] + 1) as u64);
        if let Some(c) = &conns[ti].cipher {
            o.str("tls", c);
        }
        println!("{}", o.render());
    }
    for c in conns {
        c.logout();
    }
    Ok(())
}

fn check(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    for t in a.targets()? {
        let mut c = common.open(&t)?;
        c.command(b"NOOP").map_err(|e| format!("{}: {e}", t.name))?;
        c.logout();
        eprintln!("check: {} ({}) ok", t.name, t.addr);
    }
    Ok(())
}

fn idle_cmd(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    let targets = a.targets()?;
    let [t] = targets.as_slice() else {
        return Err("idle takes exactly one --target".into());
    };
    let args = idle::IdleArgs {
        label: a.str_or("label", &t.name),
        addr: t.addr.clone(),
        tls: common.tls_for(t)?.cloned(),
        user: common.user.clone(),
        pass: common.pass.clone(),
        n: a.num("n", 2000)?,
        warmup: a.num("warmup", 16)?,
        concurrency: a.num("concurrency", 32)?,
        pid: a.num("pid", 0)?,
        settle: Duration::from_millis(a.num("settle-ms", 2000)?),
        ready: a.get("ready-file").map(str::to_owned),
        release: a.get("release-file").map(str::to_owned),
    };
    if args.pid == 0 {
        return Err("idle needs --pid of the process to measure".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let o = rt.block_on(idle::run(args)).map_err(|e| e.to_string())?;
    println!("{}", o.render());
    Ok(())
}

fn relay_cmd(a: &Args) -> Result<(), String> {
    let listen = a.str_or("listen", "127.0.0.1:0");
    let upstream = a
        .get("upstream")
        .ok_or("relay needs --upstream")?
        .to_string();
    // Same shape as imapgate's runtime: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(relay::run(&listen, upstream))
        .map_err(|e| e.to_string())
}

fn delay_relay_cmd(a: &Args) -> Result<(), String> {
    let listen = a.str_or("listen", "127.0.0.1:0");
    let upstream = a
        .get("upstream")
        .ok_or("delay-relay needs --upstream")?
        .to_string();
    let delay = Duration::from_secs_f64(a.num("delay-ms", 10.0)? / 1e3);
    let rate = a.num("mbit", 50.0)? * 1e6;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(delay::run(&listen, upstream, delay, rate))
        .map_err(|e| e.to_string())
}

fn attack_cmd(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    let targets = a.targets()?;
    let [t] = targets.as_slice() else {
        return Err("login-attack takes exactly one --target".into());
    };
    if t.tls {
        return Err("login-attack: give the proxy's plain listener (plain:HOST:PORT)".into());
    }
    let ip = |k: &str, d: &str| -> Result<std::net::IpAddr, String> {
        let v = a.str_or(k, d);
        v.parse().map_err(|_| format!("--{k}: bad address {v}"))
    };
    let logins: usize = a.num("logins", 200)?;
    let args = attack::AttackArgs {
        addr: attack::resolve(&t.addr)?,
        user: common.user.clone(),
        pass: common.pass.clone(),
        attacker_src: ip("attacker-src", "127.0.0.2")?,
        legit_src: ip("legit-src", "127.0.0.3")?,
        connections: a.num("connections", 20)?,
        duration: Duration::from_secs_f64(a.num("secs", 60.0)?),
        warmup: a.num("warmup", 100)?,
        logins: logins.max(1),
        after: a.num("after", logins)?,
        interval: Duration::from_millis(a.num("interval-ms", 100)?),
        victim_prefix: a.str_or("victim-prefix", "victim"),
        wrong_pass: a.str_or("wrong-pass", "wrong-password"),
        pid: a.num("pid", 0)?,
    };
    let mut o = attack::run(&args)?;
    o.str("target", &t.name);
    println!("{}", o.render());
    Ok(())
}

fn wake_cmd(a: &Args) -> Result<(), String> {
    for row in wake::run(a.num::<u64>("n", 20_000)?)? {
        println!("{}", row.render());
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = Args::parse().and_then(|a| match a.cmd.as_str() {
        "latency" => latency(&a),
        "throughput" => throughput(&a),
        "pipeline" => pipeline(&a),
        "check" => check(&a),
        "login" => login::run(&a),
        "idle" => idle_cmd(&a),
        "relay" => relay_cmd(&a),
        "login-attack" => attack_cmd(&a),
        "delay-relay" => delay_relay_cmd(&a),
        "cache" => cache::run(&a),
        "rate" => rate::run(&a),
        "wake-cost" => wake_cmd(&a),
        other => Err(format!(
            "unknown subcommand {other} (latency, throughput, pipeline, check, login, idle, \
             relay, delay-relay, login-attack, cache, rate, wake-cost)"
        )),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imapgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
