//! A bare TCP relay (tokio, `copy_bidirectional` with 32 KiB buffers, the same read size as
//! imapgate's relay): the floor cost of one extra userspace hop on loopback, measured next to
//! imapgate so its ratios can be read against what any proxy pays.

use std::io;

use tokio::net::{TcpListener, TcpStream};

pub async fn run(listen: &str, upstream: String) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("LISTENING relay {}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        let (mut client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut server,
                32 * 1024,
                32 * 1024,
            )
            .await;
        });
    }
}
