//! The shutdown signal every task listens to (after mini-redis): the server sets a `watch` flag;
//! each task holds a [`Shutdown`] and a clone of an `mpsc::Sender` whose channel closes once every
//! task has dropped it, which tells the server that all have finished. A `watch` (rather than a
//! broadcast) means a session spawned just after the signal still sees it.

use tokio::sync::watch;

/// Listens for the server's shutdown notice.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// True once shutdown has begun.
    notify: watch::Receiver<bool>,
}

impl Shutdown {
    /// Wraps a receiver of the notice flag.
    pub fn new(notify: watch::Receiver<bool>) -> Shutdown {
        Shutdown { notify }
    }

    /// Whether shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        *self.notify.borrow()
    }

    /// Waits for the notice (returns at once if it was already given, or if the server is gone).
    pub async fn recv(&mut self) {
        let _ = self.notify.wait_for(|&down| down).await;
    }
}
