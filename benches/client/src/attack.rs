//! `login-attack`: what a password-guessing client from one address gets out of the proxy, and
//! what a legitimate user on another address notices meanwhile.
//!
//! Three phases against the proxy's cleartext listener (loopback, so cleartext LOGIN is allowed):
//!
//! 1. *unloaded*: the legitimate client (sockets bound to `--legit-src`, e.g. 127.0.0.3) does
//!    `--warmup` unrecorded logins, then `--logins` full logins one after the other: connect,
//!    greeting, `LOGIN`, tagged OK, `LOGOUT`. A login's latency runs from the start of the
//!    connect to the tagged OK.
//! 2. *under attack*, for `--secs`: `--connections` attacker connections (bound to
//!    `--attacker-src`, e.g. 127.0.0.2) send `LOGIN victimN wrongpw` as fast as answers come, a
//!    new user name every attempt (so that per-user locks do not stand in for the per-address
//!    penalty), reconnecting whenever the proxy closes a connection (after `auth.max_failures`,
//!    the pre-login timeout, or a per-address limit). The legitimate client keeps logging in
//!    during the whole window.
//! 3. *after*: `--after` more legitimate logins once the attackers are gone (a control for drift
//!    on a noisy machine: if it is as slow as phase 2, the attack was not the cause).
//!
//! The legitimate logins are paced, one every `--interval-ms` at most (default 100 ms, 10/s): a
//! real user does not log in faster, and the proxy's accept-rate limit (20/s per address by
//! default) would otherwise refuse the measuring client itself. The same pacing is used in every
//! phase.
//!
//! The attacker's rate is the number of LOGINs *answered* (tagged NO/OK/BAD) per second, over the
//! whole window and over its second half, when the penalty has long reached its cap. Whether an
//! answer came from the upstream or from the proxy's refusal cannot be told from the client side
//! (both are `NO [AUTHENTICATIONFAILED]`); the answer's latency hints at it.
//!
//! Stopping: at the end of the window the attacker sockets are shut down from the main thread
//! (every attacker registers a clone of its socket), which ends their blocking reads at once.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::blocking::quote;
use crate::json::Obj;
use crate::{Stats, stats};

/// Longest line read from the proxy (its lines before login are short).
const MAX_LINE: u64 = 64 * 1024;

/// Width of the buckets of the attacker's answer timeline.
const BUCKET_SECS: f64 = 5.0;

/// What the subcommand is told.
pub struct AttackArgs {
    /// The proxy's cleartext listener.
    pub addr: SocketAddr,
    /// The legitimate user (a seeded Dovecot user).
    pub user: String,
    /// Its password.
    pub pass: String,
    /// Source address of the attacker's sockets.
    pub attacker_src: IpAddr,
    /// Source address of the legitimate client's sockets.
    pub legit_src: IpAddr,
    /// Attacker connections open at once.
    pub connections: usize,
    /// Length of the attack window.
    pub duration: Duration,
    /// Legitimate logins before the measured ones, not recorded (the proxy's and Dovecot's
    /// first connections are slower).
    pub warmup: usize,
    /// Legitimate logins before the attack.
    pub logins: usize,
    /// Legitimate logins after the attack.
    pub after: usize,
    /// Least time between the starts of two legitimate logins.
    pub interval: Duration,
    /// Attacker user names are this followed by a number.
    pub victim_prefix: String,
    /// The attacker's (wrong) password.
    pub wrong_pass: String,
    /// The proxy's process id, to report the CPU time it spent in each phase (0: not reported).
    pub pid: u32,
}

/// CPU time (user + system) of process `pid` so far, from /proc/PID/stat; `None` when unknown.
fn cpu_time(pid: u32) -> Option<Duration> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ: 100 on every Linux architecture this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Adds the proxy's CPU time over a phase (`before` → `after`, `wall` long) to `o`.
fn cpu_fields(o: &mut Obj, before: Option<Duration>, after: Option<Duration>, wall: Duration) {
    if let (Some(b), Some(a)) = (before, after) {
        let used = a.saturating_sub(b).as_secs_f64();
        o.num("proxy_cpu_s", used)
            .num("proxy_cpu_share", used / wall.as_secs_f64().max(1e-9));
    }
}

