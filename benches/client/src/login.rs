//! `login`: login latency, several targets interleaved login by login (A B C A B C ..., the
//! order rotated every round so no target always follows the same one).
//!
//! One login: connect (TCP, and the TLS handshake for a TLS target), read the greeting, send the
//! login command, read its tagged OK. That span, connect to tagged OK, is the figure reported
//! (`*_us`); the part from sending the command to the tagged OK is reported too (`login_*_us`),
//! and the greeting (`greeting_median_us`). Then LOGOUT and its answer are awaited, untimed, before
//! the next login starts.
//!
//! Every target has its own credentials (`--cred NAME=MECH:USER:SECRET`; targets without one use
//! `--user`/`--pass` with LOGIN):
//!   login:USER:PASSWORD    `LOGIN "USER" "PASSWORD"`
//!   xoauth2:USER:TOKEN     `AUTHENTICATE XOAUTH2 <base64 of user=USER^Aauth=Bearer TOKEN^A^A>`
//!                          (SASL-IR, one round trip)
//!
//! `--warmup` logins per target are made first (interleaved the same way) and not recorded: the
//! first logins pay for cold caches (a proxy's Argon2id check and token request, Dovecot's first
//! auth-worker and imap processes). A failed warm-up login aborts the run (a misconfigured
//! target); failed measured logins are counted and reported, at most `--max-failures` (default 0)
//! are tolerated.

use std::time::Instant;

use crate::blocking::{Conn, quote};
use crate::json::Obj;
use crate::{Args, Common, Target, rotation, stats};

enum Mech {
    Login,
    Xoauth2,
}

struct Cred {
    mech: Mech,
    user: String,
    secret: String,
}

impl Cred {
    fn mech_name(&self) -> &'static str {
        match self.mech {
            Mech::Login => "login",
            Mech::Xoauth2 => "xoauth2",
        }
    }

    /// The command (without its tag).
    fn command(&self) -> Vec<u8> {
        match self.mech {
            Mech::Login => format!("LOGIN {} {}", quote(&self.user), quote(&self.secret)),
            Mech::Xoauth2 => format!(
                "AUTHENTICATE XOAUTH2 {}",
                base64(
                    format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.secret).as_bytes()
                )
            ),
        }
        .into_bytes()
    }
}

/// `NAME=MECH:USER:SECRET` (the secret is the rest: it may hold colons).
fn parse_cred(s: &str) -> Result<(String, Cred), String> {
    let bad = || format!("--cred {s}: expected NAME=login|xoauth2:USER:SECRET");
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let mut parts = rest.splitn(3, ':');
    let (mech, user, secret) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(p)) => (m, u, p),
        _ => return Err(bad()),
    };
    let mech = match mech {
        "login" => Mech::Login,
        "xoauth2" => Mech::Xoauth2,
        _ => return Err(bad()),
    };
    Ok((
        name.to_string(),
        Cred {
            mech,
            user: user.to_string(),
            secret: secret.to_string(),
        },
    ))
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One timed login: (connect to tagged OK, command to tagged OK, connect to greeting), in ns.
fn once(common: &Common, t: &Target, cmd: &[u8]) -> Result<(u64, u64, u64), String> {
    let t0 = Instant::now();
    let mut c = Conn::connect(&t.addr, common.tls_for(t)?).map_err(|e| format!("connect: {e}"))?;
    let greeted = t0.elapsed();
    let (ok, last) = c.login_command(cmd).map_err(|e| e.to_string())?;
    let total = t0.elapsed();
    if !ok {
        return Err(format!("login refused: {}", last.escape_ascii()));
    }
    c.logout();
    Ok((
        total.as_nanos() as u64,
        (total - greeted).as_nanos() as u64,
        greeted.as_nanos() as u64,
    ))
}

