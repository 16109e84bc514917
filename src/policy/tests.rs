//! The policy stage driven directly through the seam: the sandbox (every escape fails closed
//! and the VM serves the next call), budgets, bad returns, and the decisions each phase maps
//! onto.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::vm::{Budget, FailureKind, Script};
use super::{EventSink, Policy};
use crate::config::{Config, UpstreamConfig};
use crate::phases::{
    Command, CommandDecision, ConnectDecision, Kinds, LoginDecision, LoginRequest, Phases,
    ResponseDecision, ResponseMessage, SessionInfo, Verdict,
};
use crate::proto::command::parse_command_line;
use crate::proto::response::Status;
use crate::secret::Secret;
use crate::session::ListenerKind;
use crate::session::credentials::Credentials;

/// An audit event: the phase and the fields.
type Event = (String, Vec<(String, String)>);

/// Records audit events.
#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl EventSink for Events {
    fn policy_event(&self, _: &SessionInfo, phase: &'static str, fields: &[(String, String)]) {
        self.0
            .lock()
            .unwrap()
            .push((phase.to_string(), fields.to_vec()));
    }
}

fn budget() -> Budget {
    Budget {
        memory: 4 * 1024 * 1024,
        instructions: 200_000,
        time: std::time::Duration::from_millis(500),
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.upstream.address = "127.0.0.1:143".into();
    c.upstreams.insert(
        "eu".into(),
        UpstreamConfig {
            address: "127.0.0.1:1143".into(),
            ..UpstreamConfig::default()
        },
    );
    c.policy
        .secrets
        .insert("support".into(), "master-secret".into());
    c
}

fn policy_with(src: &str, events: Arc<Events>) -> Policy {
    let script = Script::from_source(Path::new("test.lua"), src.as_bytes().to_vec(), budget())
        .unwrap_or_else(|f| panic!("{f}"));
    Policy::from_script(script, &config(), events).unwrap()
}

fn policy(src: &str) -> Policy {
    policy_with(src, Arc::new(Events::default()))
}

fn info() -> SessionInfo {
    let mut i = SessionInfo::new(7, "192.0.2.1:5000".parse().unwrap(), ListenerKind::Tls);
    i.user = Some(Arc::from(&b"alice"[..]));
    i
}

fn command(p: &Policy, line: &str) -> CommandDecision {
    command_whole(p, line, None)
}

fn command_whole(p: &Policy, line: &str, message: Option<&[u8]>) -> CommandDecision {
    let head = parse_command_line(line.as_bytes()).unwrap();
    let cmd = Command {
        tag: head.tag,
        name: head.name,
        uid: head.uid,
        line: line.as_bytes(),
        message,
    };
    match p.on_command(&info(), &cmd) {
        Verdict::Now(d) => d,
        Verdict::Wait(_) => panic!("the policy never waits"),
    }
}

fn password(user: &str, pw: &str) -> Credentials {
    Credentials::Password {
        authzid: Vec::new(),
        user: user.as_bytes().to_vec(),
        password: Secret::new(pw.as_bytes().to_vec()),
        login_command: true,
    }
}

fn login(p: &Policy, user: &str) -> LoginDecision {
    let creds = password(user, "pw");
    let req = LoginRequest {
        user: Some(user.as_bytes()),
        mechanism: "LOGIN",
        upstream: "default",
        credentials: &creds,
    };
    match p.on_login(&info(), &req) {
        Verdict::Now(d) => d,
        Verdict::Wait(_) => panic!("the policy never waits"),
    }
}

fn refused_unavailable(d: &CommandDecision) -> bool {
    matches!(d, CommandDecision::Refuse { status: Status::No, code: Some(c), .. } if c == "UNAVAILABLE")
}

/// A script whose `on_command` runs `escape` for tag `x` and allows everything else.
fn escaping(escape: &str) -> String {
    format!(
        "function on_command(ctx)\n  if ctx.tag == 'x' then\n    {escape}\n  end\n  return nil\nend\n"
    )
}

#[test]
fn every_escape_fails_closed_and_the_vm_serves_the_next_call() {
    // `None`: whichever limit comes first (deep recursion grows the stack: memory or budget).
    let cases: &[(&str, Option<FailureKind>)] = &[
        (
            "os.execute('touch /tmp/imapgate-pwned')",
            Some(FailureKind::Error),
        ),
        ("io.open('/etc/passwd')", Some(FailureKind::Error)),
        ("require('os')", Some(FailureKind::Error)),
        (
            "local f = load(string.dump(function() end))",
            Some(FailureKind::Error),
        ),
        ("load('return 1')()", Some(FailureKind::Error)),
        ("dofile('/etc/passwd')", Some(FailureKind::Error)),
        ("loadfile('/etc/passwd')()", Some(FailureKind::Error)),
        ("debug.getinfo(1)", Some(FailureKind::Error)),
        (
            "package.loadlib('libc.so.6', 'system')",
            Some(FailureKind::Error),
        ),
        ("collectgarbage('stop')", Some(FailureKind::Error)),
        (
            "coroutine.wrap(function() while true do end end)()",
            Some(FailureKind::Error),
        ),
        ("while true do end", Some(FailureKind::Timeout)),
        (
            "while true do pcall(function() while true do end end) end",
            Some(FailureKind::Timeout),
        ),
        (
            "local t = {} for i = 1, 1e9 do t[i] = string.rep('z', 1000) .. i end",
            Some(FailureKind::Memory),
        ),
        ("local s = string.rep('x', 1e9)", Some(FailureKind::Memory)),
        (
            "local t = {} while true do t[#t + 1] = string.rep('y', 1e5) .. #t end",
            Some(FailureKind::Memory),
        ),
        ("local function f(n) return 1 + f(n + 1) end f(1)", None),
        ("error('policy bug')", Some(FailureKind::Error)),
    ];
    for (escape, kind) in cases {
        let p = policy(&escaping(escape));
        let d = command(&p, "x NOOP\r\n");
        assert!(refused_unavailable(&d), "{escape}: {d:?}");
        let counted: u64 = FailureKind::ALL
            .iter()
            .map(|k| p.failures("on_command", k.label()))
            .sum();
        assert_eq!(counted, 1, "{escape}: counted once");
        if let Some(kind) = kind {
            assert_eq!(
                p.failures("on_command", kind.label()),
                1,
                "{escape}: counted as {kind:?}"
            );
        }
        // The same thread's VM (rebuilt after a memory failure) serves the next call.
        assert_eq!(
            command(&p, "ok NOOP\r\n"),
            CommandDecision::Forward,
            "{escape}"
        );
        let d = command(&p, "x NOOP\r\n");
        assert!(refused_unavailable(&d), "{escape} again: {d:?}");
    }
    assert!(!Path::new("/tmp/imapgate-pwned").exists());
}

#[test]
fn bad_returns_fail_closed() {
    for ret in [
        "42",
        "'allow'",
        "false",
        "{denny = 'typo'}",
        "{deny = 'x', code = 'BOGUS'}",
        "{examine = 'yes'}",
        "{deny = 'x', examine = true}",
        "{upstream = 'eu'}",
        "{[1] = 'x'}",
    ] {
        let p = policy(&format!("function on_command(ctx) return {ret} end"));
        let d = command(&p, "a NOOP\r\n");
        assert!(refused_unavailable(&d), "{ret}: {d:?}");
        assert_eq!(p.failures("on_command", "bad_return"), 1, "{ret}");
    }
    for ret in [
        "{upstream = 'nowhere'}",
        "{master = 'm'}",
        "{oauth = 'a', password = 'x'}",
        "{deny = 'x', upstream = 'eu'}",
        "{hide = 'Archive'}",
        "{password = secret('unknown')}",
        "{form = 'dovecot'}",
        "{oauth = 'a', password_hash = 'plain text'}",
        "{deny = true, password_hash = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}",
    ] {
        let p = policy(&format!("function on_login(ctx) return {ret} end"));
        let d = login(&p, "alice");
        assert!(
            matches!(&d, LoginDecision::Refuse { code: Some(c), .. } if c == "UNAVAILABLE"),
            "{ret}: {d:?}"
        );
        assert_eq!(p.failures("on_login", "bad_return"), 1, "{ret}");
    }
}

#[test]
fn load_failures_name_the_file_and_line() {
    let err = Script::from_source(
        Path::new("/etc/p.lua"),
        b"x = 1\nfunction (\n".to_vec(),
        budget(),
    )
    .unwrap_err();
    assert_eq!(err.kind, FailureKind::Error);
    assert_eq!(err.location.as_deref(), Some("/etc/p.lua:2"), "{err:?}");
    let err = Script::from_source(Path::new("p.lua"), b"while true do end".to_vec(), budget())
        .unwrap_err();
    assert_eq!(
        (err.kind, err.location.as_deref()),
        (FailureKind::Timeout, Some("p.lua:1"))
    );
    let err =
        Script::from_source(Path::new("p.lua"), b"on_command = 5".to_vec(), budget()).unwrap_err();
    assert!(err.message.contains("on_command"), "{err:?}");
    // A runtime error's location comes from the message.
    let p = policy("\n\nfunction on_command(ctx)\n  return ctx.nothing.field\nend\n");
    let head = parse_command_line(b"a NOOP\r\n").unwrap();
    let cmd = Command {
        tag: head.tag,
        name: head.name,
        uid: head.uid,
        line: b"a NOOP\r\n",
        message: None,
    };
    let err = p
        .script
        .call(
            super::vm::Phase::Command,
            |lua| super::context::command(lua, &info(), &cmd, &Default::default()),
            |_, _| Ok(()),
        )
        .unwrap_err();
    assert_eq!(err.location.as_deref(), Some("test.lua:4"), "{err:?}");
}

#[test]
fn undefined_phases_cost_nothing_and_ask_for_nothing() {
    let p = policy("-- nothing here\n");
    assert!(p.defined().is_empty());
    assert_eq!(p.whole_commands(), crate::phases::CommandSet::NONE);
    assert_eq!(p.subscriptions(), Kinds::NONE);
    assert!(!p.edits_capabilities());
    assert_eq!(command(&p, "a DELETE x\r\n"), CommandDecision::Forward);
    assert!(matches!(login(&p, "alice"), LoginDecision::Continue));
    let p = policy("function on_command(ctx) end");
    assert!(
        p.whole_commands()
            .contains(crate::proto::command::CommandName::Select)
    );
    assert_eq!(p.subscriptions(), Kinds::NONE);
}

#[test]
fn readonly_example_refuses_changes_and_examines() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policies/readonly.lua"
    ))
    .unwrap();
    let p = policy(&src);
    for line in [
        "a STORE 1 +FLAGS (\\Deleted)\r\n",
        "a uid store 1 +FLAGS (\\Deleted)\r\n",
        "a APPEND INBOX {3}\r\n",
        "a EXPUNGE\r\n",
        "a UID EXPUNGE 1\r\n",
        "a COPY 1 Trash\r\n",
        "a UID MOVE 1 Trash\r\n",
        "a CREATE x\r\n",
        "a DELETE x\r\n",
        "a RENAME x y\r\n",
        "a REPLACE 1 INBOX {3}\r\n",
        "a SETMETADATA INBOX (/private/comment \"x\")\r\n",
    ] {
        let d = command(&p, line);
        assert!(
            matches!(&d, CommandDecision::Refuse { code: Some(c), .. } if c == "NOPERM"),
            "{line}: {d:?}"
        );
    }
    assert_eq!(
        command(&p, "a select INBOX (CONDSTORE)\r\n"),
        CommandDecision::Rewrite(b"a EXAMINE INBOX (CONDSTORE)\r\n".to_vec())
    );
    assert_eq!(
        command_whole(&p, "a SELECT {5+}\r\n", Some(b"a SELECT {5+}\r\nINBOX\r\n")),
        CommandDecision::Rewrite(b"a EXAMINE {5+}\r\nINBOX\r\n".to_vec())
    );
    for line in [
        "a UID FETCH 1:* (FLAGS)\r\n",
        "a EXAMINE INBOX\r\n",
        "a IDLE\r\n",
    ] {
        assert_eq!(command(&p, line), CommandDecision::Forward, "{line}");
    }
}