/// A socket from `src` (any port) to `dst`.
fn connect_from(src: IpAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    socket.connect(&dst.into())?;
    let tcp: TcpStream = socket.into();
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A line-oriented IMAP connection (nothing here carries literals).
struct Lines {
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Lines {
    fn new(tcp: TcpStream) -> Lines {
        Lines {
            reader: BufReader::new(tcp),
            line: Vec::with_capacity(256),
        }
    }

    /// The next line, CRLF included; an error at the end of the stream.
    fn next(&mut self) -> io::Result<&[u8]> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(&self.line)
    }

    fn send(&mut self, text: &str) -> io::Result<()> {
        let w = self.reader.get_mut();
        w.write_all(text.as_bytes())?;
        w.flush()
    }
}

/// Whether `line` is the tagged response to `tag`.
fn tagged<'a>(line: &'a [u8], tag: &str) -> Option<&'a [u8]> {
    line.strip_prefix(tag.as_bytes())?.strip_prefix(b" ")
}

/// One full legitimate login; its latency, connect to tagged OK. LOGOUT is not timed.
fn legit_login(a: &AttackArgs) -> Result<Duration, String> {
    let t0 = Instant::now();
    let tcp = connect_from(a.legit_src, a.addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut c = Lines::new(tcp);
    let greeting = c.next().map_err(|e| format!("greeting: {e}"))?;
    if !greeting.starts_with(b"* OK") {
        return Err(format!("greeting: {}", greeting.escape_ascii()));
    }
    let login = format!("l1 LOGIN {} {}\r\n", quote(&a.user), quote(&a.pass));
    c.send(&login).map_err(|e| format!("LOGIN: {e}"))?;
    loop {
        let line = c.next().map_err(|e| format!("LOGIN: {e}"))?;
        if let Some(rest) = tagged(line, "l1") {
            if !rest.starts_with(b"OK") {
                return Err(format!("LOGIN refused: {}", line.escape_ascii()));
            }
            break;
        }
        if line.starts_with(b"* BYE") {
            return Err(format!("LOGIN: {}", line.escape_ascii()));
        }
    }
    let latency = t0.elapsed();
    // Best effort: the session is measured; its end is not.
    if c.send("l2 LOGOUT\r\n").is_ok() {
        while let Ok(line) = c.next() {
            if tagged(line, "l2").is_some() {
                break;
            }
        }
    }
    Ok(latency)
}

/// Legitimate logins of one phase.
#[derive(Default)]
struct Series {
    /// Latencies of the successful ones (nanoseconds).
    ns: Vec<u64>,
    /// Latencies by the [`BUCKET_SECS`] bucket of the phase they started in.
    buckets: Vec<Vec<u64>>,
    /// Logins that failed.
    failed: u64,
    /// The first failure's reason.
    first_error: Option<String>,
}

impl Series {
    fn json(&mut self) -> Obj {
        let mut o = Obj::new();
        o.int("n", self.ns.len() as u64).int("failed", self.failed);
        if let Some(e) = &self.first_error {
            o.str("first_error", e);
        }
        if !self.ns.is_empty() {
            let s: Stats = stats(&mut self.ns);
            o.num("min_ms", s.min / 1e6)
                .num("median_ms", s.median / 1e6)
                .num("p90_ms", s.p90 / 1e6)
                .num("p99_ms", s.p99 / 1e6)
                .num("max_ms", s.max / 1e6)
                .num("mean_ms", s.mean / 1e6);
        }
        if let Some(first) = self.buckets.first_mut().filter(|b| !b.is_empty()) {
            let s = stats(first);
            o.num("first_5s_median_ms", s.median / 1e6)
                .num("first_5s_max_ms", s.max / 1e6);
        }
        // Median per bucket in microseconds (0: no successful login started in it).
        let medians: Vec<u64> = self
            .buckets
            .iter_mut()
            .map(|b| {
                if b.is_empty() {
                    0
                } else {
                    (stats(b).median / 1e3) as u64
                }
            })
            .collect();
        o.ints("timeline_median_us", &medians);
        o
    }
}

/// Paced legitimate logins: `count` of them, or until `until`.
fn legit_series(a: &AttackArgs, count: Option<usize>, until: Option<Instant>) -> Series {
    let mut series = Series::default();
    let start = Instant::now();
    let mut next = start;
    let mut done = 0usize;
    loop {
        if count.is_some_and(|n| done >= n) || until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        // Pacing (a schedule, not a wait for anything): one login per interval at most.
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        let began = Instant::now();
        if until.is_some_and(|u| began >= u) {
            break;
        }
        next = (next + a.interval).max(began);
        match legit_login(a) {
            Ok(d) => {
                let ns = d.as_nanos() as u64;
                series.ns.push(ns);
                let b = (began.duration_since(start).as_secs_f64() / BUCKET_SECS) as usize;
                if series.buckets.len() <= b {
                    series.buckets.resize_with(b + 1, Vec::new);
                }
                series.buckets[b].push(ns);
            }
            Err(e) => {
                series.failed += 1;
                if series.first_error.is_none() {
                    series.first_error = Some(e);
                }
            }
        }
        done += 1;
    }
    series
}

/// How an attacker's LOGIN was answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Tagged NO (a wrong password, or the proxy's refusal).
    No,
    /// Tagged OK: the victim exists with that password (it must not).
    Ok,
    /// Tagged BAD (or anything else).
    Bad,
}

