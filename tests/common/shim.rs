//! A userspace TCP shim between the proxy and Dovecot that injects faults: cut a connection after
//! N bytes, delay every chunk, flip bytes at given offsets. Faults are set as defaults for new
//! connections, or changed on a live connection (counted from the moment they are set), so a
//! test can log in normally and then cut in the middle of one particular response.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Faults for one connection. "down" is upstream (Dovecot) → proxy, "up" is proxy → upstream.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Sleep this long before forwarding each chunk (both directions).
    pub delay: Duration,
    /// Close both sockets after this many more bytes down.
    pub cut_down_after: Option<usize>,
    /// Close both sockets after this many more bytes up.
    pub cut_up_after: Option<usize>,
    /// XOR the byte at each offset (counted from the start of the connection, down) with the
    /// mask.
    pub flip_down: Vec<(usize, u8)>,
    /// Forward in pieces of 1..=n bytes (sizes vary), one write each, yielding in between.
    pub split: Option<usize>,
}

#[derive(Debug, Default)]
struct ConnState {
    faults: Faults,
    /// Bytes forwarded down / up so far.
    down: usize,
    up: usize,
    closed: bool,
}

/// A handle on one proxied connection.
#[derive(Clone)]
pub struct Conn {
    state: Arc<Mutex<ConnState>>,
}

impl Conn {
    /// Cuts the connection once `n` more bytes have gone down (0: before any more).
    pub fn cut_down_after(&self, n: usize) {
        self.state.lock().unwrap().faults.cut_down_after = Some(n);
    }

    /// Cuts the connection once `n` more bytes have gone up.
    pub fn cut_up_after(&self, n: usize) {
        self.state.lock().unwrap().faults.cut_up_after = Some(n);
    }

    /// Flips the byte `offset` bytes from now in the down direction.
    pub fn flip_down_in(&self, offset: usize, mask: u8) {
        let mut s = self.state.lock().unwrap();
        let at = s.down + offset;
        s.faults.flip_down.push((at, mask));
    }

    /// Sets the per-chunk delay.
    pub fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().faults.delay = d;
    }

    /// Bytes forwarded (down, up).
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.down, s.up)
    }

    pub fn closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }
}

#[derive(Default)]
struct Shared {
    defaults: Faults,
    conns: Vec<Conn>,
}

/// The shim: listens on 127.0.0.1:0 and forwards to `upstream`.
pub struct Shim {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Shim {
    /// Starts the shim on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> Shim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let state = Arc::new(Mutex::new(ConnState {
                    faults: s2.lock().unwrap().defaults.clone(),
                    ..ConnState::default()
                }));
                s2.lock().unwrap().conns.push(Conn {
                    state: state.clone(),
                });
                tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(upstream).await {
                        let _ = up.set_nodelay(true);
                        relay(client, up, state.clone()).await;
                    }
                    state.lock().unwrap().closed = true;
                });
            }
        });
        Shim { addr, shared, task }
    }

    /// The proxy's `--upstream` value for this shim.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Faults applied to connections accepted from now on.
    pub fn set_defaults(&self, f: Faults) {
        self.shared.lock().unwrap().defaults = f;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.lock().unwrap().conns.len()
    }

    /// Connections not yet closed.
    pub fn active(&self) -> usize {
        self.shared
            .lock()
            .unwrap()
            .conns
            .iter()
            .filter(|c| !c.closed())
            .count()
    }

    /// The n-th accepted connection (0-based).
    pub fn conn(&self, n: usize) -> Conn {
        self.shared.lock().unwrap().conns[n].clone()
    }

    /// The most recently accepted connection.
    pub fn last(&self) -> Conn {
        self.shared
            .lock()
            .unwrap()
            .conns
            .last()
            .expect("no connection through the shim yet")
            .clone()
    }

    /// Waits until `n` connections were accepted and all of them are closed (the proxy's
    /// start-up probe, say). Panics after 10 s.
    pub async fn wait_quiet(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.accepted() < n || self.active() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "shim: still {} of {} connections active",
                self.active(),
                self.accepted()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(PartialEq)]
enum PumpEnd {
    /// The source closed; the destination was shut down for writing.
    Eof,
    /// Cut by a fault, or an error: close everything.
    Abort,
}

async fn relay(client: TcpStream, up: TcpStream, state: Arc<Mutex<ConnState>>) {
    let (cr, cw) = client.into_split();
    let (ur, uw) = up.into_split();
    let upward = pump(cr, uw, state.clone(), false);
    let downward = pump(ur, cw, state.clone(), true);
    tokio::pin!(upward, downward);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut upward, if !up_done => {
                if r == PumpEnd::Abort { break; }
                up_done = true;
            }
            r = &mut downward, if !down_done => {
                if r == PumpEnd::Abort { break; }
                down_done = true;
            }
        }
    }
    // Dropping the halves closes both sockets.
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: Arc<Mutex<ConnState>>,
    down: bool,
) -> PumpEnd {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // A budget of zero set while nothing arrives cuts at once.
        let n = {
            let read = from.read(&mut buf);
            tokio::pin!(read);
            loop {
                let budget_zero = {
                    let s = state.lock().unwrap();
                    let b = if down {
                        s.faults.cut_down_after
                    } else {
                        s.faults.cut_up_after
                    };
                    b == Some(0)
                };
                if budget_zero {
                    return PumpEnd::Abort;
                }
                tokio::select! {
                    r = &mut read => break r,
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        };
        let n = match n {
            Ok(0) => {
                let _ = to.shutdown().await;
                return PumpEnd::Eof;
            }
            Ok(n) => n,
            Err(_) => return PumpEnd::Abort,
        };
        let (send, cut, delay) = {
            let mut s = state.lock().unwrap();
            let start = if down { s.down } else { s.up };
            let budget = if down {
                &mut s.faults.cut_down_after
            } else {
                &mut s.faults.cut_up_after
            };
            let (send, cut) = match budget {
                Some(b) => {
                    let send = n.min(*b);
                    *b -= send;
                    (send, *b == 0)
                }
                None => (n, false),
            };
            if down {
                for &(at, mask) in &s.faults.flip_down {
                    if at >= start && at < start + send {
                        buf[at - start] ^= mask;
                    }
                }
                s.down += send;
            } else {
                s.up += send;
            }
            (send, cut, s.faults.delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let split = state.lock().unwrap().faults.split;
        match split {
            Some(k) if k > 0 => {
                let mut at = 0;
                let mut x = (send as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                while at < send {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let piece = (1 + (x % k as u64) as usize).min(send - at);
                    if to.write_all(&buf[at..at + piece]).await.is_err() {
                        return PumpEnd::Abort;
                    }
                    at += piece;
                    tokio::task::yield_now().await;
                }
            }
            _ => {
                if send > 0 && to.write_all(&buf[..send]).await.is_err() {
                    return PumpEnd::Abort;
                }
            }
        }
        if cut {
            return PumpEnd::Abort;
        }
    }
}