#[test]
fn hidden_mailboxes_are_refused_and_left_out_of_responses() {
    let p = policy("function on_login(ctx) return {hide = {'Archive', 'Private.*'}} end");
    assert!(matches!(login(&p, "alice"), LoginDecision::Continue));
    let nonexistent = |d: &CommandDecision| matches!(d, CommandDecision::Refuse { code: Some(c), .. } if c == "NONEXISTENT");
    for line in [
        "a SELECT Archive\r\n",
        "a EXAMINE \"Archive\"\r\n",
        "a STATUS Private.x (MESSAGES)\r\n",
        "a APPEND Archive {3}\r\n",
        "a UID COPY 1 Archive\r\n",
        "a MOVE 1 Private.y\r\n",
        "a DELETE Archive\r\n",
        "a SUBSCRIBE Archive\r\n",
    ] {
        assert!(nonexistent(&command(&p, line)), "{line}");
    }
    assert!(nonexistent(&command_whole(
        &p,
        "a SELECT {7+}\r\n",
        Some(b"a SELECT {7+}\r\nArchive\r\n")
    )));
    let cannot = |d: &CommandDecision| matches!(d, CommandDecision::Refuse { code: Some(c), .. } if c == "CANNOT");
    assert!(cannot(&command(&p, "a APPEND {7}\r\n")), "unreadable name");
    assert!(cannot(&command(&p, "a RENAME INBOX.x Archive\r\n")));
    assert!(cannot(&command(&p, "a CREATE Private.new\r\n")));
    assert_eq!(command(&p, "a SELECT INBOX\r\n"), CommandDecision::Forward);
    assert_eq!(
        command(&p, "a SELECT Private\r\n"),
        CommandDecision::Forward
    );
    let list = ResponseMessage {
        kind: Kinds::LIST,
        bytes: b"* LIST (\\HasNoChildren) \".\" Archive\r\n",
        streamed: false,
        assembled: None,
    };
    assert_eq!(p.on_response(&info(), &list), ResponseDecision::Drop);
    // Another session has no rules; the session's rules go at close.
    let mut other = info();
    other.id = 8;
    assert_eq!(p.on_response(&other, &list), ResponseDecision::Forward);
}

