//! What a phase may return, read strictly: `nil` or `true` allows; a table holds a decision,
//! and a key the phase does not know, a value of the wrong type or two decisions at once is a
//! bad return (the call fails closed), never a guess.
//!
//! ```text
//! {deny = "reason", code = "NOPERM"}                  every decision phase
//! {upstream = "name"}                                  on_login: route
//! {user = "u", password = ctx.password | secret("n") | "text"}   on_login: rewrite
//! {master = "m", user = "u", password = ..., form = "plain" | "dovecot", separator = "*"}
//! {oauth = "account", user = "u"}                      on_login
//! {..., password_hash = "$argon2id$..."}                on_login (any but deny)
//! {hide = {"Archive", "Private.*"}}                    on_login: for the session
//! {examine = true}                                     on_command: SELECT as EXAMINE
//! {"CAP", ...} / {add = {...}, remove = {...}}         on_capabilities
//! audit = "text" | {key = value, ...}                  beside any of the above, and in on_close
//! ```

use mlua::{Table, Value};

use super::hide::Rules;
use super::vm::{PasswordHandle, SecretHandle};

/// The codes a deny may carry (`NO [CODE] reason`).
pub const CODES: [&str; 4] = ["AUTHENTICATIONFAILED", "NOPERM", "CANNOT", "NONEXISTENT"];

/// Longest deny reason kept.
const MAX_REASON: usize = 200;

/// Most fields an audit event keeps, and the longest key or value.
const MAX_AUDIT_FIELDS: usize = 32;
const MAX_AUDIT_TEXT: usize = 1024;

/// Fields of an audit event the script asked for.
pub type AuditFields = Vec<(String, String)>;

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// The response code (one of [`CODES`]).
    pub code: &'static str,
    /// The text the client sees.
    pub reason: String,
}

/// Where a rewritten password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordFrom {
    /// The client's own (`ctx.password`).
    Client,
    /// `[policy.secrets]` entry of this name (`secret("name")`).
    Secret(String),
    /// Text in the script.
    Text(String),
}

/// How to log in as a master user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterForm {
    /// SASL PLAIN, authzid = the user, authcid = the master.
    Plain,
    /// `LOGIN "user<separator>master" password` (Dovecot's master user form).
    Dovecot,
}

/// Upstream credentials a login decision asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creds {
    /// Another user and password.
    Password {
        /// The user name upstream.
        user: Option<String>,
        /// The password.
        password: PasswordFrom,
    },
    /// A master user logging in as `user`.
    Master {
        /// The master user's name.
        master: String,
        /// The user whose mailbox it is (default: the client's user).
        user: Option<String>,
        /// The master's password.
        password: PasswordFrom,
        /// How.
        form: MasterForm,
        /// Between user and master in the Dovecot form.
        separator: String,
    },
    /// OAuth for a named account.
    OAuth {
        /// The account whose token the proxy obtains.
        account: String,
        /// The user upstream (default: the client's user).
        user: Option<String>,
    },
}

/// `on_connect`'s decision.
#[derive(Debug, Default)]
pub struct ConnectOutcome {
    /// Refused: the client gets `* BYE reason`.
    pub deny: Option<Deny>,
    /// An audit event.
    pub audit: Option<AuditFields>,
}

/// `on_login`'s decision.
#[derive(Debug, Default)]
pub struct LoginOutcome {
    /// Refused.
    pub deny: Option<Deny>,
    /// Route to this upstream.
    pub upstream: Option<String>,
    /// Log in upstream with these.
    pub creds: Option<Creds>,
    /// Mailboxes hidden for the session.
    pub hide: Option<Rules>,
    /// An audit event.
    pub audit: Option<AuditFields>,
    /// The client's password must match this Argon2id hash (PHC string) for the decision to
    /// stand; otherwise the login is refused.
    pub password_hash: Option<String>,
}

/// `on_command`'s decision.
#[derive(Debug, Default)]
pub struct CommandOutcome {
    /// Refused.
    pub deny: Option<Deny>,
    /// SELECT is sent as EXAMINE.
    pub examine: bool,
    /// An audit event.
    pub audit: Option<AuditFields>,
}

