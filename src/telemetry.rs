//! Logging set-up: tracing-subscriber to stderr, human-readable or JSON, filtered by `RUST_LOG`
//! when set, else by the configured level. Sessions log inside a span carrying the session id,
//! client address and (once known) user; credentials never reach a log (they live in `Secret`).
//!
//! Every session's task enters its span at each poll. `EnvFilter` does work at every enter and
//! exit (a lock and a map lookup for span-scoped directives); a filter of targets and levels
//! only (`info`, `imapgate=debug,warn`) does none, so that is used unless the directives name
//! spans (`[session{user=alice}]=debug`), which need `EnvFilter`.

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

#[cfg(test)]
mod tests {
    use super::*;

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