#[test]
fn login_decisions_map_onto_upstream_credentials() {
    let events = Arc::new(Events::default());
    let p = policy_with(
        r#"
        function on_login(ctx)
          local name, master = ctx.user:match("^(.+)%*(.+)$")
          if master == "dovecot" then
            return {master = "support", user = name, password = ctx.password, form = "dovecot"}
          elseif master then
            return {master = "support", user = name, password = secret("support")}
          elseif ctx.user == "routed@example.org" then
            return {upstream = "eu", user = "routed", password = ctx.password, audit = {why = "domain", n = 3}}
          elseif ctx.user == "token" then
            return {oauth = "corp"}
          elseif ctx.user == "mallory" then
            return {deny = "Go away.", code = "NOPERM"}
          end
          assert(tostring(ctx.password) == "<password>")
          assert(ctx.mechanism == "LOGIN" and ctx.upstream == "default" and ctx.client == "192.0.2.1")
        end
        "#,
        events.clone(),
    );
    let creds = |d: LoginDecision| match d {
        LoginDecision::Rewrite {
            upstream,
            credentials: Some(c),
        } => (upstream, c),
        other => panic!("{other:?}"),
    };
    let (up, c) = creds(login(&p, "alice*x"));
    assert_eq!(up, None);
    let Credentials::Password {
        authzid,
        user,
        password,
        login_command,
    } = c
    else {
        panic!()
    };
    assert_eq!(
        (&authzid[..], &user[..], password.expose(), login_command),
        (&b"alice"[..], &b"support"[..], &b"master-secret"[..], false)
    );
    let (_, c) = creds(login(&p, "alice*dovecot"));
    let Credentials::Password {
        authzid,
        user,
        password,
        login_command,
    } = c
    else {
        panic!()
    };
    assert_eq!(
        (&authzid[..], &user[..], password.expose(), login_command),
        (&b""[..], &b"alice*support"[..], &b"pw"[..], true)
    );
    let (up, c) = creds(login(&p, "routed@example.org"));
    assert_eq!(up.as_deref(), Some("eu"));
    assert_eq!(c.user(), Some(&b"routed"[..]));
    assert_eq!(
        events.0.lock().unwrap().clone(),
        vec![(
            "on_login".to_string(),
            vec![("n".into(), "3".into()), ("why".into(), "domain".into())]
        )]
    );
    let (_, c) = creds(login(&p, "token"));
    assert!(
        matches!(c, Credentials::OAuth { ref user, ref account } if user == b"token" && account == "corp")
    );
    assert!(
        matches!(login(&p, "mallory"), LoginDecision::Refuse { code: Some(c), ref text } if c == "NOPERM" && text == "Go away.")
    );
    assert!(matches!(login(&p, "bob"), LoginDecision::Continue));
    assert_eq!(p.failures("on_login", "error"), 0);
}

