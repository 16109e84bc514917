//! The audit record format: one JSON object per line, written by hand (no serde on the hot
//! path, and byte strings need an encoding serde would not give them).
//!
//! ```text
//! {"time":"2025-06-01T09:14:07.123Z","audit":"login","session":7,"client_ip":"192.0.2.10",
//!  "client_port":51514,"listener":"tls","tls":true,"user":"alice","mechanism":"LOGIN",
//!  "upstream":"default","result":"refused"}
//! {"time":"...","audit":"command","session":7,"client_ip":"192.0.2.10","client_port":51514,
//!  "user":"alice","upstream":"default","command":"copy","uid":true,"mailbox":"INBOX",
//!  "destination":"Archive","set":"1:4","result":"ok","local":false,"ms":3}
//! ```
//!
//! Text from the client (user and mailbox names, message sets) is a JSON string when it is
//! UTF-8 (control characters, quotes, backslashes and U+2028/U+2029 escaped), and otherwise an
//! object `{"text": <lossy UTF-8>, "hex": <every byte>}`, so nothing is lost and nothing can break
//! the line. A mailbox argument the stage could not read (sent as a literal it did not see) is
//! `null`; an argument the command does not have is absent. The record types have no field for
//! a password, a token, a SASL message, flags or message content, so none can be written.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::phases::{LoginResult, Outcome};
use crate::proto::command::CommandName;
use crate::session::ListenerKind;

/// The longest message set recorded; a longer one is cut and marked `set_truncated`.
pub const MAX_SET: usize = 256;

/// The longest user or mailbox name recorded (bytes); longer ones are cut and marked.
pub const MAX_NAME: usize = 1024;

/// A login attempt, as the audit log records it.
#[derive(Debug, Clone)]
pub struct LoginRecord<'a> {
    /// When the attempt ended: the audit trail's ordering and correlation with other logs.
    pub time: SystemTime,
    /// The session id, as in the proxy's own logs: joins this record to the session's commands.
    pub session: u64,
    /// Who connected (from the PROXY header when there is one): the address an investigation
    /// starts from.
    pub client: SocketAddr,
    /// Which listener accepted the connection (`tls` or `plain`).
    pub listener: ListenerKind,
    /// Whether the connection was encrypted at the login (a password sent in clear matters).
    pub tls: bool,
    /// The user name the client gave, if it could be read: whose account was tried.
    pub user: Option<&'a [u8]>,
    /// `LOGIN`, `PLAIN`, `XOAUTH2`, ...: how the client authenticated.
    pub mechanism: &'static str,
    /// The upstream the login went to, if one was chosen: where the account lives.
    pub upstream: Option<&'a str>,
    /// How it ended: ok, refused (by the upstream), denied (by a stage), invalid, error.
    pub result: LoginResult,
}

/// A mailbox argument: its name, or unknown (a literal the stage did not see, or unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mailbox<'a> {
    /// The decoded name (quoted-string escapes removed), modified UTF-7 or UTF-8 as sent.
    Known(&'a [u8]),
    /// Not seen: written as `null`, never guessed.
    Unknown,
}

/// A command that changes or removes mail or mailboxes, with how it ended.
#[derive(Debug, Clone)]
pub struct CommandRecord<'a> {
    /// When the command completed (or the session ended with it in flight).
    pub time: SystemTime,
    /// The session id: joins this record to the session's login record and logs.
    pub session: u64,
    /// Who sent it: the client's address.
    pub client: SocketAddr,
    /// The logged-in user (as the client named it): whose mail changed.
    pub user: Option<&'a [u8]>,
    /// The upstream the session is logged in to: where the mail changed.
    pub upstream: Option<&'a str>,
    /// Which command (a fixed label: `store`, `copy`, ...).
    pub command: CommandName,
    /// Prefixed with `UID`: whether `set` holds UIDs or sequence numbers.
    pub uid: bool,
    /// The mailbox acted on: the selected one (STORE, EXPUNGE, COPY/MOVE source, CLOSE), the one
    /// created, deleted, appended to, or renamed. `None` when the command has none.
    pub mailbox: Option<Mailbox<'a>>,
    /// The second mailbox: COPY/MOVE destination, RENAME's new name. `None` when the command has
    /// none.
    pub destination: Option<Mailbox<'a>>,
    /// The message set as sent (UID or sequence set): which messages, bounded by [`MAX_SET`].
    pub set: Option<&'a [u8]>,
    /// The tagged result (`ok`, `no`, `bad`; `bye` or `none` when the session ended first):
    /// whether anything actually changed.
    pub result: Outcome,
    /// Answered by the proxy (a stage refused it), so the server never saw it.
    pub local: bool,
    /// Milliseconds from the command's first byte to its answer (large APPENDs, slow EXPUNGEs).
    pub elapsed_ms: u64,
}