/// One answered attempt.
struct Answered {
    /// When the answer came, from the start of the window.
    at: Duration,
    /// LOGIN sent to answer.
    latency: Duration,
    /// The answer.
    answer: Answer,
}

/// One attacker thread's record.
#[derive(Default)]
struct Tally {
    /// Every LOGIN answered, in order.
    answered: Vec<Answered>,
    /// Connections opened.
    connects: u64,
    /// Connections whose greeting was a `* BYE` (refused by a per-address limit).
    refused_at_connect: u64,
    /// Connections the proxy closed while a LOGIN was unanswered (or before it could be sent).
    closed_unanswered: u64,
    /// `* BYE Too many authentication failures.` seen (after `auth.max_failures`).
    bye_failures: u64,
    /// `* BYE Disconnected for inactivity.` seen (the pre-login timeout).
    bye_inactivity: u64,
    /// Other `* BYE` lines after the greeting.
    bye_other: u64,
    /// Connect errors (the proxy gone, or the source address unusable).
    connect_errors: u64,
    /// The first connect error.
    first_error: Option<String>,
}

impl Tally {
    /// Counts a `* BYE` line by its kind.
    fn bye(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).to_ascii_lowercase();
        if text.contains("authentication failures") {
            self.bye_failures += 1;
        } else if text.contains("inactivity") {
            self.bye_inactivity += 1;
        } else {
            self.bye_other += 1;
        }
    }
}

/// What the attacker threads share with the main thread.
struct Shared {
    /// Set once the window is over; attackers registering a socket afterwards stop at once.
    stop: bool,
    /// A clone of every attacker's current socket, to shut it down at the end.
    sockets: HashMap<usize, TcpStream>,
}

/// How one attacker connection ended.
enum Ended {
    /// The proxy closed it (or refused it); open another.
    Closed,
    /// The window is over.
    Stopped,
}

/// One attacker connection: greeting, then wrong LOGINs until the proxy closes it.
fn attack_connection(
    a: &AttackArgs,
    tcp: TcpStream,
    t0: Instant,
    victims: &AtomicU64,
    tally: &mut Tally,
    stopped: &dyn Fn() -> bool,
) -> Ended {
    let mut c = Lines::new(tcp);
    match c.next() {
        Ok(g) if g.starts_with(b"* OK") => {}
        Ok(g) => {
            if g.starts_with(b"* BYE") {
                tally.refused_at_connect += 1;
            }
            return if stopped() {
                Ended::Stopped
            } else {
                Ended::Closed
            };
        }
        Err(_) => {
            return if stopped() {
                Ended::Stopped
            } else {
                Ended::Closed
            };
        }
    }
    let mut tag_n = 0u64;
    loop {
        tag_n += 1;
        let tag = format!("x{tag_n}");
        let victim = victims.fetch_add(1, Ordering::Relaxed);
        let cmd = format!(
            "{tag} LOGIN {} {}\r\n",
            quote(&format!("{}{victim}", a.victim_prefix)),
            quote(&a.wrong_pass)
        );
        let sent = Instant::now();
        let mut answered = false;
        if c.send(&cmd).is_ok() {
            while let Ok(line) = c.next() {
                if let Some(rest) = tagged(line, &tag) {
                    let answer = if rest.starts_with(b"OK") {
                        Answer::Ok
                    } else if rest.starts_with(b"NO") {
                        Answer::No
                    } else {
                        Answer::Bad
                    };
                    let now = Instant::now();
                    tally.answered.push(Answered {
                        at: now.duration_since(t0),
                        latency: now.duration_since(sent),
                        answer,
                    });
                    answered = true;
                    break;
                }
                if line.starts_with(b"* BYE") {
                    let line = line.to_vec();
                    tally.bye(&line);
                }
            }
        } else {
            // The proxy closed first; its BYE may still be readable.
            while let Ok(line) = c.next() {
                if line.starts_with(b"* BYE") {
                    let line = line.to_vec();
                    tally.bye(&line);
                }
            }
        }
        if stopped() {
            return Ended::Stopped;
        }
        if !answered {
            tally.closed_unanswered += 1;
            return Ended::Closed;
        }
    }
}

