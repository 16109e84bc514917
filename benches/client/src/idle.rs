//! Many concurrent sessions sitting in IDLE, and the memory of a process (the proxy) measured
//! from /proc before and after.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::blocking::quote;
use crate::json::Obj;
use crate::tls;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A session in IDLE (the client keeps it open; nothing more is read).
pub struct Session {
    io: BufReader<Box<dyn Io>>,
}

fn proto_err(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

async fn read_line(r: &mut BufReader<Box<dyn Io>>, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    let n = r.read_until(b'\n', line).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ));
    }
    Ok(())
}

async fn command(r: &mut BufReader<Box<dyn Io>>, tag: &str, body: &str) -> io::Result<()> {
    let cmd = format!("{tag} {body}\r\n");
    r.get_mut().write_all(cmd.as_bytes()).await?;
    r.get_mut().flush().await?;
    let mut line = Vec::new();
    loop {
        read_line(r, &mut line).await?;
        if line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ') {
            if line[tag.len() + 1..].starts_with(b"OK") {
                return Ok(());
            }
            return Err(proto_err(format!(
                "{} failed: {}",
                body.split(' ').next().unwrap_or(""),
                line.escape_ascii()
            )));
        }
    }
}

/// Connect, log in, SELECT INBOX, IDLE, and wait for the `+` continuation.
pub async fn open_idle(
    addr: &str,
    tls: Option<TlsConnector>,
    user: &str,
    pass: &str,
) -> io::Result<Session> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(c) => Box::new(c.connect(tls::server_name(), tcp).await?),
    };
    let mut r = BufReader::with_capacity(4096, io);
    let mut line = Vec::new();
    read_line(&mut r, &mut line).await?;
    if !line.starts_with(b"* OK") {
        return Err(proto_err(format!("greeting: {}", line.escape_ascii())));
    }
    command(
        &mut r,
        "a",
        &format!("LOGIN {} {}", quote(user), quote(pass)),
    )
    .await?;
    command(&mut r, "s", "SELECT INBOX").await?;
    r.get_mut().write_all(b"i IDLE\r\n").await?;
    r.get_mut().flush().await?;
    loop {
        read_line(&mut r, &mut line).await?;
        if line.starts_with(b"+") {
            return Ok(Session { io: r });
        }
        if line.starts_with(b"i ") {
            return Err(proto_err(format!("IDLE refused: {}", line.escape_ascii())));
        }
    }
}

impl Session {
    /// DONE, LOGOUT, read to the end (bounded).
    pub async fn close(mut self) {
        let io = self.io.get_mut();
        let _ = io.write_all(b"DONE\r\nz LOGOUT\r\n").await;
        let _ = io.flush().await;
        let mut line = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                line.clear();
                match self.io.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let _ = self.io.get_mut().shutdown().await;
    }
}

/// Memory and descriptors of a process, from /proc (KiB).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub vm_rss: u64,
    pub rss: u64,
    pub pss: u64,
    pub private: u64,
    pub anonymous: u64,
    pub fds: u64,
    pub threads: u64,
}

fn kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn sample(pid: u32) -> io::Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok(Mem {
        vm_rss: kib(&status, "VmRSS:"),
        threads: kib(&status, "Threads:"),
        rss: kib(&rollup, "Rss:"),
        pss: kib(&rollup, "Pss:"),
        private: kib(&rollup, "Private_Clean:") + kib(&rollup, "Private_Dirty:"),
        anonymous: kib(&rollup, "Anonymous:"),
        fds,
    })
}

impl Mem {
    pub fn json(&self) -> Obj {
        let mut o = Obj::new();
        o.int("vm_rss_kib", self.vm_rss)
            .int("rss_kib", self.rss)
            .int("pss_kib", self.pss)
            .int("private_kib", self.private)
            .int("anonymous_kib", self.anonymous)
            .int("fds", self.fds)
            .int("threads", self.threads);
        o
    }
}

/// Waits until the process holds at most `fds` descriptors (sessions closed).
async fn wait_fds(pid: u32, fds: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if sample(pid).map(|m| m.fds <= fds).unwrap_or(true) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct IdleArgs {
    pub label: String,
    pub addr: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub user: String,
    pub pass: String,
    pub n: usize,
    pub warmup: usize,
    pub concurrency: usize,
    pub pid: u32,
    pub settle: Duration,
    /// Written once the sessions are open and measured; they stay open until `release` exists
    /// (for a measurement of other traffic while they sit there).
    pub ready: Option<String>,
    /// See `ready`.
    pub release: Option<String>,
}

async fn open_many(a: &IdleArgs, n: usize) -> (Vec<Session>, Vec<String>) {
    let sem = Arc::new(Semaphore::new(a.concurrency));
    let connector = a.tls.clone().map(TlsConnector::from);
    let mut set = JoinSet::new();
    for _ in 0..n {
        let sem = sem.clone();
        let (addr, user, pass, c) = (
            a.addr.clone(),
            a.user.clone(),
            a.pass.clone(),
            connector.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("open semaphore");
            tokio::time::timeout(Duration::from_secs(60), open_idle(&addr, c, &user, &pass))
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
        });
    }
    let mut sessions = Vec::with_capacity(n);
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (sessions, errors)
}

async fn close_all(sessions: Vec<Session>) {
    let mut set = JoinSet::new();
    for s in sessions {
        set.spawn(s.close());
    }
    while set.join_next().await.is_some() {}
}

/// The whole idle-memory measurement; returns the JSON result.
pub async fn run(a: IdleArgs) -> io::Result<Obj> {
    let base = sample(a.pid)?;
    // Warm-up: the runtime's workers, lazy statics and the first allocator arenas.
    let (warm, errors) = open_many(&a, a.warmup).await;
    if let Some(e) = errors.first() {
        return Err(proto_err(format!("warm-up session failed: {e}")));
    }
    close_all(warm).await;
    wait_fds(a.pid, base.fds, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sample(a.pid)?;

    let t0 = Instant::now();
    let (sessions, errors) = open_many(&a, a.n).await;
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(a.settle).await;
    let after = sample(a.pid)?;
    let opened = sessions.len() as u64;
    if let (Some(ready), Some(release)) = (&a.ready, &a.release) {
        std::fs::write(ready, format!("{opened}\n"))?;
        while !std::path::Path::new(release).exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let held = sample(a.pid)?;

    let t1 = Instant::now();
    close_all(sessions).await;
    let closed_all = wait_fds(a.pid, before.fds, Duration::from_secs(60)).await;
    let close_secs = t1.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_close = sample(a.pid)?;

    let per = |b: u64, a: u64| {
        if opened == 0 {
            0.0
        } else {
            (a as f64 - b as f64) / opened as f64
        }
    };
    let mut o = Obj::new();
    o.str("kind", "memory")
        .str("listener", &a.label)
        .int("sessions", a.n as u64)
        .int("opened", opened)
        .int("failed", errors.len() as u64)
        .num("open_secs", open_secs)
        .num("close_secs", close_secs)
        .bool("closed_all", closed_all)
        .num("per_session_vm_rss_kib", per(before.vm_rss, after.vm_rss))
        .num("per_session_pss_kib", per(before.pss, after.pss))
        .num(
            "per_session_private_kib",
            per(before.private, after.private),
        )
        .num(
            "per_session_anonymous_kib",
            per(before.anonymous, after.anonymous),
        )
        .obj("before", before.json())
        .obj("after", after.json())
        .obj("held", held.json())
        .obj("after_close", after_close.json());
    if let Some(e) = errors.first() {
        o.str("first_error", e);
    }
    Ok(o)
}