/// `on_capabilities`' decision.
#[derive(Debug, Default)]
pub struct CapsOutcome {
    /// The whole list instead.
    pub replace: Option<Vec<Vec<u8>>>,
    /// Capabilities to add.
    pub add: Vec<Vec<u8>>,
    /// Capabilities to remove (case-insensitive; `NAME=*` removes every `NAME=` value).
    pub remove: Vec<Vec<u8>>,
}

/// Reads a returned table's keys, refusing any not in `allowed`.
fn keys(t: &Table, allowed: &[&str]) -> Result<(), String> {
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        match &k {
            Value::String(s) if allowed.iter().any(|a| s.as_bytes() == a.as_bytes()) => {}
            Value::String(s) => {
                return Err(format!(
                    "unknown key {:?} (allowed here: {})",
                    s.to_string_lossy(),
                    allowed.join(", ")
                ));
            }
            other => return Err(format!("unexpected {} key", other.type_name())),
        }
    }
    Ok(())
}

/// Allow (`nil`, `true`), or the decision table.
fn table(v: Value, phase: &str) -> Result<Option<Table>, String> {
    match v {
        Value::Nil | Value::Boolean(true) => Ok(None),
        Value::Table(t) => Ok(Some(t)),
        Value::Boolean(false) => Err(format!(
            "{phase} returned false; deny with {{deny = \"reason\"}}"
        )),
        other => Err(format!(
            "{phase} returned a {}, not nil or a table",
            other.type_name()
        )),
    }
}

/// A string field.
fn string(t: &Table, key: &str) -> Result<Option<String>, String> {
    match t.raw_get::<Value>(key).map_err(|e| e.to_string())? {
        Value::Nil => Ok(None),
        Value::String(s) => s
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| format!("{key} is not valid UTF-8")),
        other => Err(format!(
            "{key} must be a string, not a {}",
            other.type_name()
        )),
    }
}

/// The deny decision (`deny` with an optional `code`).
fn deny(t: &Table, default_code: &'static str) -> Result<Option<Deny>, String> {
    let reason = match t.raw_get::<Value>("deny").map_err(|e| e.to_string())? {
        Value::Nil => {
            if string(t, "code")?.is_some() {
                return Err("code without deny".into());
            }
            return Ok(None);
        }
        Value::Boolean(true) => "Not allowed.".to_string(),
        Value::String(s) => s.to_string_lossy(),
        other => {
            return Err(format!(
                "deny must be a string, not a {}",
                other.type_name()
            ));
        }
    };
    let code = match string(t, "code")? {
        None => default_code,
        Some(c) => CODES
            .iter()
            .find(|k| k.eq_ignore_ascii_case(&c))
            .copied()
            .ok_or_else(|| format!("code {c:?} is not one of {}", CODES.join(", ")))?,
    };
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    let reason = if reason.trim().is_empty() {
        "Not allowed.".to_string()
    } else {
        reason
    };
    Ok(Some(Deny { code, reason }))
}

/// The `audit` field.
fn audit(t: &Table) -> Result<Option<AuditFields>, String> {
    let cut = |s: String| s.chars().take(MAX_AUDIT_TEXT).collect::<String>();
    match t.raw_get::<Value>("audit").map_err(|e| e.to_string())? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(vec![("message".into(), cut(s.to_string_lossy()))])),
        Value::Table(fields) => {
            let mut out = Vec::new();
            for pair in fields.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| e.to_string())?;
                let Value::String(k) = k else {
                    return Err("audit keys must be strings".into());
                };
                let v = match v {
                    Value::String(s) => s.to_string_lossy(),
                    Value::Integer(i) => i.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(format!(
                            "audit values must be strings, numbers or booleans, not {}",
                            other.type_name()
                        ));
                    }
                };
                if out.len() == MAX_AUDIT_FIELDS {
                    return Err(format!("more than {MAX_AUDIT_FIELDS} audit fields"));
                }
                out.push((cut(k.to_string_lossy()), cut(v)));
            }
            // The table's order is not defined: keep records stable.
            out.sort();
            Ok(Some(out))
        }
        other => Err(format!(
            "audit must be a string or a table, not a {}",
            other.type_name()
        )),
    }
}

