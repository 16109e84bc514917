//! Reading secrets for the command line: a password from the terminal without echo (asked
//! twice), or one line of standard input when it is not a terminal.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Result, bail};
use zeroize::Zeroizing;

/// A password: from the terminal (no echo, confirmed) or the first line of stdin.
pub fn read_password() -> Result<Zeroizing<Vec<u8>>> {
    if !std::io::stdin().is_terminal() {
        let line = read_line_stdin()?;
        if line.is_empty() {
            bail!("empty password on standard input");
        }
        return Ok(line);
    }
    let first = prompt("Password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    if first.is_empty() {
        bail!("empty password");
    }
    Ok(first)
}

/// The first line of standard input, without its line ending.
pub fn read_line_stdin() -> Result<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::new());
    std::io::stdin().lock().read_until(b'\n', &mut line)?;
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Asks on stderr and reads a line from the terminal with echo off.
fn prompt(text: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut err = std::io::stderr();
    write!(err, "{text}")?;
    err.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr/tcsetattr on stdin with a struct we own.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    let saved = term;
    if have {
        term.c_lflag &= !libc::ECHO;
        term.c_lflag |= libc::ECHONL;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    let line = read_line_stdin();
    if have {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    line
}