pub fn run(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    let targets = a.targets()?;
    let n: usize = a.num("n", 1000)?;
    let warmup: usize = a.num("warmup", 50)?;
    let max_failures: usize = a.num("max-failures", 0)?;
    let mut creds = Vec::new();
    for s in a.all("cred") {
        creds.push(parse_cred(&s)?);
    }
    for (name, _) in &creds {
        if !targets.iter().any(|t| &t.name == name) {
            return Err(format!("--cred for {name}, which is no --target"));
        }
    }
    let default = Cred {
        mech: Mech::Login,
        user: common.user.clone(),
        secret: common.pass.clone(),
    };
    let cred_of: Vec<&Cred> = targets
        .iter()
        .map(|t| {
            creds
                .iter()
                .rev()
                .find(|(name, _)| name == &t.name)
                .map_or(&default, |(_, c)| c)
        })
        .collect();
    let cmds: Vec<Vec<u8>> = cred_of.iter().map(|c| c.command()).collect();

    for r in 0..warmup {
        for ti in rotation(targets.len(), r) {
            once(&common, &targets[ti], &cmds[ti]).map_err(|e| {
                format!(
                    "{} ({}): warm-up login: {e}",
                    targets[ti].name, targets[ti].addr
                )
            })?;
        }
    }
    let mut total: Vec<Vec<u64>> = vec![Vec::with_capacity(n); targets.len()];
    let mut login: Vec<Vec<u64>> = vec![Vec::with_capacity(n); targets.len()];
    let mut greet: Vec<Vec<u64>> = vec![Vec::with_capacity(n); targets.len()];
    let mut failed = vec![0usize; targets.len()];
    let mut first_error: Vec<Option<String>> = vec![None; targets.len()];
    let started = Instant::now();
    for r in 0..n {
        for ti in rotation(targets.len(), r) {
            match once(&common, &targets[ti], &cmds[ti]) {
                Ok((t, l, g)) => {
                    total[ti].push(t);
                    login[ti].push(l);
                    greet[ti].push(g);
                }
                Err(e) => {
                    failed[ti] += 1;
                    first_error[ti].get_or_insert(e);
                    if failed.iter().sum::<usize>() > max_failures {
                        return Err(format!(
                            "{}: login failed: {}",
                            targets[ti].name,
                            first_error[ti].as_deref().unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for (ti, t) in targets.iter().enumerate() {
        let mut o = Obj::new();
        o.str("kind", "login")
            .str("client", if t.tls { "tls" } else { "plain" })
            .str("target", &t.name)
            .str("addr", &t.addr)
            .str("mech", cred_of[ti].mech_name())
            .str("user", &cred_of[ti].user)
            .int("warmup", warmup as u64)
            .int("failed", failed[ti] as u64)
            .num("run_secs", secs);
        if let Some(e) = &first_error[ti] {
            o.str("first_error", e);
        }
        if total[ti].is_empty() {
            o.int("n", 0);
            println!("{}", o.render());
            continue;
        }
        let s = stats(&mut total[ti]);
        let l = stats(&mut login[ti]);
        let g = stats(&mut greet[ti]);
        o.int("n", s.n as u64)
            .num("min_us", s.min / 1e3)
            .num("median_us", s.median / 1e3)
            .num("p90_us", s.p90 / 1e3)
            .num("p99_us", s.p99 / 1e3)
            .num("max_us", s.max / 1e3)
            .num("mean_us", s.mean / 1e3)
            .num("login_median_us", l.median / 1e3)
            .num("login_p99_us", l.p99 / 1e3)
            .num("greeting_median_us", g.median / 1e3);
        println!("{}", o.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn creds() {
        let (name, c) = parse_cred("d=xoauth2:alice:tok:en").unwrap();
        assert_eq!(name, "d");
        assert_eq!(c.user, "alice");
        assert_eq!(c.secret, "tok:en");
        assert_eq!(
            String::from_utf8(c.command()).unwrap(),
            format!(
                "AUTHENTICATE XOAUTH2 {}",
                base64(b"user=alice\x01auth=Bearer tok:en\x01\x01")
            )
        );
        let (_, c) = parse_cred("p=login:bob:a \"b\"").unwrap();
        assert_eq!(
            String::from_utf8(c.command()).unwrap(),
            "LOGIN \"bob\" \"a \\\"b\\\"\""
        );
        assert!(parse_cred("p=plain:bob:x").is_err());
        assert!(parse_cred("p=login:bob").is_err());
    }
}
