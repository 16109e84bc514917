//! The audit writer: a bounded queue to a dedicated thread that appends lines to the file (or
//! stderr), so a slow disk never stalls a session. Sessions only format a line and try to queue
//! it; when the queue is full the record is dropped and counted (a warning in the log at most
//! once a second, and `imapgate_audit_records_dropped_total` when metrics are on).
//!
//! The thread writes everything queued, then flushes: a line reaches the file as soon as the
//! queue is empty (at once when traffic is light, in batches when it is heavy). [`Writer::reopen`]
//! makes it reopen the file (after log rotation); [`Writer::flush`] waits until every line
//! queued before it is written (for shutdown).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Opts};

use super::AuditError;

/// How often the thread wakes without lines, to report drops.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Appended to this file (created owner-only if missing).
    File(PathBuf),
    /// The process's stderr, shared with the logs (one write per line).
    Stderr,
}

impl Target {
    /// `-` is stderr; anything else a file.
    pub fn from_path(path: &Path) -> Target {
        if path == Path::new("-") {
            Target::Stderr
        } else {
            Target::File(path.to_path_buf())
        }
    }
}

/// What the thread is sent.
enum Msg {
    /// A whole line, with its `\n`.
    Line(Vec<u8>),
    /// Reopen the file (lines before this go to the old one).
    Reopen,
    /// Flush, then say so.
    Flush(mpsc::Sender<()>),
}

/// What the sessions and the thread share.
#[derive(Debug)]
struct Shared {
    /// Records dropped because the queue was full.
    dropped: IntCounter,
    /// Lines that could not be written (I/O errors).
    write_errors: IntCounter,
    /// Set by [`Writer::reopen`] (in case the queue is full), cleared when the thread reopens.
    reopen: AtomicBool,
}

/// The sending side, held by the stage.
#[derive(Debug)]
pub struct Writer {
    /// The bounded queue to the thread.
    tx: SyncSender<Msg>,
    /// Counters and flags.
    shared: Arc<Shared>,
}

impl Writer {
    /// Opens the target and starts the thread; at most `queue` lines wait in memory.
    pub fn start(target: Target, queue: usize) -> Result<Writer, AuditError> {
        let out = Output::open(&target)?;
        let (writer, rx) = Writer::detached(queue)?;
        let shared = writer.shared.clone();
        std::thread::Builder::new()
            .name("imapgate-audit".into())
            .spawn(move || run(rx, out, target, &shared))
            .map_err(AuditError::Spawn)?;
        Ok(writer)
    }

    /// The sending side and the receiving end, without a thread (for [`Writer::start`] and
    /// tests).
    fn detached(queue: usize) -> Result<(Writer, Receiver<Msg>), AuditError> {
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help).namespace(crate::metrics::NAMESPACE))
        };
        let shared = Arc::new(Shared {
            dropped: counter(
                "audit_records_dropped_total",
                "Audit records dropped because the writer's queue was full.",
            )?,
            write_errors: counter(
                "audit_write_errors_total",
                "Audit records that could not be written (I/O errors).",
            )?,
            reopen: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        Ok((Writer { tx, shared }, rx))
    }

    /// Queues a line without waiting; counts it as dropped when the queue is full (or the
    /// thread is gone).
    pub fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.shared.dropped.inc(),
        }
    }

    /// Asks the thread to reopen the file (after rotation): lines queued so far go to the old
    /// file, later ones to the new. A no-op for stderr.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        // With the queue full the flag alone does it, after the lines queued so far.
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Waits up to `timeout` until every line queued before this call is written and flushed;
    /// whether that happened.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = mpsc::channel();
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.get()
    }

    /// The writer's counters, for a Prometheus registry.
    pub fn counters(&self) -> [IntCounter; 2] {
        [
            self.shared.dropped.clone(),
            self.shared.write_errors.clone(),
        ]
    }
}

/// An open target.
enum Output {
    /// A file, buffered (flushed whenever the queue runs empty).
    File(BufWriter<File>),
    /// Stderr, unbuffered: each line is one write, so it does not interleave with log lines.
    Stderr,
}