impl LoginRecord<'_> {
    /// The record as one JSON line (with its `\n`).
    pub fn to_line(&self) -> Vec<u8> {
        let mut j = Json::new(self.time, "login");
        j.u64("session", self.session);
        j.client(self.client);
        j.str(
            "listener",
            match self.listener {
                ListenerKind::Tls => "tls",
                ListenerKind::Plain => "plain",
            },
        );
        j.bool("tls", self.tls);
        j.opt_bytes("user", self.user, MAX_NAME);
        j.str("mechanism", self.mechanism);
        match self.upstream {
            Some(u) => j.str("upstream", u),
            None => j.null("upstream"),
        }
        j.str("result", self.result.label());
        j.finish()
    }
}

impl CommandRecord<'_> {
    /// The record as one JSON line (with its `\n`).
    pub fn to_line(&self) -> Vec<u8> {
        let mut j = Json::new(self.time, "command");
        j.u64("session", self.session);
        j.client(self.client);
        j.opt_bytes("user", self.user, MAX_NAME);
        match self.upstream {
            Some(u) => j.str("upstream", u),
            None => j.null("upstream"),
        }
        j.str("command", self.command.label());
        j.bool("uid", self.uid);
        for (key, mailbox) in [
            ("mailbox", &self.mailbox),
            ("destination", &self.destination),
        ] {
            match mailbox {
                None => {}
                Some(Mailbox::Known(name)) => j.bytes(key, name, MAX_NAME),
                Some(Mailbox::Unknown) => j.null(key),
            }
        }
        if let Some(set) = self.set {
            j.bytes("set", set, MAX_SET);
        }
        j.str("result", self.result.label());
        j.bool("local", self.local);
        j.u64("ms", self.elapsed_ms);
        j.finish()
    }
}

/// An event a policy script asked to record (`audit = ...` in a decision).
#[derive(Debug, Clone)]
pub struct PolicyRecord<'a> {
    /// When the script decided.
    pub time: SystemTime,
    /// The session id.
    pub session: u64,
    /// Who connected.
    pub client: SocketAddr,
    /// The logged-in user, once known.
    pub user: Option<&'a [u8]>,
    /// The upstream, once chosen.
    pub upstream: Option<&'a str>,
    /// The phase whose decision carried the event (`on_login`, `on_command`, ...).
    pub phase: &'static str,
    /// The script's fields (written under `event`, as strings).
    pub fields: &'a [(String, String)],
}

impl PolicyRecord<'_> {
    /// The record as one JSON line (with its `\n`).
    pub fn to_line(&self) -> Vec<u8> {
        let mut j = Json::new(self.time, "policy");
        j.u64("session", self.session);
        j.client(self.client);
        j.opt_bytes("user", self.user, MAX_NAME);
        match self.upstream {
            Some(u) => j.str("upstream", u),
            None => j.null("upstream"),
        }
        j.str("phase", self.phase);
        j.key("event");
        j.out.push(b'{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                j.out.push(b',');
            }
            push_json_str(&mut j.out, k);
            j.out.push(b':');
            push_json_str(&mut j.out, v);
        }
        j.out.push(b'}');
        j.finish()
    }
}

/// A JSON object being written, one key after the other.
struct Json {
    /// The line so far.
    out: Vec<u8>,
}

impl Json {
    /// `{"time":...,"audit":kind`.
    fn new(time: SystemTime, kind: &str) -> Json {
        let mut j = Json {
            out: Vec::with_capacity(256),
        };
        j.out.extend_from_slice(b"{\"time\":\"");
        push_rfc3339(&mut j.out, time);
        j.out.push(b'"');
        j.str("audit", kind);
        j
    }

    /// `,"key":`.
    fn key(&mut self, key: &str) {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_str(&mut self.out, value);
    }

    fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.extend_from_slice(b"null");
    }

    /// Client text, cut at `max` bytes (then `"<key>_truncated":true` follows).
    fn bytes(&mut self, key: &str, value: &[u8], max: usize) {
        self.key(key);
        push_json_bytes(&mut self.out, &value[..value.len().min(max)]);
        if value.len() > max {
            self.key(&format!("{key}_truncated"));
            self.out.extend_from_slice(b"true");
        }
    }

    fn opt_bytes(&mut self, key: &str, value: Option<&[u8]>, max: usize) {
        match value {
            Some(v) => self.bytes(key, v, max),
            None => self.null(key),
        }
    }

    /// `client_ip` and `client_port` (IPv4-mapped IPv6 addresses shown as IPv4).
    fn client(&mut self, addr: SocketAddr) {
        self.str("client_ip", &addr.ip().to_canonical().to_string());
        self.u64("client_port", u64::from(addr.port()));
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"}\n");
        self.out
    }
}

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            // Control characters, DEL, and the two separators JavaScript reads as line ends.
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Appends client bytes: a JSON string when they are UTF-8, otherwise
/// `{"text":<lossy>,"hex":<all bytes>}`.
pub fn push_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => push_json_str(out, s),
        Err(_) => {
            out.extend_from_slice(b"{\"text\":");
            push_json_str(out, &String::from_utf8_lossy(bytes));
            out.extend_from_slice(b",\"hex\":\"");
            for b in bytes {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            out.extend_from_slice(b"\"}");
        }
    }
}

