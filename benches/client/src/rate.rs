//! `rate`: the throughput ceiling of each target (issue 9): the largest offered rate of small
//! commands it answers with p99 latency under a bound (`--p99-ms`, 10), found by open-loop trials
//! at fixed offered rates.
//!
//! This module owns the load generator and one trial at a fixed rate; `search` (rate/search.rs)
//! owns the ceiling search, the verdict of a trial and the JSON rows.
//! - **Open loop.** A pacer task (on a timerfd) hands out command indices on a fixed schedule (command `i` is
//!   due at `t0 + i / rate`), round-robin over `--connections` logged-in, selected connections.
//!   Each connection pipelines: a writer task sends whatever is due without waiting for answers
//!   (tags `r<i>`, so every command is distinct), a reader task matches the tagged answers. So a
//!   slow answer never delays the next command, and the schedule is the same byte stream for
//!   every target. (The alternative, the next free connection, would queue commands in the
//!   client once all connections are busy and cap what is in flight at the connection count.)
//! - **Latency from the scheduled time**: `answer received - t0 - i / rate`, so time a command
//!   spent waiting behind a stall (in the pacer, the client, the proxy or the server) counts
//!   (no coordinated omission). The pacer's and the writer's own lateness is reported apart
//!   (`send_lag_p99_us`) to show when the client, not the target, is the limit.
//! - **Command mix**, read-only and deterministic, cycled by index: `UID FETCH n (FLAGS)` 4 in
//!   10, `UID FETCH n (BODY.PEEK[HEADER])` 3, `NOOP` 2, `UID SEARCH UNSEEN` 1; `n` cycles over
//!   UIDs 1..=`--uids` (11: the seeded INBOX).
//! - **A trial** runs `--warmup-secs` (not counted) plus `--secs`, then waits for every answer.
//!   It passes when p99 < the bound, achieved ≥ `--min-ratio` (0.95) × offered, and no command
//!   failed or was dropped (more than `--max-inflight` unanswered on one connection: the trial
//!   is then stopped early).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::blocking::{literal_len, quote};
use crate::{Common, Target};

mod search;
pub use search::run;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Rd = ReadHalf<Box<dyn Io>>;
type Wr = WriteHalf<Box<dyn Io>>;

const MIX_TEXT: &str = "UID FETCH n (FLAGS) 4, UID FETCH n (BODY.PEEK[HEADER]) 3, NOOP 2, \
                        UID SEARCH UNSEEN 1 (of 10)";

/// Appends command `i` of the mix (tag `r<i>`).
fn push_command(out: &mut Vec<u8>, i: u64, uids: u64) {
    let uid = 1 + i % uids;
    // Writing to a Vec cannot fail.
    let _ = match i % 10 {
        0 | 2 | 4 | 7 => write!(out, "r{i} UID FETCH {uid} (FLAGS)\r\n"),
        1 | 5 | 8 => write!(out, "r{i} UID FETCH {uid} (BODY.PEEK[HEADER])\r\n"),
        3 | 9 => write!(out, "r{i} NOOP\r\n"),
        _ => write!(out, "r{i} UID SEARCH UNSEEN\r\n"),
    };
}

/// `r<i> OK|NO|BAD ...`: (i, ok).
fn tagged(line: &[u8]) -> Option<(u64, bool)> {
    let rest = line.strip_prefix(b"r")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let i = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
    Some((i, rest[sp + 1..].starts_with(b"OK")))
}

/// Splits what a connection reads into response lines; literal bodies are skipped unread.
struct Framer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    skip: u64,
}

impl Framer {
    fn new() -> Framer {
        Framer {
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            skip: 0,
        }
    }
    /// Moves unparsed bytes to the front; fails when a line fills the whole buffer.
    fn make_room(&mut self) -> io::Result<()> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "line over 64 KiB",
                ));
            }
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        Ok(())
    }
    fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }
    fn filled(&mut self, n: usize) {
        self.end += n;
    }
    /// The next complete line (with its CRLF), or None when more bytes are needed.
    fn line(&mut self) -> Option<&[u8]> {
        if self.skip > 0 {
            let k = self.skip.min((self.end - self.start) as u64);
            self.start += k as usize;
            self.skip -= k;
            if self.skip > 0 {
                return None;
            }
        }
        let nl = self.buf[self.start..self.end]
            .iter()
            .position(|&b| b == b'\n')?;
        let s = self.start;
        self.start = s + nl + 1;
        self.skip = literal_len(&self.buf[s..self.start]).unwrap_or(0);
        Some(&self.buf[s..self.start])
    }
}

