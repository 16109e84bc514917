//! Prometheus metrics: the [`Metrics`] stage, which counts what happens in sessions purely from
//! the phase seam (`on_connect`, `on_command`, `on_tagged`, `on_close`, `observe`) and renders
//! its registry in the Prometheus text format for the admin listener's `/metrics`.
//!
//! Every label value comes from a fixed set (listener kinds, command names, outcomes, configured
//! upstream names, limit kinds): never user names, mailboxes, tags or addresses. The label
//! handles of the hot-path series are resolved once, at construction, into arrays indexed by
//! enum, so an event costs an atomic add rather than a hash lookup.

mod handles;
#[cfg(test)]
mod tests;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::Side;
use crate::phases::{
    Command, CommandDecision, Completion, ConnectDecision, Event, Flow, Phases, SessionInfo,
    SessionMap, Summary, Verdict,
};
use crate::proto::command::CommandName;
use crate::session::ListenerKind;

use handles::{
    COMMANDS, ConnIdx, LIMIT_KINDS, MECHANISMS, OUTCOMES, RESULTS, UpstreamHandles, command_idx,
    login_idx, mechanism_idx, outcome_idx,
};

/// Command latency buckets, seconds: 0.5 ms (a cached NOOP) to 60 s (a large APPEND or a slow
/// SEARCH); IDLE's long waits land in `+Inf`.
pub const COMMAND_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upstream connect (TCP, TLS, greeting, capabilities) buckets, seconds.
pub const CONNECT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Session duration buckets, seconds: a second to a day.
pub const SESSION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// The metric name prefix.
pub const NAMESPACE: &str = "imapgate";

/// Building or rendering the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The prometheus crate refused a definition or could not encode.
    #[error("prometheus: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The encoder produced text that is not UTF-8 (it never should).
    #[error("metrics text is not UTF-8")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// The metrics stage: a registry and pre-resolved handles to every hot-path series.
pub struct Metrics {
    /// Everything below is registered here.
    registry: Registry,
    /// `imapgate_connections_accepted_total{listener,tls}`, indexed by [`ConnIdx`].
    accepted: [IntCounter; ConnIdx::COUNT],
    /// `imapgate_connections_active{listener,tls}`, indexed by [`ConnIdx`].
    active: [IntGauge; ConnIdx::COUNT],
    /// Sessions that reached `on_connect` and have not closed, with the gauge they were counted
    /// in: `on_close` runs for every session, also those that failed before `on_connect` (PROXY
    /// header, TLS handshake), and a STARTTLS upgrade changes `tls` in between.
    open: SessionMap<ConnIdx>,
    /// `imapgate_tls_handshake_failures_total{listener}`: `[tls, plain]`.
    tls_failures: [IntCounter; 2],
    /// `imapgate_logins_total{result,mechanism}`: `[result][mechanism]`.
    logins: [[IntCounter; MECHANISMS.len()]; RESULTS.len()],
    /// `imapgate_commands_total{command,result}`: `[command][outcome]`.
    commands: [[IntCounter; OUTCOMES.len()]; COMMANDS.len()],
    /// `imapgate_command_duration_seconds{command}`.
    latency: [Histogram; COMMANDS.len()],
    /// `imapgate_bytes_total{direction,side}`: `[received, sent][downstream, upstream]`.
    bytes: [[IntCounter; 2]; 2],
    /// `imapgate_idle_sessions`: IDLE commands started and not yet completed.
    idling: IntGauge,
    /// Upstream connect series per configured upstream name.
    upstreams: Vec<UpstreamHandles>,
    /// `imapgate_upstream_connect_duration_seconds{upstream}` (successful connects), for names
    /// not known at construction.
    connect_latency: HistogramVec,
    /// `imapgate_upstream_connect_failures_total{upstream,cause}`, for names not known at
    /// construction.
    connect_failures: IntCounterVec,
    /// `imapgate_limit_rejections_total{kind}`: the known kinds, pre-resolved.
    limits: [IntCounter; LIMIT_KINDS.len()],
    /// The same family, for kinds added later.
    limits_vec: IntCounterVec,
    /// `imapgate_session_duration_seconds`.
    session_duration: Histogram,
    /// `imapgate_sessions_closed_total{ending}`: `[ok, downstream, upstream, internal]`.
    closed: [IntCounter; 4],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Options with the `imapgate` namespace.
fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

/// Histogram options with the `imapgate` namespace.
fn hopts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets.to_vec())
}

