//! `wake-cost`: what one sleep and wake-up costs on this machine, the part of a relay's CPU per
//! message no proxy's code can change.
//!
//! Two threads pass a byte back and forth over two pipes, each blocking in `read` until the
//! other writes (a relay's `epoll_wait` sleeps and wakes the same way): first both pinned to CPU
//! 0, so every hand-over is a switch on one CPU, then on CPUs 0 and 1, so every wake-up reaches
//! a CPU that went idle. Reported per round trip: wall time and the CPU time the first thread
//! was charged (`RUSAGE_THREAD`), which with one sleep and one wake per round trip is the
//! charge of one wake-up.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use crate::json::Obj;

/// Runs both placements for `n` round trips each; one JSON row per placement.
pub fn run(n: u64) -> Result<Vec<Obj>, String> {
    let mut rows = Vec::new();
    for (placement, cpus) in [("same_cpu", (0, 0)), ("two_cpus", (0, 1))] {
        let (wall_us, cpu_us) = ping_pong(n, cpus)?;
        let mut o = Obj::new();
        o.str("kind", "wake_cost")
            .str("placement", placement)
            .int("round_trips", n)
            .num("wall_us_per_round_trip", wall_us)
            .num("cpu_us_per_wake", cpu_us);
        rows.push(o);
    }
    Ok(rows)
}

/// A pipe's read and write ends.
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe(2) succeeded, so both are open descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for cpu < 1024.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(format!(
            "pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The calling thread's CPU time (user + system), microseconds.
fn thread_cpu_us() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Moves one byte: write it to `to`, then block until one comes back on `from`.
fn exchange(to: &OwnedFd, from: &OwnedFd) -> Result<(), String> {
    let mut b = [b'x'];
    // SAFETY: one byte from/to a live one-byte buffer on open descriptors.
    let (w, r) = unsafe {
        (
            libc::write(to.as_raw_fd(), b.as_ptr().cast(), 1),
            libc::read(from.as_raw_fd(), b.as_mut_ptr().cast(), 1),
        )
    };
    if w != 1 || r != 1 {
        return Err(format!(
            "pipe exchange: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `n` round trips with the two threads on `cpus`: (wall us, first thread's CPU us) per trip.
fn ping_pong(n: u64, cpus: (usize, usize)) -> Result<(f64, f64), String> {
    let (a_read, a_write) = pipe()?;
    let (b_read, b_write) = pipe()?;
    let echo = std::thread::spawn(move || -> Result<(), String> {
        pin(cpus.1)?;
        let mut b = [0u8];
        for _ in 0..n {
            // SAFETY: one byte into/out of a live one-byte buffer on open descriptors.
            let (r, w) = unsafe {
                let r = libc::read(a_read.as_raw_fd(), b.as_mut_ptr().cast(), 1);
                (r, libc::write(b_write.as_raw_fd(), b.as_ptr().cast(), 1))
            };
            if r != 1 || w != 1 {
                return Err(format!("echo: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    });
    let measured = (|| -> Result<(f64, f64), String> {
        pin(cpus.0)?;
        // A few trips first, so both threads sit where they were pinned.
        for _ in 0..100.min(n / 10) {
            exchange(&a_write, &b_read)?;
        }
        let (t0, c0) = (Instant::now(), thread_cpu_us());
        let trips = n - 100.min(n / 10);
        for _ in 0..trips {
            exchange(&a_write, &b_read)?;
        }
        let trips = trips.max(1) as f64;
        Ok((
            t0.elapsed().as_secs_f64() * 1e6 / trips,
            (thread_cpu_us() - c0) / trips,
        ))
    })();
    // Closed ends end the echo thread's loop if this side stopped early.
    drop((a_write, b_read));
    // Unpin the caller again (it is the bench's main thread).
    // SAFETY: a zeroed cpu_set_t filled with every CPU the machine reports.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..(libc::sysconf(libc::_SC_NPROCESSORS_CONF).max(1) as usize).min(1024) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let echoed = echo
        .join()
        .map_err(|_| "echo thread panicked".to_string())?;
    let result = measured?;
    echoed?;
    Ok(result)
}