/// One attacker: connections one after the other until the window is over.
fn attacker(
    id: usize,
    a: &AttackArgs,
    t0: Instant,
    shared: &Mutex<Shared>,
    victims: &AtomicU64,
) -> Tally {
    let mut tally = Tally::default();
    let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
    let stopped = || lock().stop;
    let mut consecutive_errors = 0u32;
    loop {
        if stopped() {
            break;
        }
        let tcp = match connect_from(a.attacker_src, a.addr) {
            Ok(t) => t,
            Err(e) => {
                tally.connect_errors += 1;
                consecutive_errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(e.to_string());
                }
                if consecutive_errors >= 100 {
                    // The proxy is gone or the address unusable: this attacker gives up.
                    break;
                }
                continue;
            }
        };
        consecutive_errors = 0;
        tally.connects += 1;
        // Never hangs past the window by much even if the shutdown below were missed.
        let _ = tcp.set_read_timeout(Some(a.duration + Duration::from_secs(120)));
        match tcp.try_clone() {
            Ok(clone) => {
                let mut s = lock();
                if s.stop {
                    break;
                }
                s.sockets.insert(id, clone);
            }
            Err(e) => {
                tally.first_error.get_or_insert(e.to_string());
                break;
            }
        }
        let ended = attack_connection(a, tcp, t0, victims, &mut tally, &stopped);
        lock().sockets.remove(&id);
        if let Ended::Stopped = ended {
            break;
        }
    }
    tally
}

