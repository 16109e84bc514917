//! The Lua side: a loaded [`Script`] (one version of the policy file), the sandboxed VMs that
//! run it, and the budgets every call runs under.
//!
//! One VM per tokio worker thread and script version, created on the thread's first call
//! (`thread_local!`), never shared: a call takes no lock and never waits for another session's
//! call, and an idle session holds no VM at all. A VM that hit its memory limit is dropped and
//! built again on the next call. VMs of a script version nobody uses any more (after a reload,
//! once the last session of that version has ended) are dropped by the next call on their thread.
//!
//! Sandbox: only the `string` (without `string.dump`), `table`, `math` and `utf8` libraries and
//! the safe base functions; no `io`, `os`, `debug`, `package`, `require`, `load`, `loadfile`,
//! `dofile`, `collectgarbage` or coroutines. `print` writes to the proxy's log. `pcall` and
//! `xpcall` cannot catch a budget or memory failure. Every call runs under an instruction
//! budget and a time budget (checked every [`HOOK_EVERY`] instructions by a global hook) and
//! the VM under a memory limit; a failure of any kind is a [`Failure`] for the caller to fail
//! closed on.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mlua::{
    Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, UserData, Value, VmState,
};

/// The budget is checked after this many VM instructions.
pub const HOOK_EVERY: u32 = 1000;

/// The marker a budget failure travels through Lua with.
const BUDGET: &str = "policy budget exceeded";

/// The phases a script may define, by the name of its global function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `on_connect(ctx)`
    Connect = 0,
    /// `on_login(ctx)`
    Login = 1,
    /// `on_command(ctx)`
    Command = 2,
    /// `on_capabilities(ctx)`
    Capabilities = 3,
    /// `on_close(ctx)`
    Close = 4,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 5] = [
        Phase::Connect,
        Phase::Login,
        Phase::Command,
        Phase::Capabilities,
        Phase::Close,
    ];

    /// The global function's name (and the metric label).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "on_connect",
            Phase::Login => "on_login",
            Phase::Command => "on_command",
            Phase::Capabilities => "on_capabilities",
            Phase::Close => "on_close",
        }
    }
}

/// How a call failed (the metric label `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A Lua error (syntax, runtime, `error()`), also while loading.
    Error,
    /// The instruction or time budget ran out.
    Timeout,
    /// The memory limit was reached.
    Memory,
    /// The phase returned something that is not a decision.
    BadReturn,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Error,
        FailureKind::Timeout,
        FailureKind::Memory,
        FailureKind::BadReturn,
    ];

    /// A fixed label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::BadReturn => "bad_return",
        }
    }
}

/// A failed call or load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind.
    pub kind: FailureKind,
    /// `file:line` in the script, when known.
    pub location: Option<String>,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.message)
    }
}

/// What a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes the VM may allocate in all.
    pub memory: usize,
    /// VM instructions per call.
    pub instructions: u64,
    /// Wall time per call.
    pub time: Duration,
}

/// The opaque stand-in for the client's password in `on_login`'s context: it can be handed
/// back in a decision, never read.
#[derive(Debug, Clone, Copy)]
pub struct PasswordHandle;

impl UserData for PasswordHandle {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(mlua::MetaMethod::ToString, |_, _, ()| Ok("<password>"));
    }
}

/// A secret from `[policy.secrets]`, by name (`secret("name")`): resolved by the proxy when a
/// decision hands it back, never readable by the script.
#[derive(Debug, Clone)]
pub struct SecretHandle(pub String);

impl UserData for SecretHandle {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(mlua::MetaMethod::ToString, |_, _, ()| Ok("<secret>"));
    }
}

/// One loaded version of the policy file.
#[derive(Debug)]
pub struct Script {
    /// Unique per load (VM caches are keyed by it).
    id: u64,
    /// The file.
    path: PathBuf,
    /// Its text.
    source: Vec<u8>,
    /// Which phases it defines, indexed by `Phase as usize`.
    defined: [bool; 5],
    /// Budgets.
    budget: Budget,
}

