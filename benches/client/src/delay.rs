//! A userspace delay relay (the kernel here has no netem): every byte is delivered `delay` after
//! it arrived, each direction separately, after passing a `rate` bit/s link (paced: a chunk
//! leaves the link `len * 8 / rate` after the previous one, or after its arrival if the link was
//! idle). One reader and one writer task per direction; the queue between them is unbounded
//! (the link's buffer), so the delay is added once, not per TCP window. Deadlines are absolute,
//! so tokio's 1 ms timer rounds each wake-up but never accumulates. Current-thread runtime: the
//! relay's own CPU stays small and on one thread.
//!
//! Bytes relayed in each direction are printed on stderr when a connection closes.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest chunk read at once: 16 KiB is 2.6 ms at 50 Mbit/s, so pacing stays smooth.
const CHUNK: usize = 16 * 1024;

pub async fn run(listen: &str, upstream: String, delay: Duration, rate_bps: f64) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("LISTENING delay-relay {}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        let (client, peer) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pipe(cr, sw, delay, rate_bps));
            let down = tokio::spawn(pipe(sr, cw, delay, rate_bps));
            let up = up.await.unwrap_or(0);
            let down = down.await.unwrap_or(0);
            eprintln!(
                "delay-relay: {peer} closed: {up} bytes to upstream, {down} bytes from upstream"
            );
        });
    }
}

/// One direction; returns the bytes delivered.
async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, delay: Duration, rate_bps: f64) -> u64 {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        // When the link is next free.
        let mut link_free = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            let now = Instant::now();
            let start = link_free.max(now);
            link_free = start + Duration::from_secs_f64(n as f64 * 8.0 / rate_bps);
            if tx.send((link_free + delay, buf)).is_err() {
                break;
            }
        }
    });
    let mut total = 0u64;
    while let Some((at, buf)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if w.write_all(&buf).await.is_err() {
            break;
        }
        total += buf.len() as u64;
    }
    let _ = w.shutdown().await;
    reader.abort();
    total
}
