//! Process hardening at start-up: no core dumps. A core file (or a ptrace attach by another
//! process of the same user) would expose every password and token the proxy holds in memory;
//! the process turns both off before it reads any configuration or accepts a client.

use std::io;

/// Sets `RLIMIT_CORE` to 0 (soft and hard, so it cannot be raised again) and, on Linux, marks
/// the process non-dumpable (`PR_SET_DUMPABLE` 0: no core even under a core pipe handler, and
/// `/proc/PID/mem` and ptrace closed to same-user processes without `CAP_SYS_PTRACE`).
pub fn disable_core_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes one integer argument; the rest are ignored.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_dumps_are_off_afterwards() {
        disable_core_dumps().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: getrlimit writes the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) }, 0);
        assert_eq!((lim.rlim_cur, lim.rlim_max), (0, 0));
        #[cfg(target_os = "linux")]
        {
            // SAFETY: PR_GET_DUMPABLE takes no argument.
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
        }
    }
}