/// Ids for loaded scripts.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A VM with the script loaded.
struct Vm {
    /// The state.
    lua: Lua,
    /// The phase functions, indexed by `Phase as usize`.
    phases: [Option<Function>; 5],
    /// The budget of the call in progress.
    meter: Rc<Meter>,
}

/// The running call's budget, read by the hook.
#[derive(Default)]
struct Meter {
    /// When the call started.
    started: Cell<Option<Instant>>,
    /// Instructions run so far (in steps of [`HOOK_EVERY`]).
    instructions: Cell<u64>,
    /// The budget ran out during this call (`pcall` cannot undo that).
    exceeded: Cell<bool>,
    /// Where the script was when it ran out.
    location: RefCell<Option<String>>,
}

/// A VM cached on a worker thread for one script version.
struct Slot {
    /// The version (dead once no session uses it).
    script: Weak<Script>,
    /// Its id.
    id: u64,
    /// The VM; `None` after a memory failure (built again on the next call).
    vm: Option<Vm>,
}

thread_local! {
    /// This thread's VMs, one per script version in use.
    static VMS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

impl Script {
    /// Reads and loads `path`: it must compile and its top level must run within the budget.
    /// The VM built to check it is kept for this thread.
    pub fn load(path: &Path, budget: Budget) -> Result<Arc<Script>, Failure> {
        let source = std::fs::read(path).map_err(|e| Failure {
            kind: FailureKind::Error,
            location: None,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Script::from_source(path, source, budget)
    }

    /// Loads a script from its text; `path` names it in errors.
    pub fn from_source(
        path: &Path,
        source: Vec<u8>,
        budget: Budget,
    ) -> Result<Arc<Script>, Failure> {
        let mut script = Script {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_path_buf(),
            source,
            defined: [false; 5],
            budget,
        };
        let vm = Vm::new(&script)?;
        for phase in Phase::ALL {
            script.defined[phase as usize] = vm.phases[phase as usize].is_some();
        }
        let script = Arc::new(script);
        VMS.with(|vms| {
            vms.borrow_mut().push(Slot {
                script: Arc::downgrade(&script),
                id: script.id,
                vm: Some(vm),
            })
        });
        Ok(script)
    }

    /// Whether the script defines `phase`.
    pub fn defines(&self, phase: Phase) -> bool {
        self.defined[phase as usize]
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `phase` (which the script defines) on this thread's VM: `ctx` builds the context
    /// table, `decide` reads the returned value. Every failure (error, budget, memory, a value
    /// `decide` refuses) is a [`Failure`].
    pub fn call<D>(
        self: &Arc<Script>,
        phase: Phase,
        ctx: impl FnOnce(&Lua) -> mlua::Result<Table>,
        decide: impl FnOnce(&Lua, Value) -> Result<D, String>,
    ) -> Result<D, Failure> {
        VMS.with(|vms| {
            let mut vms = vms.borrow_mut();
            // Versions nobody uses any more go first.
            vms.retain(|s| s.script.strong_count() > 0);
            let at = match vms.iter().position(|s| s.id == self.id) {
                Some(at) => at,
                None => {
                    vms.push(Slot {
                        script: Arc::downgrade(self),
                        id: self.id,
                        vm: None,
                    });
                    vms.len() - 1
                }
            };
            let slot = &mut vms[at];
            if slot.vm.is_none() {
                slot.vm = Some(Vm::new(self)?);
            }
            let Some(vm) = slot.vm.as_ref() else {
                unreachable!("built above")
            };
            let result = vm.call(phase, ctx, decide);
            if let Err(Failure {
                kind: FailureKind::Memory,
                ..
            }) = &result
            {
                // What filled it may still be referenced: start afresh.
                slot.vm = None;
            }
            result
        })
    }
}

impl Vm {
    /// A sandboxed VM with `script` run once (its top level defines the phases).
    fn new(script: &Script) -> Result<Vm, Failure> {
        let lua = Lua::new_with(
            StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8,
            LuaOptions::default(),
        )
        .map_err(|e| classify(&e, None))?;
        let meter = Rc::new(Meter::default());
        sandbox(&lua, &meter).map_err(|e| classify(&e, None))?;
        lua.set_memory_limit(script.budget.memory)
            .map_err(|e| classify(&e, None))?;
        let hook_meter = meter.clone();
        let budget = script.budget;
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_lua, debug| {
                let m = &hook_meter;
                m.instructions
                    .set(m.instructions.get() + u64::from(HOOK_EVERY));
                let late = m.started.get().is_some_and(|t| t.elapsed() > budget.time);
                if m.exceeded.get() || m.instructions.get() > budget.instructions || late {
                    if !m.exceeded.replace(true) {
                        let src = debug.source();
                        let file = src.short_src.as_deref().unwrap_or("?").to_string();
                        let line = debug.current_line().unwrap_or(0);
                        *m.location.borrow_mut() = Some(format!("{file}:{line}"));
                    }
                    return Err(mlua::Error::runtime(BUDGET));
                }
                Ok(VmState::Continue)
            },
        )
        .map_err(|e| classify(&e, None))?;
        let name = format!("@{}", script.path.display());
        meter.start();
        let loaded = lua
            .load(&script.source[..])
            .set_name(name)
            .set_mode(mlua::chunk::ChunkMode::Text)
            .exec();
        let stopped = meter.stop();
        loaded.map_err(|e| classify(&e, stopped))?;
        let globals = lua.globals();
        let mut phases: [Option<Function>; 5] = Default::default();
        for phase in Phase::ALL {
            phases[phase as usize] = match globals.raw_get::<Value>(phase.name()) {
                Ok(Value::Function(f)) => Some(f),
                Ok(Value::Nil) => None,
                Ok(other) => {
                    return Err(Failure {
                        kind: FailureKind::Error,
                        location: None,
                        message: format!(
                            "{} is a {}, not a function",
                            phase.name(),
                            other.type_name()
                        ),
                    });
                }
                Err(e) => return Err(classify(&e, None)),
            };
        }
        Ok(Vm { lua, phases, meter })
    }

    /// One call of a phase under the budget.
    fn call<D>(
        &self,
        phase: Phase,
        ctx: impl FnOnce(&Lua) -> mlua::Result<Table>,
        decide: impl FnOnce(&Lua, Value) -> Result<D, String>,
    ) -> Result<D, Failure> {
        let Some(f) = &self.phases[phase as usize] else {
            return Err(Failure {
                kind: FailureKind::Error,
                location: None,
                message: format!("{} is not defined", phase.name()),
            });
        };
        self.meter.start();
        let result = ctx(&self.lua).and_then(|ctx| f.call::<Value>(ctx));
        let stopped = self.meter.stop();
        let value = result.map_err(|e| classify(&e, stopped))?;
        decide(&self.lua, value).map_err(|message| Failure {
            kind: FailureKind::BadReturn,
            location: None,
            message,
        })
    }
}

impl Meter {
    /// A call starts.
    fn start(&self) {
        self.started.set(Some(Instant::now()));
        self.instructions.set(0);
        self.exceeded.set(false);
        self.location.replace(None);
    }

    /// The call ended: where it ran out of budget, if it did.
    fn stop(&self) -> Option<String> {
        self.started.set(None);
        if self.exceeded.get() {
            Some(self.location.take().unwrap_or_else(|| "?".into()))
        } else {
            None
        }
    }
}

/// Removes what a policy must not reach and puts safe versions of what it may.
fn sandbox(lua: &Lua, meter: &Rc<Meter>) -> mlua::Result<()> {
    let g = lua.globals();
    for name in [
        "load",
        "loadfile",
        "dofile",
        "require",
        "collectgarbage",
        "module",
        "setfenv",
        "getfenv",
        "loadstring",
        "debug",
        "io",
        "os",
        "package",
        "coroutine",
    ] {
        g.raw_set(name, Value::Nil)?;
    }
    let string: Table = g.raw_get("string")?;
    string.raw_set("dump", Value::Nil)?;
    g.raw_set(
        "print",
        lua.create_function(|_, args: MultiValue| {
            let text: Vec<String> = args
                .iter()
                .map(|v| v.to_string().unwrap_or_else(|_| v.type_name().to_string()))
                .collect();
            crate::telemetry::in_session(|| {
                tracing::info!(target: "imapgate::policy::script", "{}", text.join("\t"));
            });
            Ok(())
        })?,
    )?;
    g.raw_set(
        "secret",
        lua.create_function(|_, name: String| Ok(SecretHandle(name)))?,
    )?;
    let m = meter.clone();
    g.raw_set(
        "pcall",
        lua.create_function(move |lua, (f, args): (Value, MultiValue)| {
            protected(lua, &m, f, args, None)
        })?,
    )?;
    let m = meter.clone();
    g.raw_set(
        "xpcall",
        lua.create_function(
            move |lua, (f, handler, args): (Value, Function, MultiValue)| {
                protected(lua, &m, f, args, Some(handler))
            },
        )?,
    )?;
    Ok(())
}

/// `pcall` / `xpcall` that let budget and memory failures through.
fn protected(
    lua: &Lua,
    meter: &Meter,
    f: Value,
    args: MultiValue,
    handler: Option<Function>,
) -> mlua::Result<MultiValue> {
    let result = match f {
        Value::Function(f) => f.call::<MultiValue>(args),
        other => Err(mlua::Error::runtime(format!(
            "attempt to call a {} value",
            other.type_name()
        ))),
    };
    match result {
        Ok(mut values) => {
            values.push_front(Value::Boolean(true));
            Ok(values)
        }
        Err(e) if meter.exceeded.get() || is_memory(&e) => Err(e),
        Err(e) => {
            let message = Value::String(lua.create_string(error_text(&e))?);
            let message = match handler {
                Some(h) => h.call::<Value>(message)?,
                None => message,
            };
            Ok(MultiValue::from_vec(vec![Value::Boolean(false), message]))
        }
    }
}

/// Whether `e` is (or wraps) a memory failure.
fn is_memory(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory(cause),
        mlua::Error::WithContext { cause, .. } => is_memory(cause),
        _ => false,
    }
}

/// The message of a Lua error without mlua's decoration (tracebacks, "runtime error:").
fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        mlua::Error::WithContext { cause, .. } => error_text(cause),
        other => other.to_string(),
    }
}