#[test]
fn connect_capabilities_and_close() {
    let events = Arc::new(Events::default());
    let p = policy_with(
        r#"
        function on_connect(ctx)
          if ctx.client == "192.0.2.66" then return {deny = "Not from there."} end
        end
        function on_capabilities(ctx)
          if ctx.state == "preauth" then return {remove = {"AUTH=*"}, add = {"X-PRE"}} end
          local out = {}
          for _, c in ipairs(ctx.capabilities) do
            if c ~= "IDLE" then out[#out + 1] = c end
          end
          return out
        end
        function on_close(ctx)
          return {audit = {commands = ctx.commands, ending = ctx.ending}}
        end
        "#,
        events.clone(),
    );
    assert_eq!(p.on_connect(&info()).now(), ConnectDecision::Allow);
    let mut bad = info();
    bad.peer = "192.0.2.66:1".parse().unwrap();
    assert_eq!(
        p.on_connect(&bad).now(),
        ConnectDecision::Refuse("Not from there.".into())
    );
    assert!(p.edits_capabilities());
    let mut caps: Vec<Vec<u8>> = ["IMAP4rev1", "IDLE", "MOVE"]
        .map(|c| c.as_bytes().to_vec())
        .into();
    p.on_capabilities(&info(), &mut caps);
    assert_eq!(caps, [b"IMAP4rev1".to_vec(), b"MOVE".to_vec()]);
    let mut pre = info();
    pre.user = None;
    let mut caps: Vec<Vec<u8>> = ["IMAP4rev1", "AUTH=PLAIN", "auth=login"]
        .map(|c| c.as_bytes().to_vec())
        .into();
    p.on_capabilities(&pre, &mut caps);
    assert_eq!(caps, [b"IMAP4rev1".to_vec(), b"X-PRE".to_vec()]);
    let summary = crate::phases::Summary {
        info: &info(),
        duration: std::time::Duration::from_secs(1),
        commands: 4,
        client_in: 1,
        client_out: 2,
        upstream_in: 3,
        upstream_out: 4,
        ending: "logout",
        error_side: None,
        idling: false,
        logged_in: true,
    };
    p.on_close(&summary);
    assert_eq!(
        events.0.lock().unwrap().clone(),
        vec![(
            "on_close".to_string(),
            vec![
                ("commands".into(), "4".into()),
                ("ending".into(), "logout".into())
            ]
        )]
    );
}

#[test]
fn a_failing_capability_edit_leaves_the_list() {
    let p = policy("function on_capabilities(ctx) return {1, 2} end");
    let mut caps = vec![b"IMAP4rev1".to_vec()];
    p.on_capabilities(&info(), &mut caps);
    assert_eq!(caps, [b"IMAP4rev1".to_vec()]);
    assert_eq!(p.failures("on_capabilities", "bad_return"), 1);
}

#[test]
fn the_context_of_a_command() {
    let p = policy(
        r#"
        function on_command(ctx)
          local want = {
            tag = "t1", command = "MOVE", uid = true, mailbox = "Trash", set = "1:3",
            state = "selected", selected = "INBOX", read_only = false, user = "alice", session = 7,
          }
          for k, v in pairs(want) do
            if ctx[k] ~= v then error(k .. " is " .. tostring(ctx[k])) end
          end
          if ctx.literal then error("no literal here") end
        end
        "#,
    );
    let mut i = info();
    i.selected = Some(crate::phases::Selected {
        name: b"INBOX".to_vec(),
        uidvalidity: Some(1),
        read_only: false,
    });
    let line = b"t1 UID MOVE 1:3 Trash\r\n";
    let head = parse_command_line(line).unwrap();
    let cmd = Command {
        tag: head.tag,
        name: head.name,
        uid: head.uid,
        line,
        message: None,
    };
    assert_eq!(p.on_command(&i, &cmd).now(), CommandDecision::Forward);
    assert_eq!(p.failures("on_command", "error"), 0);
}

/// The decision of a verdict that is known now.
trait Now<T> {
    fn now(self) -> T;
}

impl<T> Now<T> for Verdict<T> {
    fn now(self) -> T {
        match self {
            Verdict::Now(d) => d,
            Verdict::Wait(_) => panic!("the policy never waits"),
        }
    }
}