/// Runs the three phases; one JSON object.
pub fn run(a: &AttackArgs) -> Result<Obj, String> {
    let warm = legit_series(a, Some(a.warmup), None);
    if warm.failed > 0 {
        return Err(format!(
            "legitimate login failed in the warm-up: {}",
            warm.first_error.as_deref().unwrap_or("?")
        ));
    }
    eprintln!(
        "login-attack: {} unloaded logins from {} (one per {} ms at most)",
        a.logins,
        a.legit_src,
        a.interval.as_millis()
    );
    let (cpu0, wall0) = (cpu_time(a.pid), Instant::now());
    let mut unloaded = legit_series(a, Some(a.logins), None);
    let (cpu1, wall1) = (cpu_time(a.pid), wall0.elapsed());
    if unloaded.ns.is_empty() {
        return Err(format!(
            "no legitimate login succeeded: {}",
            unloaded.first_error.as_deref().unwrap_or("?")
        ));
    }
    eprintln!(
        "login-attack: {} attacker connections from {} for {} s, legitimate logins from {} \
         meanwhile",
        a.connections,
        a.attacker_src,
        a.duration.as_secs_f64(),
        a.legit_src
    );
    let shared = Mutex::new(Shared {
        stop: false,
        sockets: HashMap::new(),
    });
    let victims = AtomicU64::new(1);
    let t0 = Instant::now();
    let deadline = t0 + a.duration;
    let (mut loaded, tallies) = thread::scope(|scope| {
        let handles: Vec<_> = (0..a.connections)
            .map(|id| {
                let (shared, victims) = (&shared, &victims);
                scope.spawn(move || attacker(id, a, t0, shared, victims))
            })
            .collect();
        let loaded = legit_series(a, None, Some(deadline));
        // The window may not be over if the legitimate client was fast; the attack lasts it out.
        let left = deadline.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            thread::sleep(left);
        }
        {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            s.stop = true;
            for sock in s.sockets.values() {
                let _ = sock.shutdown(Shutdown::Both);
            }
        }
        let tallies: Vec<Tally> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        (loaded, tallies)
    });
    let window = t0.elapsed();
    let cpu2 = cpu_time(a.pid);
    eprintln!("login-attack: {} logins after the attack", a.after);
    let t3 = Instant::now();
    let mut after = legit_series(a, Some(a.after), None);
    let (cpu3, wall3) = (cpu_time(a.pid), t3.elapsed());

    // The attacker's record, answers within the window only.
    let secs = a.duration.as_secs_f64();
    let half = secs / 2.0;
    let mut answers: Vec<&Answered> = tallies
        .iter()
        .flat_map(|t| t.answered.iter())
        .filter(|x| x.at.as_secs_f64() < secs)
        .collect();
    answers.sort_by_key(|x| x.at);
    let count = |f: &dyn Fn(&Answered) -> bool| answers.iter().filter(|x| f(x)).count() as u64;
    let total = answers.len() as u64;
    let late = count(&|x| x.at.as_secs_f64() >= half);
    let buckets = (secs / BUCKET_SECS).ceil() as usize;
    let mut timeline = vec![0u64; buckets.max(1)];
    for x in &answers {
        let b = ((x.at.as_secs_f64() / BUCKET_SECS) as usize).min(timeline.len() - 1);
        timeline[b] += 1;
    }
    let mut late_latency: Vec<u64> = answers
        .iter()
        .filter(|x| x.at.as_secs_f64() >= half)
        .map(|x| x.latency.as_nanos() as u64)
        .collect();
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();

    let mut atk = Obj::new();
    atk.int("answers", total)
        .int("no", count(&|x| x.answer == Answer::No))
        .int("ok", count(&|x| x.answer == Answer::Ok))
        .int("bad", count(&|x| x.answer == Answer::Bad))
        .num("answers_per_s", total as f64 / secs)
        .num("penalised_window_from_s", half)
        .int("penalised_window_answers", late)
        .num("penalised_answers_per_s", late as f64 / (secs - half))
        .int("answers_first_second", count(&|x| x.at.as_secs_f64() < 1.0))
        .int("connects", sum(|t| t.connects))
        .int("refused_at_connect", sum(|t| t.refused_at_connect))
        .int("closed_unanswered", sum(|t| t.closed_unanswered))
        .int("bye_too_many_failures", sum(|t| t.bye_failures))
        .int("bye_inactivity", sum(|t| t.bye_inactivity))
        .int("bye_other", sum(|t| t.bye_other))
        .int("connect_errors", sum(|t| t.connect_errors))
        .num("timeline_bucket_s", BUCKET_SECS)
        .ints("timeline", &timeline);
    if let Some(last) = answers.last() {
        atk.num("last_answer_at_s", last.at.as_secs_f64());
    }
    if !late_latency.is_empty() {
        let s = stats(&mut late_latency);
        atk.num("penalised_answer_median_s", s.median / 1e9)
            .num("penalised_answer_min_s", s.min / 1e9);
    }
    if let Some(e) = tallies.iter().find_map(|t| t.first_error.as_deref()) {
        atk.str("first_connect_error", e);
    }

    let ratio = |k: fn(&Stats) -> f64, a: &mut Series, b: &mut Series| -> Option<f64> {
        if a.ns.is_empty() || b.ns.is_empty() {
            return None;
        }
        Some(k(&stats(&mut b.ns)) / k(&stats(&mut a.ns)))
    };
    let mut o = Obj::new();
    o.str("kind", "login_attack")
        .str("addr", &a.addr.to_string())
        .str("attacker_src", &a.attacker_src.to_string())
        .str("user", &a.user)
        .str("legit_src", &a.legit_src.to_string())
        .int("connections", a.connections as u64)
        .num("duration_s", secs)
        .num("window_s", window.as_secs_f64())
        .num("legit_interval_ms", a.interval.as_secs_f64() * 1e3)
        .int("legit_warmup", a.warmup as u64);
    if let Some(r) = ratio(|s| s.median, &mut unloaded, &mut loaded) {
        o.num("ratio_median", r);
    }
    if let Some(r) = ratio(|s| s.p99, &mut unloaded, &mut loaded) {
        o.num("ratio_p99", r);
    }
    if let Some(r) = ratio(|s| s.median, &mut unloaded, &mut after) {
        o.num("after_ratio_median", r);
    }
    let mut un = unloaded.json();
    cpu_fields(&mut un, cpu0, cpu1, wall1);
    let mut ua = loaded.json();
    cpu_fields(&mut ua, cpu1, cpu2, window);
    let mut af = after.json();
    cpu_fields(&mut af, cpu2, cpu3, wall3);
    o.obj("unloaded", un)
        .obj("under_attack", ua)
        .obj("after", af)
        .obj("attacker", atk);
    Ok(o)
}

/// The socket address of `addr` (HOST:PORT).
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}
