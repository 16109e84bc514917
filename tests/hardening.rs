//! Process hardening of a running `imapgate serve`: no core dumps (the memory holds passwords).

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

/// The running proxy has a core file size limit of 0, soft and hard (and it set itself
/// non-dumpable: the unit test in src/hardening.rs checks that flag, which only the process
/// itself can read).
#[test]
fn running_proxy_writes_no_core_dumps() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().unreachable_upstream());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in:\n{limits}"));
    let values: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(values, ["0", "0"], "{core}");
}