/// A password value.
fn password(t: &Table) -> Result<Option<PasswordFrom>, String> {
    match t.raw_get::<Value>("password").map_err(|e| e.to_string())? {
        Value::Nil => Ok(None),
        Value::String(s) => s
            .to_str()
            .map(|s| Some(PasswordFrom::Text(s.to_string())))
            .map_err(|_| "password is not valid UTF-8".to_string()),
        Value::UserData(u) if u.is::<PasswordHandle>() => Ok(Some(PasswordFrom::Client)),
        Value::UserData(u) if u.is::<SecretHandle>() => {
            let s = u.borrow::<SecretHandle>().map_err(|e| e.to_string())?;
            Ok(Some(PasswordFrom::Secret(s.0.clone())))
        }
        other => Err(format!(
            "password must be ctx.password, secret(\"name\") or a string, not a {}",
            other.type_name()
        )),
    }
}

/// Reads `on_connect`'s return.
pub fn connect(v: Value) -> Result<ConnectOutcome, String> {
    let Some(t) = table(v, "on_connect")? else {
        return Ok(ConnectOutcome::default());
    };
    keys(&t, &["deny", "code", "audit"])?;
    Ok(ConnectOutcome {
        deny: deny(&t, "NOPERM")?,
        audit: audit(&t)?,
    })
}

/// Reads `on_login`'s return.
pub fn login(v: Value) -> Result<LoginOutcome, String> {
    let Some(t) = table(v, "on_login")? else {
        return Ok(LoginOutcome::default());
    };
    keys(
        &t,
        &[
            "deny",
            "code",
            "audit",
            "upstream",
            "user",
            "password",
            "master",
            "form",
            "separator",
            "oauth",
            "hide",
            "password_hash",
        ],
    )?;
    let mut out = LoginOutcome {
        deny: deny(&t, "AUTHENTICATIONFAILED")?,
        audit: audit(&t)?,
        upstream: string(&t, "upstream")?,
        ..LoginOutcome::default()
    };
    out.password_hash = string(&t, "password_hash")?;
    if let Some(phc) = &out.password_hash {
        if !phc.starts_with("$argon2") || argon2::PasswordHash::new(phc).is_err() {
            return Err("password_hash is not an Argon2 PHC string ($argon2id$...)".into());
        }
        if out.deny.is_some() {
            return Err("deny takes no password_hash".into());
        }
    }
    let user = string(&t, "user")?;
    let password = password(&t)?;
    let master = string(&t, "master")?;
    let oauth = string(&t, "oauth")?;
    let form = string(&t, "form")?;
    let separator = string(&t, "separator")?;
    if master.is_none() && (form.is_some() || separator.is_some()) {
        return Err("form and separator go with master".into());
    }
    out.creds = match (master, oauth) {
        (Some(_), Some(_)) => return Err("master and oauth at once".into()),
        (Some(master), None) => {
            let form = match form.as_deref() {
                None | Some("plain") => MasterForm::Plain,
                Some("dovecot") => MasterForm::Dovecot,
                Some(f) => return Err(format!("form {f:?} is not \"plain\" or \"dovecot\"")),
            };
            Some(Creds::Master {
                master,
                user,
                password: password.ok_or("master needs a password")?,
                form,
                separator: separator.unwrap_or_else(|| "*".into()),
            })
        }
        (None, Some(account)) => {
            if password.is_some() {
                return Err("oauth takes no password".into());
            }
            Some(Creds::OAuth { account, user })
        }
        (None, None) if user.is_some() || password.is_some() => Some(Creds::Password {
            user,
            password: password.unwrap_or(PasswordFrom::Client),
        }),
        (None, None) => None,
    };
    if let Some(hide) = t
        .raw_get::<Value>("hide")
        .map_err(|e| e.to_string())?
        .as_table()
    {
        let mut patterns = Vec::new();
        for p in hide.sequence_values::<Value>() {
            match p.map_err(|e| e.to_string())? {
                Value::String(s) => patterns.push(s.as_bytes().to_vec()),
                other => return Err(format!("hide lists strings, not a {}", other.type_name())),
            }
        }
        out.hide = Some(Rules::new(patterns)?);
    } else if !matches!(t.raw_get::<Value>("hide"), Ok(Value::Nil)) {
        return Err("hide must be a list of mailbox patterns".into());
    }
    if out.deny.is_some() && (out.upstream.is_some() || out.creds.is_some() || out.hide.is_some()) {
        return Err("deny and another decision at once".into());
    }
    Ok(out)
}