/// Appends `time` as RFC 3339 in UTC with milliseconds: `2025-06-01T09:14:07.123Z`.
pub fn push_rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    // A clock before 1970 is written as the epoch.
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let text = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
    out.extend_from_slice(text.as_bytes());
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for the proleptic Gregorian calendar).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    fn parse(line: &[u8]) -> serde_json::Value {
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(
            line.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one line: {}",
            line.escape_ascii()
        );
        serde_json::from_slice(line).expect("valid JSON")
    }

    fn keys(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn rfc3339_times() {
        let show = |t| {
            let mut out = Vec::new();
            push_rfc3339(&mut out, t);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(show(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(show(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(show(at(1_748_769_247, 123)), "2025-06-01T09:14:07.123Z");
        assert_eq!(show(at(4_107_542_399, 999)), "2100-02-28T23:59:59.999Z");
        assert_eq!(show(at(253_402_300_799, 0)), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn escapes_client_text() {
        let enc = |b: &[u8]| {
            let mut out = Vec::new();
            push_json_bytes(&mut out, b);
            out
        };
        let tricky = "a\"b\\c\r\nd\te\u{1}\u{7f}\u{2028}ü/";
        let out = enc(tricky.as_bytes());
        assert_eq!(
            out,
            b"\"a\\\"b\\\\c\\r\\nd\\te\\u0001\\u007f\\u2028\xc3\xbc/\"".to_vec()
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, tricky);
        // Not UTF-8: the exact bytes in hex, a readable approximation beside them.
        let out = enc(b"Ent\xe4rfe\"\n");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["hex"], "456e74e4726665220a");
        assert_eq!(v["text"], "Ent\u{fffd}rfe\"\n");
        assert!(!out.contains(&b'\n'));
    }

    #[test]
    fn login_record_has_no_secret_fields() {
        let r = LoginRecord {
            time: at(1_748_769_247, 123),
            session: 7,
            client: "[::ffff:192.0.2.10]:51514".parse().unwrap(),
            listener: ListenerKind::Plain,
            tls: true,
            user: Some(b"al\"ice\r\n* OK"),
            mechanism: "PLAIN",
            upstream: Some("default"),
            result: LoginResult::Refused,
        };
        let line = r.to_line();
        let v = parse(&line);
        let expected: BTreeSet<String> = [
            "time",
            "audit",
            "session",
            "client_ip",
            "client_port",
            "listener",
            "tls",
            "user",
            "mechanism",
            "upstream",
            "result",
        ]
        .map(String::from)
        .into();
        assert_eq!(keys(&v), expected);
        assert_eq!(v["time"], "2025-06-01T09:14:07.123Z");
        assert_eq!(v["audit"], "login");
        assert_eq!(v["session"], 7);
        assert_eq!(v["client_ip"], "192.0.2.10");
        assert_eq!(v["client_port"], 51514);
        assert_eq!(v["listener"], "plain");
        assert_eq!(v["tls"], true);
        assert_eq!(v["user"], "al\"ice\r\n* OK");
        assert_eq!(v["mechanism"], "PLAIN");
        assert_eq!(v["upstream"], "default");
        assert_eq!(v["result"], "refused");

        let r = LoginRecord {
            user: None,
            upstream: None,
            result: LoginResult::Invalid,
            ..r
        };
        let v = parse(&r.to_line());
        assert_eq!(v["user"], serde_json::Value::Null);
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["result"], "invalid");
    }

    #[test]
    fn command_record_fields() {
        let long_set = "1,".repeat(200);
        let r = CommandRecord {
            time: at(0, 0),
            session: 3,
            client: "127.0.0.1:1000".parse().unwrap(),
            user: Some(b"bob"),
            upstream: Some("eu"),
            command: CommandName::Copy,
            uid: true,
            mailbox: Some(Mailbox::Known(b"INBOX")),
            destination: Some(Mailbox::Unknown),
            set: Some(long_set.as_bytes()),
            result: Outcome::No,
            local: false,
            elapsed_ms: 12,
        };
        let v = parse(&r.to_line());
        let expected: BTreeSet<String> = [
            "time",
            "audit",
            "session",
            "client_ip",
            "client_port",
            "user",
            "upstream",
            "command",
            "uid",
            "mailbox",
            "destination",
            "set",
            "set_truncated",
            "result",
            "local",
            "ms",
        ]
        .map(String::from)
        .into();
        assert_eq!(keys(&v), expected);
        assert_eq!(v["audit"], "command");
        assert_eq!(v["command"], "copy");
        assert_eq!(v["uid"], true);
        assert_eq!(v["mailbox"], "INBOX");
        assert_eq!(v["destination"], serde_json::Value::Null);
        assert_eq!(v["set"].as_str().unwrap().len(), MAX_SET);
        assert_eq!(v["result"], "no");
        assert_eq!(v["ms"], 12);

        // A command without mailbox arguments or set has no such keys.
        let r = CommandRecord {
            command: CommandName::Expunge,
            uid: false,
            mailbox: None,
            destination: None,
            set: None,
            result: Outcome::None,
            ..r
        };
        let v = parse(&r.to_line());
        assert!(v.get("mailbox").is_none() && v.get("destination").is_none());
        assert!(v.get("set").is_none());
        assert_eq!(v["result"], "none");
    }
}