/// Registers a collector and hands it back.
fn reg<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> Result<C, MetricsError> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// A registry with every family, the series of `upstreams` (configured names) resolved.
    pub fn new<'a>(upstreams: impl IntoIterator<Item = &'a str>) -> Result<Metrics, MetricsError> {
        let r = Registry::new();
        let accepted_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "connections_accepted_total",
                    "Client connections accepted (after the PROXY header and TLS handshake).",
                ),
                &["listener", "tls"],
            )?,
        )?;
        let active_vec = reg(
            &r,
            IntGaugeVec::new(
                opts("connections_active", "Client connections open now."),
                &["listener", "tls"],
            )?,
        )?;
        let tls_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "tls_handshake_failures_total",
                    "Client TLS handshakes that failed or timed out.",
                ),
                &["listener"],
            )?,
        )?;
        let logins_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "logins_total",
                    "Login attempts by result and SASL mechanism.",
                ),
                &["result", "mechanism"],
            )?,
        )?;
        let commands_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "commands_total",
                    "Client commands completed after login, by command and tagged result.",
                ),
                &["command", "result"],
            )?,
        )?;
        let latency_vec = reg(
            &r,
            HistogramVec::new(
                hopts(
                    "command_duration_seconds",
                    "From a command's first byte to its tagged answer.",
                    COMMAND_BUCKETS,
                ),
                &["command"],
            )?,
        )?;
        let bytes_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "bytes_total",
                    "Bytes read from (received) and written to (sent) each side after login.",
                ),
                &["direction", "side"],
            )?,
        )?;
        let idling = reg(
            &r,
            IntGauge::with_opts(opts("idle_sessions", "Sessions in IDLE now."))?,
        )?;
        let connect_latency = reg(
            &r,
            HistogramVec::new(
                hopts(
                    "upstream_connect_duration_seconds",
                    "Successful upstream connects: TCP, TLS, greeting and capabilities.",
                    CONNECT_BUCKETS,
                ),
                &["upstream"],
            )?,
        )?;
        let connect_failures = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "upstream_connect_failures_total",
                    "Upstream connects that failed, by cause.",
                ),
                &["upstream", "cause"],
            )?,
        )?;
        let limits_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "limit_rejections_total",
                    "Things a limit refused, by limit.",
                ),
                &["kind"],
            )?,
        )?;
        let build = reg(
            &r,
            IntGaugeVec::new(
                opts("build_info", "Always 1; the version as a label."),
                &["version"],
            )?,
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let session_duration = reg(
            &r,
            Histogram::with_opts(hopts(
                "session_duration_seconds",
                "Client sessions from accept to close.",
                SESSION_BUCKETS,
            ))?,
        )?;
        let closed_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "sessions_closed_total",
                    "Client sessions closed: ok, or the side that ended them abnormally.",
                ),
                &["ending"],
            )?,
        )?;

        let conn = |i: usize| {
            let (listener, tls) = ConnIdx(i).labels();
            (
                accepted_vec.with_label_values(&[listener, tls]),
                active_vec.with_label_values(&[listener, tls]),
            )
        };
        let upstreams = upstreams
            .into_iter()
            .map(|name| UpstreamHandles::new(name, &connect_latency, &connect_failures))
            .collect();
        Ok(Metrics {
            accepted: std::array::from_fn(|i| conn(i).0),
            active: std::array::from_fn(|i| conn(i).1),
            open: SessionMap::default(),
            tls_failures: ["tls", "plain"].map(|l| tls_vec.with_label_values(&[l])),
            logins: RESULTS
                .map(|r| MECHANISMS.map(|m| logins_vec.with_label_values(&[r.label(), m]))),
            commands: COMMANDS
                .map(|c| OUTCOMES.map(|o| commands_vec.with_label_values(&[c.label(), o.label()]))),
            latency: COMMANDS.map(|c| latency_vec.with_label_values(&[c.label()])),
            bytes: ["received", "sent"].map(|d| {
                [Side::Client, Side::Upstream].map(|s| bytes_vec.with_label_values(&[d, s.label()]))
            }),
            idling,
            upstreams,
            connect_latency,
            connect_failures,
            limits: LIMIT_KINDS.map(|k| limits_vec.with_label_values(&[k])),
            limits_vec,
            session_duration,
            closed: ["ok", "downstream", "upstream", "internal"]
                .map(|e| closed_vec.with_label_values(&[e])),
            registry: r,
        })
    }

    /// The registry in the Prometheus text format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    /// The names of every family this stage exports (histograms without their suffixes).
    pub fn family_names(&self) -> Vec<String> {
        self.registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect()
    }

    /// The registry, for callers that add their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Phases for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn on_connect(&self, session: &SessionInfo) -> Verdict<ConnectDecision> {
        let idx = ConnIdx::of(session.listener, session.tls);
        self.accepted[idx.0].inc();
        // A session id seen twice (never, ids are unique) would be counted once.
        if self.open.insert(session.id, idx).is_none() {
            self.active[idx.0].inc();
        }
        Verdict::Now(ConnectDecision::Allow)
    }

    fn on_command(&self, _session: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        if cmd.name == CommandName::Idle {
            self.idling.inc();
        }
        Verdict::Now(CommandDecision::Forward)
    }

    fn on_tagged(&self, _session: &SessionInfo, done: &Completion<'_>) {
        let c = command_idx(done.name);
        self.commands[c][outcome_idx(done.outcome)].inc();
        self.latency[c].observe(done.elapsed().as_secs_f64());
        if done.name == CommandName::Idle {
            self.idling.dec();
        }
    }

    fn on_close(&self, summary: &Summary<'_>) {
        let Some(idx) = self.open.remove(summary.info.id) else {
            // Ended before on_connect (PROXY header, TLS handshake): never counted as open.
            return;
        };
        self.active[idx.0].dec();
        self.session_duration
            .observe(summary.duration.as_secs_f64());
        let ending = match summary.error_side {
            None => 0,
            Some(Side::Client) => 1,
            Some(Side::Upstream) => 2,
            Some(Side::Internal) => 3,
        };
        self.closed[ending].inc();
    }

    fn observe(&self, event: &Event<'_>) {
        match *event {
            Event::TlsHandshakeFailed { listener } => {
                let i = match listener {
                    ListenerKind::Tls => 0,
                    ListenerKind::Plain => 1,
                };
                self.tls_failures[i].inc();
            }
            Event::LimitRejected { kind } => match LIMIT_KINDS.iter().position(|k| *k == kind) {
                Some(i) => self.limits[i].inc(),
                None => self.limits_vec.with_label_values(&[kind]).inc(),
            },
            Event::UpstreamConnect {
                upstream,
                elapsed,
                failure,
            } => match self.upstreams.iter().find(|u| &*u.name == upstream) {
                Some(u) => u.record(elapsed, failure),
                None => {
                    UpstreamHandles::new(upstream, &self.connect_latency, &self.connect_failures)
                        .record(elapsed, failure)
                }
            },
            Event::Login {
                mechanism, result, ..
            } => {
                self.logins[login_idx(result)][mechanism_idx(mechanism)].inc();
            }
            Event::Traffic { side, flow, bytes } => {
                let s = match side {
                    Side::Client => 0,
                    Side::Upstream => 1,
                    // Bytes always move on one side's socket.
                    Side::Internal => return,
                };
                let d = match flow {
                    Flow::Received => 0,
                    Flow::Sent => 1,
                };
                self.bytes[d][s].inc_by(bytes);
            }
            Event::Reload { .. } => {}
        }
    }
}
