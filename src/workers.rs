//! Session threads: one single-threaded tokio runtime per thread, each with its own I/O driver
//! (epoll), as nginx runs one event loop per worker process. They have no tokio time driver: their
//! timers are kept by [`crate::timer`]'s keeper thread, and work that needs tokio's timers runs on
//! the main runtime. A session is handed to
//! one of them when it is accepted (round robin) and stays there: no work stealing, no wake-ups
//! across threads, no task migration. The accept loops, the admin listener and the background
//! jobs stay on the main runtime. What this module owns: starting, handing out and stopping the
//! threads; what runs on them is the server's business.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// `[runtime]`: how the proxy uses the machine's cores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Session threads; 0 (the default) means one per core the process may use.
    pub session_threads: usize,
}

impl RuntimeConfig {
    /// The number of session threads to start.
    pub fn threads(&self) -> usize {
        if self.session_threads > 0 {
            return self.session_threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// One session thread.
struct Worker {
    /// Spawns onto the thread's runtime.
    handle: Handle,
    /// Ends the thread's `block_on` (dropped or sent: either stops it).
    stop: oneshot::Sender<()>,
    /// The thread, joined at [`Workers::stop`].
    thread: JoinHandle<()>,
}

/// The session threads.
pub struct Workers {
    /// The threads, in round-robin order.
    workers: Vec<Worker>,
    /// Index of the next thread to get a session.
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` session threads (at least one); `main` is the runtime that runs what needs
    /// tokio's timers for them ([`crate::timer::offload`]).
    pub fn start(n: usize, main: &Handle) -> io::Result<Workers> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            // I/O only: no time driver to visit at every park (src/timer.rs).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let (ready, entered) = std::sync::mpsc::channel();
            let main = main.clone();
            let thread = std::thread::Builder::new()
                .name(format!("imapgate-s{i}"))
                .spawn(move || {
                    let entered_ok = crate::timer::enter_session_thread(main);
                    let failed = entered_ok.is_err();
                    let _ = ready.send(entered_ok);
                    if failed {
                        return;
                    }
                    // Tasks of a current-thread runtime run only inside its `block_on`.
                    let _ = runtime.block_on(stopped);
                    // Sessions still open are dropped with the runtime (their sockets close).
                })?;
            // Nothing is spawned on a thread before it is a session thread.
            entered
                .recv()
                .map_err(|_| io::Error::other("session thread ended at start"))??;
            workers.push(Worker {
                handle,
                stop,
                thread,
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// How many session threads run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `task` on the next thread in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        drop(self.workers[i].handle.spawn(task));
    }

    /// Stops the threads and waits for them.
    pub fn stop(self) {
        for w in self.workers {
            let _ = w.stop.send(());
            let _ = w.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_go_round_robin_and_stop_joins() {
        let main = tokio::runtime::Runtime::new().expect("main runtime");
        let workers = Workers::start(2, main.handle()).expect("threads");
        assert_eq!(workers.len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = tx.send(name);
            });
        }
        let mut names: Vec<_> = (0..4).map(|_| rx.recv().ok().flatten()).collect();
        names.sort();
        assert_eq!(
            names,
            ["imapgate-s0", "imapgate-s0", "imapgate-s1", "imapgate-s1"]
                .map(|s| Some(s.to_owned()))
        );
        workers.stop();
    }

    #[test]
    fn zero_means_one_per_core() {
        let cfg = RuntimeConfig::default();
        assert!(cfg.threads() >= 1);
        let cfg = RuntimeConfig { session_threads: 3 };
        assert_eq!(cfg.threads(), 3);
    }
}