/// Reads `on_command`'s return.
pub fn command(v: Value) -> Result<CommandOutcome, String> {
    let Some(t) = table(v, "on_command")? else {
        return Ok(CommandOutcome::default());
    };
    keys(&t, &["deny", "code", "audit", "examine"])?;
    let examine = match t.raw_get::<Value>("examine").map_err(|e| e.to_string())? {
        Value::Nil | Value::Boolean(false) => false,
        Value::Boolean(true) => true,
        other => {
            return Err(format!(
                "examine must be a boolean, not a {}",
                other.type_name()
            ));
        }
    };
    let out = CommandOutcome {
        deny: deny(&t, "NOPERM")?,
        examine,
        audit: audit(&t)?,
    };
    if out.deny.is_some() && out.examine {
        return Err("deny and examine at once".into());
    }
    Ok(out)
}

/// A list of capability names.
fn cap_list(t: &Table) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for v in t.sequence_values::<Value>() {
        match v.map_err(|e| e.to_string())? {
            Value::String(s) => {
                let b = s.as_bytes().to_vec();
                if b.is_empty() || !b.iter().all(|&c| c > b' ' && c < 0x7f && c != b']') {
                    return Err(format!("{:?} is not a capability", s.to_string_lossy()));
                }
                out.push(b);
            }
            other => {
                return Err(format!(
                    "capabilities are strings, not a {}",
                    other.type_name()
                ));
            }
        }
    }
    Ok(out)
}

/// Reads `on_capabilities`' return.
pub fn capabilities(v: Value) -> Result<CapsOutcome, String> {
    let Some(t) = table(v, "on_capabilities")? else {
        return Ok(CapsOutcome::default());
    };
    let is_edit = t.raw_get::<Value>("add").is_ok_and(|v| !v.is_nil())
        || t.raw_get::<Value>("remove").is_ok_and(|v| !v.is_nil());
    if !is_edit {
        return Ok(CapsOutcome {
            replace: Some(cap_list(&t)?),
            ..CapsOutcome::default()
        });
    }
    keys(&t, &["add", "remove"])?;
    let list = |key: &str| -> Result<Vec<Vec<u8>>, String> {
        match t.raw_get::<Value>(key).map_err(|e| e.to_string())? {
            Value::Nil => Ok(Vec::new()),
            Value::Table(l) => cap_list(&l),
            other => Err(format!("{key} must be a list, not a {}", other.type_name())),
        }
    };
    Ok(CapsOutcome {
        replace: None,
        add: list("add")?,
        remove: list("remove")?,
    })
}

/// Reads `on_close`'s return (an audit event, or nothing).
pub fn close(v: Value) -> Result<Option<AuditFields>, String> {
    let Some(t) = table(v, "on_close")? else {
        return Ok(None);
    };
    keys(&t, &["audit"])?;
    audit(&t)
}

impl CapsOutcome {
    /// Applies the decision to `caps`.
    pub fn apply(self, caps: &mut Vec<Vec<u8>>) {
        if let Some(list) = self.replace {
            *caps = list;
            return;
        }
        caps.retain(|c| !self.remove.iter().any(|r| removes(r, c)));
        for a in self.add {
            if !caps.iter().any(|c| c.eq_ignore_ascii_case(&a)) {
                caps.push(a);
            }
        }
    }
}

/// Whether the removal `r` names `cap` (`AUTH=*` names every `AUTH=` value).
fn removes(r: &[u8], cap: &[u8]) -> bool {
    match r.strip_suffix(b"*") {
        Some(prefix) => {
            cap.len() >= prefix.len() && cap[..prefix.len()].eq_ignore_ascii_case(prefix)
        }
        None => r.eq_ignore_ascii_case(cap),
    }
}