impl Output {
    fn open(target: &Target) -> Result<Output, AuditError> {
        match target {
            Target::Stderr => Ok(Output::Stderr),
            Target::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| AuditError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Output::File(BufWriter::with_capacity(64 * 1024, file)))
            }
        }
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Output::File(f) => f.write_all(line),
            Output::Stderr => io::stderr().lock().write_all(line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Stderr => Ok(()),
        }
    }
}

/// The thread's state.
struct Thread<'a> {
    /// Where lines go now.
    out: Output,
    /// What to reopen.
    target: Target,
    /// Counters and flags shared with the sessions.
    shared: &'a Shared,
    /// A write failed and writing has not worked since (the error is logged once).
    failing: bool,
}

impl Thread<'_> {
    /// Counts and (once per failing spell) logs an I/O error.
    fn check(&mut self, result: io::Result<()>, what: &str) {
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                self.shared.write_errors.inc();
                if !self.failing {
                    tracing::error!(error = %e, "audit log: {what} failed; records are being lost");
                }
                self.failing = true;
            }
        }
    }

    /// Flushes and reopens the target; keeps the old one if that fails.
    fn reopen(&mut self) {
        let flushed = self.out.flush();
        self.check(flushed, "flush");
        match Output::open(&self.target) {
            Ok(new) => {
                self.out = new;
                self.failing = false;
                tracing::info!("audit log reopened");
            }
            Err(e) => tracing::error!(error = %e, "audit log: reopening failed; kept the old file"),
        }
    }
}

/// The thread: writes lines until every sender is gone.
fn run(rx: Receiver<Msg>, out: Output, target: Target, shared: &Shared) {
    let mut t = Thread {
        out,
        target,
        shared,
        failing: false,
    };
    let (mut reported, mut last_report) = (0, Instant::now());
    loop {
        let first = match rx.recv_timeout(REPORT_EVERY) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let _ = t.out.flush();
                return;
            }
        };
        // Everything queued now, in order, then one flush.
        let mut acks = Vec::new();
        for msg in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match msg {
                Msg::Line(line) => {
                    let written = t.out.write(&line);
                    t.check(written, "write");
                }
                Msg::Reopen => {
                    shared.reopen.store(false, Ordering::Release);
                    t.reopen();
                }
                Msg::Flush(ack) => acks.push(ack),
            }
        }
        // A reopen asked for while the queue was full.
        if shared.reopen.swap(false, Ordering::AcqRel) {
            t.reopen();
        }
        let flushed = t.out.flush();
        t.check(flushed, "flush");
        for ack in acks {
            let _ = ack.send(());
        }
        let dropped = shared.dropped.get();
        if dropped > reported && last_report.elapsed() >= REPORT_EVERY {
            tracing::warn!(
                dropped = dropped - reported,
                total = dropped,
                "audit log queue full: records dropped"
            );
            reported = dropped;
            last_report = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (w, rx) = Writer::detached(2).unwrap();
        for i in 0..5 {
            w.send(format!("{i}\n").into_bytes());
        }
        assert_eq!(w.dropped(), 3);
        let got: Vec<_> = rx
            .try_iter()
            .filter_map(|m| match m {
                Msg::Line(l) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![b"0\n".to_vec(), b"1\n".to_vec()]);
        // No thread: flush gives up rather than hanging.
        drop(rx);
        assert!(!w.flush(Duration::from_millis(50)));
    }

    #[test]
    fn writes_flushes_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let w = Writer::start(Target::File(path.clone()), 16).unwrap();
        w.send(b"one\n".to_vec());
        assert!(w.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
        // Rotation: the file is moved away, reopen creates a new one.
        let rotated = dir.path().join("audit.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        w.send(b"two\n".to_vec());
        assert!(w.flush(Duration::from_secs(5)));
        w.reopen();
        w.send(b"three\n".to_vec());
        assert!(w.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read(&rotated).unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"three\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
        assert_eq!(w.dropped(), 0);
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let err = Writer::start(Target::File("/nonexistent-dir/audit.log".into()), 4).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/audit.log"),
            "{err}"
        );
        assert_eq!(Target::from_path(Path::new("-")), Target::Stderr);
    }
}
