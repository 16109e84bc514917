//! The Lua policy: the [`Policy`] stage, which runs an operator's script (`[policy] file`,
//! `--policy FILE`) at the phases of every session and turns what it returns into the seam's
//! decisions — refuse a connection, login or command; route a login to a named upstream;
//! rewrite the upstream credentials (another user, a master user, OAuth for an account); hide
//! mailboxes; make SELECT an EXAMINE; edit capability lists; write an audit event.
//!
//! It owns the `[policy]` configuration, the sandboxed VMs and their budgets ([`vm`]), the
//! context tables scripts get ([`context`]), the strict reading of what they return
//! ([`decision`]), the hidden-mailbox rules ([`hide`]) and the stage itself (`stage.rs`). The
//! session code knows nothing of it beyond the phase seam. `docs/policy.md` is the reference
//! for script writers.
//!
//! Costs: not installed without a script. A phase the script does not define is never called,
//! and the seam is asked only for what the script needs: commands are held whole and LIST /
//! LSUB / STATUS responses assembled only for scripts that define `on_command` (whole) or
//! `on_login` (which may hide mailboxes). A call runs synchronously on the session's worker
//! thread, in that thread's own VM (see [`vm`] for why), bounded by the budgets.
//!
//! Failures fail closed: a script error, an exhausted budget, the memory limit or a return
//! value that is not a decision refuses the login or command (`NO [UNAVAILABLE]`), refuses a
//! connection, or leaves a capability list as it was; each is logged with the script's file and
//! line and counted in `imapgate_policy_failures_total{phase,kind}`.
//!
//! Reload: on SIGHUP the file is loaded again ([`Phases::reload`]); new sessions get the new
//! version, sessions already running keep the one they started with (they hold the stages they
//! were accepted with). A script that fails to load keeps the running version, logged.
//!
//! [`Phases::reload`]: crate::phases::Phases::reload

pub mod context;
pub mod decision;
pub mod hide;
mod stage;
pub mod vm;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

use crate::phases::{SessionInfo, SessionMap};
use hide::Rules;
use vm::{Budget, Failure, FailureKind, Phase, Script};

/// The `[policy]` configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The Lua script (`--policy FILE`). Unset: no policy stage at all.
    pub file: Option<PathBuf>,
    /// Bytes each VM (one per worker thread) may allocate; beyond that a call fails
    /// (`kind="memory"`) and the VM is built afresh.
    pub memory_limit_bytes: usize,
    /// VM instructions one call may run (checked every 1000).
    pub instruction_limit: u64,
    /// Milliseconds one call may run (checked with the instruction count).
    pub time_limit_ms: u64,
    /// Named secrets a script hands back as `secret("name")` (a master user's password), so
    /// they live in the configuration or the environment
    /// (`IMAPGATE_POLICY__SECRETS__NAME`), never in the script, and the script never reads them.
    pub secrets: BTreeMap<String, String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            file: None,
            memory_limit_bytes: 16 * 1024 * 1024,
            instruction_limit: 1_000_000,
            time_limit_ms: 50,
            secrets: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for PolicyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: Vec<&String> = self.secrets.keys().collect();
        f.debug_struct("PolicyConfig")
            .field("file", &self.file)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("instruction_limit", &self.instruction_limit)
            .field("time_limit_ms", &self.time_limit_ms)
            .field("secrets (values hidden)", &secrets)
            .finish()
    }
}

impl PolicyConfig {
    /// The budgets of a call.
    pub fn budget(&self) -> Budget {
        Budget {
            memory: self.memory_limit_bytes,
            instructions: self.instruction_limit,
            time: Duration::from_millis(self.time_limit_ms),
        }
    }

    /// Checks the budgets.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_limit_bytes < 256 * 1024 {
            return Err("policy.memory_limit_bytes: at least 262144".into());
        }
        if self.instruction_limit < 1000 {
            return Err("policy.instruction_limit: at least 1000".into());
        }
        if self.time_limit_ms == 0 {
            return Err("policy.time_limit_ms: at least 1".into());
        }
        Ok(())
    }
}

/// Where the audit events a script writes go: the audit log when one is configured
/// ([`crate::audit::Audit`] implements this), else [`LogSink`].
pub trait EventSink: Send + Sync + 'static {
    /// Writes one event of `phase` for the session.
    fn policy_event(&self, session: &SessionInfo, phase: &'static str, fields: &[(String, String)]);
}

/// Writes policy audit events to the log at info level.
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn policy_event(
        &self,
        session: &SessionInfo,
        phase: &'static str,
        fields: &[(String, String)],
    ) {
        crate::telemetry::in_session(|| {
            tracing::info!(
                target: "imapgate::policy::audit",
                session = session.id,
                phase,
                fields = ?fields,
                "policy audit event"
            );
        });
    }
}

/// Loading the policy failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The script could not be read or run.
    #[error("policy script {file}: {failure}{}", .failure.location.as_deref().map(|l| format!(" (at {l})")).unwrap_or_default())]
    Script {
        /// The file.
        file: String,
        /// Why.
        failure: Failure,
    },
    /// A budget setting is wrong.
    #[error("{0}")]
    Config(String),
    /// The failure counter could not be defined or registered.
    #[error("policy counters: {0}")]
    Prometheus(#[from] prometheus::Error),
}

/// Loads and checks the script `config` names (for `check-config`); `None` without one.
pub fn check(config: &PolicyConfig) -> Result<Option<Vec<&'static str>>, PolicyError> {
    let Some(file) = &config.file else {
        return Ok(None);
    };
    config.validate().map_err(PolicyError::Config)?;
    let script = Script::load(file, config.budget()).map_err(|failure| PolicyError::Script {
        file: file.display().to_string(),
        failure,
    })?;
    Ok(Some(
        Phase::ALL
            .into_iter()
            .filter(|p| script.defines(*p))
            .map(Phase::name)
            .collect(),
    ))
}

