//! Logging set-up: tracing-subscriber to stderr, human-readable or JSON, filtered by `RUST_LOG`
//! when set, else by the configured level. Sessions log inside a span carrying the session id,
//! client address and (once known) user; credentials never reach a log (they live in `Secret`).
//!
//! A session's span is entered at each poll only before login. After login its task is polled
//! inside [`InSession`], which marks the span current for this thread in a thread-local (two
//! stores a poll) without entering it; what logs in the relay phase runs in [`in_session`],
//! which enters it then. Entering a span costs the registry's span stack, two reference-count
//! updates and the layers' `on_enter`/`on_exit` (~230 instructions a poll, ~1.7% of the proxy's
//! CPU under imaptest), for log lines that nearly never come after login.
//!
//! `EnvFilter` does work at every enter and exit (a lock and a map lookup for span-scoped
//! directives); a filter of targets and levels only (`info`, `imapgate=debug,warn`) does none,
//! so that is used unless the directives name spans (`[session{user=alice}]=debug`), which need
//! `EnvFilter`.

use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::span::Id;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Errors when one is already installed or the filter is bad.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => v,
        _ => cfg.level.clone(),
    };
    if needs_env_filter(&directives) {
        let filter = EnvFilter::try_new(&directives).map_err(|e| format!("log level: {e}"))?;
        install(filter, cfg.format)
    } else {
        let filter: Targets = directives.parse().map_err(|e| format!("log level: {e}"))?;
        install(filter, cfg.format)
    }
}

/// Directives that filter on spans or fields (`[span{field=value}]=level`) need `EnvFilter`.
fn needs_env_filter(directives: &str) -> bool {
    directives.contains(['[', '{'])
}

fn install<F>(filter: F, format: LogFormat) -> Result<(), String>
where
    F: Layer<Registry> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Human => registry.with(fmt).try_init(),
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(true))
            .try_init(),
    }
    .map_err(|e| e.to_string())
}

thread_local! {
    /// The span of the session [`InSession`] is polling on this thread, if any.
    static SESSION: Cell<Option<NonZeroU64>> = const { Cell::new(None) };
}

pin_project_lite::pin_project! {
    /// A session's future: its span is made current for [`in_session`] while it is polled, not
    /// entered.
    pub struct InSession<F> {
        #[pin]
        inner: F,
        // The session's span, owned for the session's life (its id stays valid).
        span: tracing::Span,
    }
}

impl<F> InSession<F> {
    /// `inner`, polled with `span` current for [`in_session`].
    pub fn new(inner: F, span: tracing::Span) -> Self {
        InSession { inner, span }
    }
}

/// Puts the thread's previous session span back when a poll ends, also by a panic.
struct Restore(Option<NonZeroU64>);

impl Drop for Restore {
    fn drop(&mut self) {
        SESSION.with(|s| s.set(self.0));
    }
}

impl<F: Future> Future for InSession<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let id = this.span.id().map(|id| id.into_non_zero_u64());
        let _restore = Restore(SESSION.with(|s| s.replace(id)));
        this.inner.poll(cx)
    }
}

/// Runs `f` (which logs) inside the span of the session being polled on this thread, if any:
/// what a session's relay phase logs carries its session fields.
pub fn in_session<R>(f: impl FnOnce() -> R) -> R {
    match SESSION.with(Cell::get) {
        Some(id) => {
            let id = Id::from_non_zero_u64(id);
            // The session's future owns its span while it is polled: the id is live.
            tracing::dispatcher::get_default(|d| d.enter(&id));
            let _exit = Exit(id);
            f()
        }
        None => f(),
    }
}

/// Leaves a span entered by [`in_session`], also by a panic.
struct Exit(Id);

impl Drop for Exit {
    fn drop(&mut self) {
        tracing::dispatcher::get_default(|d| d.exit(&self.0));
    }
}

/// The span of the session being polled on this thread (for work that runs elsewhere on its
/// behalf); the current span when no session is polled.
pub fn session_span() -> tracing::Span {
    in_session(tracing::Span::current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log lines written to a shared buffer.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn what_a_session_logs_in_session_carries_its_span_and_nothing_else_does() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("session", id = 7u64);
            let session = async move {
                in_session(|| tracing::info!("inside"));
                tracing::info!("bare");
                // Not entered while polled: the current span is none.
                assert!(tracing::Span::current().is_none());
                assert!(!session_span().is_none());
            };
            futures::executor::block_on(InSession::new(session, span));
            // Not current once the poll is over.
            in_session(|| tracing::info!("after"));
            assert!(session_span().is_none());
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line = |m: &str| text.lines().find(|l| l.ends_with(m)).unwrap().to_string();
        assert!(line("inside").contains("session{id=7}"), "{text}");
        assert!(!line("bare").contains("session{"), "{text}");
        assert!(!line("after").contains("session{"), "{text}");
    }

    #[test]
    fn a_panicking_poll_leaves_no_session_current() {
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let span = tracing::info_span!("session", id = 8u64);
            assert!(span.id().is_some());
            let poll = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures::executor::block_on(InSession::new(
                    async { panic!("in the session") },
                    span,
                ))
            }));
            assert!(poll.is_err());
            assert_eq!(SESSION.with(Cell::get), None);
        });
    }

    #[test]
    fn plain_levels_and_targets_take_the_light_filter() {
        for d in [
            "info",
            "imapgate=debug,warn",
            "off",
            "imapgate::session=trace",
        ] {
            assert!(!needs_env_filter(d), "{d}");
            assert!(d.parse::<Targets>().is_ok(), "{d}");
        }
        assert!(needs_env_filter("[session{user=alice}]=debug"));
        assert!(needs_env_filter("imapgate[session]=debug"));
    }
}