/// A logged-in, selected connection, split for a writer and a reader task.
struct Conn {
    rd: Rd,
    wr: Wr,
    fr: Framer,
}

async fn next_line(rd: &mut Rd, fr: &mut Framer) -> io::Result<Vec<u8>> {
    loop {
        if let Some(l) = fr.line() {
            return Ok(l.to_vec());
        }
        fr.make_room()?;
        let n = rd.read(fr.spare()).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed by the server",
            ));
        }
        fr.filled(n);
    }
}

async fn command_ok(c: &mut Conn, tag: &str, body: &str) -> io::Result<()> {
    c.wr.write_all(format!("{tag} {body}\r\n").as_bytes())
        .await?;
    c.wr.flush().await?;
    loop {
        let l = next_line(&mut c.rd, &mut c.fr).await?;
        if l.starts_with(tag.as_bytes()) && l.get(tag.len()) == Some(&b' ') {
            if l[tag.len() + 1..].starts_with(b"OK") {
                return Ok(());
            }
            let what = body.split(' ').next().unwrap_or("");
            let msg = format!("{what} failed: {}", l.escape_ascii());
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
    }
}

async fn open(
    addr: String,
    tls: Option<TlsConnector>,
    login: String,
    select: String,
) -> io::Result<Conn> {
    let tcp = TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(c) => Box::new(c.connect(crate::tls::server_name(), tcp).await?),
    };
    let (rd, wr) = tokio::io::split(io);
    let mut c = Conn {
        rd,
        wr,
        fr: Framer::new(),
    };
    let greeting = next_line(&mut c.rd, &mut c.fr).await?;
    if !greeting.starts_with(b"* OK") {
        let msg = format!("greeting: {}", greeting.escape_ascii());
        return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
    }
    command_ok(&mut c, "a", &login).await?;
    command_ok(&mut c, "s", &select).await?;
    Ok(c)
}

/// One trial's schedule: command `i` is due at `t0 + i * period`.
#[derive(Clone, Copy)]
struct Plan {
    t0: Instant,
    period_ns: f64,
    /// The first measured command (the ones before are the warm-up).
    first: u64,
    total: u64,
    conns: usize,
    uids: u64,
    max_inflight: u64,
}

impl Plan {
    fn at(&self, i: u64) -> Instant {
        self.t0 + Duration::from_nanos((i as f64 * self.period_ns) as u64)
    }
    fn since(&self, i: u64, now: Instant) -> u64 {
        now.saturating_duration_since(self.at(i)).as_nanos() as u64
    }
}

/// A timerfd in the runtime's epoll: tokio's own timers tick in milliseconds, and a pacer thread
/// of its own would cost a cross-thread wake-up per command.
struct Timer(AsyncFd<OwnedFd>);

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: a plain libc call; the descriptor is owned from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it; the OwnedFd keeps it open for
        // as long as the AsyncFd lives.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: as above (a valid descriptor, owned by the AsyncFd).
        let registered = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) };
        Ok(Timer(registered.map_err(io::Error::from)?))
    }

    async fn sleep(&self, d: Duration) -> io::Result<()> {
        if d.is_zero() {
            return Ok(());
        }
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: zero,
            it_value: value,
        };
        let fd = self.0.as_raw_fd();
        // SAFETY: valid descriptor and pointers.
        if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut expirations = [0u8; 8];
        loop {
            let mut ready = self.0.readable().await?;
            // SAFETY: reads 8 bytes into an 8-byte buffer.
            let r = ready.try_io(|_| {
                match unsafe { libc::read(fd, expirations.as_mut_ptr().cast(), 8) } {
                    n if n < 0 => Err(io::Error::last_os_error()),
                    _ => Ok(()),
                }
            });
            if let Ok(r) = r {
                return r;
            }
        }
    }
}