/// What every version of the stage shares: the failure counter, the audit sink.
struct Shared {
    /// `imapgate_policy_failures_total{phase,kind}`.
    failures: IntCounterVec,
    /// Where audit events go.
    sink: Arc<dyn EventSink>,
    /// Checks local passwords against a decision's `password_hash` (Argon2id on a blocking
    /// thread, successes remembered briefly); shared by every version of the script.
    verifier: Arc<crate::oauth::password::Verifier>,
}

/// The policy stage: one loaded version of the script.
pub struct Policy {
    /// The script.
    script: Arc<Script>,
    /// The configuration it was loaded with (secrets, budgets, file).
    config: PolicyConfig,
    /// The configured upstream names (a route elsewhere is a bad return).
    upstreams: Vec<String>,
    /// Counter and sink.
    shared: Arc<Shared>,
    /// Hidden-mailbox rules of the sessions whose `on_login` gave some, by session id.
    sessions: SessionMap<Arc<Rules>>,
    /// How many sessions have rules (commands and responses of a policy that hides nothing
    /// skip the table).
    hiding: AtomicUsize,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("file", &self.script.path())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Loads the script `config.policy` names; `None` when it names none. `sink` receives the
    /// audit events scripts write.
    pub fn load(
        config: &crate::config::Config,
        sink: Arc<dyn EventSink>,
    ) -> Result<Option<Policy>, PolicyError> {
        let Some(file) = &config.policy.file else {
            return Ok(None);
        };
        config.policy.validate().map_err(PolicyError::Config)?;
        let script =
            Script::load(file, config.policy.budget()).map_err(|failure| PolicyError::Script {
                file: file.display().to_string(),
                failure,
            })?;
        let policy = Policy::from_script(script, config, sink)?;
        tracing::info!(file = %file.display(), phases = ?policy.defined(), "policy loaded");
        Ok(Some(policy))
    }

    /// The stage over a loaded script, with its own failure counter.
    pub(crate) fn from_script(
        script: Arc<Script>,
        config: &crate::config::Config,
        sink: Arc<dyn EventSink>,
    ) -> Result<Policy, PolicyError> {
        let failures = IntCounterVec::new(
            prometheus::Opts::new(
                "policy_failures_total",
                "Policy script calls that failed (and were refused), by phase and kind.",
            )
            .namespace(crate::metrics::NAMESPACE),
            &["phase", "kind"],
        )?;
        for phase in Phase::ALL {
            for kind in FailureKind::ALL {
                failures.with_label_values(&[phase.name(), kind.label()]);
            }
        }
        let verifier = Arc::new(crate::oauth::password::Verifier::new(
            std::time::Duration::from_secs(300),
            0,
        ));
        let shared = Arc::new(Shared {
            failures,
            sink,
            verifier,
        });
        Ok(Policy::with(script, config, shared))
    }

    /// A stage over a loaded script.
    fn with(script: Arc<Script>, config: &crate::config::Config, shared: Arc<Shared>) -> Policy {
        Policy {
            script,
            config: config.policy.clone(),
            upstreams: config.upstreams().into_keys().collect(),
            shared,
            sessions: SessionMap::default(),
            hiding: AtomicUsize::new(0),
        }
    }

    /// Registers `imapgate_policy_failures_total` with the metrics stage's registry.
    pub fn register(&self, registry: &prometheus::Registry) -> Result<(), PolicyError> {
        registry.register(Box::new(self.shared.failures.clone()))?;
        Ok(())
    }

    /// The phases the script defines.
    pub fn defined(&self) -> Vec<&'static str> {
        Phase::ALL
            .into_iter()
            .filter(|p| self.script.defines(*p))
            .map(Phase::name)
            .collect()
    }

    /// Failures counted so far for `phase` and `kind` (for tests).
    pub fn failures(&self, phase: &str, kind: &str) -> u64 {
        self.shared.failures.with_label_values(&[phase, kind]).get()
    }

    /// Sets (or with `None` clears) a session's hidden-mailbox rules.
    fn set_rules(&self, id: u64, rules: Option<Rules>) {
        let (before, after) = match rules {
            Some(rules) => (self.sessions.insert(id, Arc::new(rules)).is_some(), true),
            None => (self.sessions.remove(id).is_some(), false),
        };
        match (before, after) {
            (false, true) => {
                self.hiding.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.hiding.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// A session's hidden-mailbox rules, if it has any.
    fn rules(&self, id: u64) -> Option<Arc<Rules>> {
        if self.hiding.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.sessions.with(id, |rules| rules.clone())
    }

    /// Logs and counts a failure.
    fn failed(&self, phase: Phase, session: &SessionInfo, failure: &Failure) {
        self.shared
            .failures
            .with_label_values(&[phase.name(), failure.kind.label()])
            .inc();
        crate::telemetry::in_session(|| {
            tracing::warn!(
                session = session.id,
                phase = phase.name(),
                kind = failure.kind.label(),
                file = %self.script.path().display(),
                at = failure.location.as_deref().unwrap_or("-"),
                error = %failure.message,
                "policy failed; refused"
            );
        });
    }

    /// Writes an audit event.
    fn audit(&self, session: &SessionInfo, phase: Phase, fields: Option<decision::AuditFields>) {
        if let Some(fields) = fields {
            self.shared
                .sink
                .policy_event(session, phase.name(), &fields);
        }
    }
}