/// A Lua error as a [`Failure`]; `exceeded` is where the budget ran out, if it did.
fn classify(e: &mlua::Error, exceeded: Option<String>) -> Failure {
    if let Some(location) = exceeded {
        return Failure {
            kind: FailureKind::Timeout,
            location: Some(location),
            message: "instruction or time budget exceeded".into(),
        };
    }
    let message = error_text(e);
    let kind = if is_memory(e) {
        FailureKind::Memory
    } else {
        FailureKind::Error
    };
    Failure {
        kind,
        location: location_in(&message),
        message,
    }
}

/// The first `file:line` in a Lua error message (`/etc/imapgate/p.lua:12: attempt to ...`).
fn location_in(message: &str) -> Option<String> {
    let bytes = message.as_bytes();
    let mut from = 0;
    while let Some(colon) = message[from..].find(':').map(|i| i + from) {
        let digits = bytes[colon + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let end = colon + 1 + digits;
        if digits > 0 && bytes.get(end) == Some(&b':') {
            let start = message[..colon]
                .rfind([' ', '\n', '\t'])
                .map_or(0, |i| i + 1);
            if start < colon {
                return Some(message[start..end].to_string());
            }
        }
        from = colon + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::location_in;

    #[test]
    fn finds_the_location_in_lua_messages() {
        assert_eq!(
            location_in("/etc/imapgate/p.lua:12: attempt to index a nil value").as_deref(),
            Some("/etc/imapgate/p.lua:12")
        );
        assert_eq!(
            location_in("runtime error: [string \"x\"]:3: boom").as_deref(),
            Some("\"x\"]:3")
        );
        assert_eq!(location_in("no location here: at all"), None);
    }
}