/// The pacer: hands every command to its connection's writer when it is due, never waiting for
/// the network.
async fn pace(
    plan: Plan,
    txs: Vec<mpsc::UnboundedSender<u64>>,
    abort: Arc<AtomicBool>,
) -> io::Result<()> {
    let timer = Timer::new()?;
    let mut i = 0;
    while i < plan.total && !abort.load(Relaxed) {
        let now = Instant::now();
        while i < plan.total && plan.at(i) <= now {
            // A writer that has gone away has failed; its error is reported by the trial.
            let _ = txs[(i % plan.conns as u64) as usize].send(i);
            i += 1;
        }
        if i < plan.total {
            timer
                .sleep(plan.at(i).saturating_duration_since(Instant::now()))
                .await?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Sent {
    sent: u64,
    dropped: u64,
    /// Scheduled time to the write, per measured command (ns).
    lag: Vec<u64>,
}

async fn write_loop(
    mut wr: Wr,
    mut rx: mpsc::UnboundedReceiver<u64>,
    plan: Plan,
    answered: Arc<AtomicU64>,
    abort: Arc<AtomicBool>,
    done: oneshot::Sender<u64>,
) -> Result<(Wr, Sent), String> {
    let mut out = Vec::with_capacity(4096);
    let mut s = Sent::default();
    while let Some(first) = rx.recv().await {
        out.clear();
        let now = Instant::now();
        let mut next = Some(first);
        while let Some(i) = next {
            if s.sent - answered.load(Relaxed) >= plan.max_inflight {
                s.dropped += 1;
                abort.store(true, Relaxed);
            } else {
                push_command(&mut out, i, plan.uids);
                s.sent += 1;
                if i >= plan.first {
                    s.lag.push(plan.since(i, now));
                }
            }
            next = rx.try_recv().ok();
        }
        if !out.is_empty() {
            wr.write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            wr.flush().await.map_err(|e| format!("write: {e}"))?;
        }
    }
    let _ = done.send(s.sent);
    Ok((wr, s))
}

#[derive(Default)]
struct Answers {
    /// Scheduled time to the tagged answer, per measured command (ns).
    samples: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    last: Option<Instant>,
}

async fn read_loop(
    mut rd: Rd,
    mut fr: Framer,
    plan: Plan,
    answered: Arc<AtomicU64>,
    mut done: oneshot::Receiver<u64>,
    drain: Duration,
) -> Result<(Rd, Framer, Answers), String> {
    let mut a = Answers::default();
    let (mut got, mut total, mut deadline) = (0u64, None, None);
    while total != Some(got) {
        fr.make_room().map_err(|e| e.to_string())?;
        tokio::select! {
            r = rd.read(fr.spare()) => {
                let n = r.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err(format!("closed by the server after {got} answers"));
                }
                fr.filled(n);
                let now = Instant::now();
                while let Some(line) = fr.line() {
                    let Some((i, ok)) = tagged(line) else { continue };
                    got += 1;
                    if !ok {
                        a.errors += 1;
                        a.first_error.get_or_insert_with(|| line.escape_ascii().to_string());
                    }
                    if i >= plan.first {
                        a.samples.push(plan.since(i, now));
                        a.last = Some(now);
                    }
                }
                answered.store(got, Relaxed);
            }
            r = &mut done, if total.is_none() => {
                total = Some(r.unwrap_or(got));
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                if deadline.is_some() => {
                let missing = total.unwrap_or(got).saturating_sub(got);
                return Err(format!("{missing} answers missing {drain:?} after the last command"));
            }
        }
    }
    Ok((rd, fr, a))
}

/// What one trial measured.
struct Trial {
    offered: f64,
    achieved: f64,
    samples: Vec<u64>,
    lag: Vec<u64>,
    sent: u64,
    dropped: u64,
    errors: u64,
    first_error: Option<String>,
    aborted: bool,
}

#[derive(Clone, Copy)]
struct Cfg {
    secs: f64,
    warmup_secs: f64,
    uids: u64,
    max_inflight: u64,
    drain: Duration,
    bound_ns: u64,
    min_ratio: f64,
}

/// Runs one trial at `rate` over `conns` (taken and given back).
async fn trial(conns: Vec<Conn>, rate: f64, cfg: &Cfg) -> Result<(Vec<Conn>, Trial), String> {
    let first = (cfg.warmup_secs * rate).round() as u64;
    let plan = Plan {
        t0: Instant::now() + Duration::from_millis(5),
        period_ns: 1e9 / rate,
        first,
        total: first + (cfg.secs * rate).round().max(1.0) as u64,
        conns: conns.len(),
        uids: cfg.uids.max(1),
        max_inflight: cfg.max_inflight,
    };
    let abort = Arc::new(AtomicBool::new(false));
    let (mut writers, mut readers) = (JoinSet::new(), JoinSet::new());
    let mut txs = Vec::with_capacity(conns.len());
    for (k, c) in conns.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let answered = Arc::new(AtomicU64::new(0));
        let (ans, ab) = (answered.clone(), abort.clone());
        writers.spawn(async move {
            let r = write_loop(c.wr, rx, plan, ans, ab, done_tx).await;
            (k, r.map_err(|e| format!("connection {k}: {e}")))
        });
        let drain = cfg.drain;
        readers.spawn(async move {
            let r = read_loop(c.rd, c.fr, plan, answered, done_rx, drain).await;
            (k, r.map_err(|e| format!("connection {k}: {e}")))
        });
        txs.push(tx);
    }
    let pab = abort.clone();
    let pacer = tokio::spawn(pace(plan, txs, pab));
    let n = plan.conns;
    let mut wrs: Vec<Option<Wr>> = (0..n).map(|_| None).collect();
    let mut rds: Vec<Option<(Rd, Framer)>> = (0..n).map(|_| None).collect();
    let mut t = Trial {
        offered: rate,
        achieved: 0.0,
        samples: Vec::with_capacity((cfg.secs * rate) as usize + 16),
        lag: Vec::with_capacity((cfg.secs * rate) as usize + 16),
        sent: 0,
        dropped: 0,
        errors: 0,
        first_error: None,
        aborted: false,
    };
    let mut first_err = None;
    while let Some(j) = writers.join_next().await {
        match j.map_err(|e| e.to_string()) {
            Ok((k, Ok((wr, s)))) => {
                wrs[k] = Some(wr);
                t.sent += s.sent;
                t.dropped += s.dropped;
                t.lag.extend(s.lag);
            }
            Ok((_, Err(e))) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let mut last = None;
    while let Some(j) = readers.join_next().await {
        match j.map_err(|e| e.to_string()) {
            Ok((k, Ok((rd, fr, a)))) => {
                rds[k] = Some((rd, fr));
                t.samples.extend(a.samples);
                t.errors += a.errors;
                last = last.max(a.last);
                if t.first_error.is_none() {
                    t.first_error = a.first_error;
                }
            }
            Ok((_, Err(e))) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match pacer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("pacer: {e}")),
        Err(e) => return Err(format!("pacer: {e}")),
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    t.aborted = abort.load(Relaxed);
    if let Some(last) = last {
        let secs = last.duration_since(plan.at(plan.first)).as_secs_f64();
        t.achieved = t.samples.len() as f64 / secs.max(cfg.secs);
    }
    let conns = wrs
        .into_iter()
        .zip(rds)
        .filter_map(|(w, r)| Some((w?, r?)))
        .map(|(wr, (rd, fr))| Conn { rd, wr, fr })
        .collect();
    Ok((conns, t))
}

async fn open_all(common: &Common, t: &Target, n: usize) -> Result<Vec<Conn>, String> {
    let tls = common.tls_for(t)?.cloned().map(TlsConnector::from);
    let login = format!("LOGIN {} {}", quote(&common.user), quote(&common.pass));
    let select = format!("SELECT {}", quote(&common.mailbox));
    let mut set = JoinSet::new();
    for k in 0..n {
        let f = open(t.addr.clone(), tls.clone(), login.clone(), select.clone());
        set.spawn(async move { (k, f.await) });
    }
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(j) = set.join_next().await {
        let (k, c) = j.map_err(|e| e.to_string())?;
        conns[k] = Some(c.map_err(|e| format!("{} ({}): {e}", t.name, t.addr))?);
    }
    Ok(conns.into_iter().flatten().collect())
}

/// Sends LOGOUT on every connection (the answers are not awaited: the connections close).
async fn logout(conns: impl Iterator<Item = Conn>) {
    for mut c in conns {
        let _ = c.wr.write_all(b"z LOGOUT\r\n").await;
        let _ = c.wr.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_skips_literals_and_finds_tags() {
        let mut fr = Framer::new();
        let input =
            b"* 1 FETCH (BODY[HEADER] {12}\r\nr7 OK fake\r\n)\r\nr7 OK done\r\nr8 NO x\r\nr9";
        fr.spare()[..input.len()].copy_from_slice(input);
        fr.filled(input.len());
        let mut tags = Vec::new();
        while let Some(l) = fr.line() {
            tags.extend(tagged(l));
        }
        assert_eq!(tags, [(7, true), (8, false)]);
        let mut out = Vec::new();
        push_command(&mut out, 1, 11);
        push_command(&mut out, 6, 11);
        assert_eq!(
            out,
            b"r1 UID FETCH 2 (BODY.PEEK[HEADER])\r\nr6 UID SEARCH UNSEEN\r\n"
        );
    }
}
