//! The `imapgate` command: `serve`, `check-config`, `gen-cert`, `hash-password`, `oauth`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use figment::Figment;

use imapgate::admin::{self, Readiness};
use imapgate::audit::Audit;
use imapgate::config::{Config, LogFormat, PlaintextAuth, UpstreamTls};
use imapgate::metrics::Metrics;
use imapgate::phases::{Phases, Stages};
use imapgate::policy::{EventSink, LogSink, Policy};
use imapgate::session::Context;
use imapgate::shutdown::Shutdown;
use imapgate::upstreams::Upstreams;
use imapgate::{server, telemetry, tls};

mod cli_util;

/// A transparent, TLS-terminating IMAP proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(Box<ServeArgs>),
    /// Load and validate a configuration file (with the environment), print the result.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Write a self-signed certificate and key for the given host names / IP addresses.
    GenCert {
        /// Where to write the certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Where to write the private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Host names and IP addresses (subjectAltName).
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Print the Argon2id hash (PHC string) of a local password.
    ///
    /// For `[oauth.users.NAME] password_hash`. Reads the password from the terminal (asked
    /// twice, not echoed) or from the first line of standard input.
    HashPassword,
    /// OAuth injection: obtain and store tokens for `[oauth.accounts]`.
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
}

#[derive(Subcommand)]
enum OauthCommand {
    /// Get an account's first refresh token with the device-code flow and store it.
    ///
    /// Prints a verification address and a code for the account's owner, then waits for the
    /// approval.
    Enroll {
        /// The `[oauth.accounts.NAME]` to enroll.
        account: String,
        /// The configuration file (the proxy's).
        #[arg(short, long)]
        config: PathBuf,
        /// Seconds between polls when the server names no interval (RFC 8628 says 5).
        #[arg(long, value_name = "SECS")]
        poll_interval: Option<f64>,
    },
    /// Store a refresh token obtained elsewhere (read from the first line of standard input).
    Import {
        /// The `[oauth.accounts.NAME]` it belongs to.
        account: String,
        /// The configuration file (the proxy's).
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TlsMode {
    Implicit,
    Starttls,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Parser, Clone)]
struct ServeArgs {
    /// TOML configuration file (flags and IMAPGATE_* variables override it).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Upstream server, host:port.
    #[arg(long)]
    upstream: Option<String>,
    /// Transport security towards the upstream.
    #[arg(long, value_enum)]
    upstream_tls: Option<TlsMode>,
    /// CA certificates (PEM) to verify the upstream with, instead of the system roots.
    #[arg(long)]
    upstream_ca: Option<PathBuf>,
    /// Trust the upstream by the SHA-256 of its certificate (`AB:CD:...`) or `spki:HEX` of its
    /// key instead of by CA (repeatable; replaces `upstream.pin_sha256`).
    #[arg(long, value_name = "DIGEST")]
    upstream_pin: Vec<String>,
    /// Implicit-TLS listen address (repeatable); replaces the configured listeners.
    #[arg(long)]
    listen_tls: Vec<SocketAddr>,
    /// Cleartext/STARTTLS listen address (repeatable); replaces the configured listeners.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Certificate chain (PEM) presented to clients.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of the certificate.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Accept passwords over connections without TLS from any address.
    #[arg(long)]
    insecure_auth: bool,
    /// Expect a PROXY protocol (v1/v2) header on every connection (behind HAProxy or an NLB).
    #[arg(long)]
    proxy_protocol: bool,
    /// A network (CIDR) whose PROXY headers are believed (repeatable); replaces
    /// `listen.proxy_trusted_networks` (default: loopback only).
    #[arg(long, value_name = "CIDR")]
    proxy_trusted: Vec<ipnet::IpNet>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<Format>,
    /// Admin HTTP listener (`/metrics`, `/healthz`, `/readyz`), e.g. 127.0.0.1:9100; turns
    /// metrics on.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Audit log of logins and mail-changing commands (JSON lines): a file, or `-` for stderr.
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Lua access policy script (`docs/policy.md`); replaces `policy.file`.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Bytes the FETCH cache may hold (`256MiB`, `1GiB`, plain bytes); `0` turns it off.
    #[arg(long, value_name = "SIZE", value_parser = imapgate::cache::parse_size)]
    cache_size: Option<u64>,
}

impl ServeArgs {
    /// The configuration: file and environment, then these flags on top.
    fn figment(&self) -> Figment {
        let mut f = Config::figment(self.config.as_deref());
        if let Some(u) = &self.upstream {
            f = f.merge(("upstream.address", u));
        }
        if let Some(mode) = self.upstream_tls {
            let mode = match mode {
                TlsMode::Implicit => UpstreamTls::Implicit,
                TlsMode::Starttls => UpstreamTls::Starttls,
                TlsMode::None => UpstreamTls::None,
            };
            f = f.merge(("upstream.tls", mode));
        }
        if let Some(ca) = &self.upstream_ca {
            f = f.merge(("upstream.ca_file", ca));
        }
        if !self.upstream_pin.is_empty() {
            f = f.merge(("upstream.pin_sha256", &self.upstream_pin));
        }
        if !self.listen_tls.is_empty() || !self.listen.is_empty() {
            f = f.merge(("listen.tls", &self.listen_tls));
            f = f.merge(("listen.plain", &self.listen));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            f = f.merge(("tls.cert", cert)).merge(("tls.key", key));
        }
        if self.proxy_protocol {
            f = f.merge(("listen.proxy_protocol", true));
        }
        if !self.proxy_trusted.is_empty() {
            f = f.merge(("listen.proxy_trusted_networks", &self.proxy_trusted));
        }
        if self.insecure_auth {
            f = f.merge(("auth.plaintext", PlaintextAuth::Always));
        }
        if let Some(format) = self.log_format {
            let format = match format {
                Format::Human => LogFormat::Human,
                Format::Json => LogFormat::Json,
            };
            f = f.merge(("log.format", format));
        }
        if let Some(admin) = self.admin {
            f = f.merge(("admin.listen", admin));
        }
        if let Some(path) = &self.audit_log {
            f = f.merge(("audit.file", path));
        }
        if let Some(path) = &self.policy {
            f = f.merge(("policy.file", path));
        }
        if let Some(size) = self.cache_size {
            f = f.merge(("cache.max_bytes", size));
        }
        f
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imapgate: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::CheckConfig { file } => {
            let config = Config::from_figment(&Config::figment(Some(&file)))
                .with_context(|| format!("{} is not valid", file.display()))?;
            // The policy script is loaded and run once, as `serve` would.
            let phases = imapgate::policy::check(&config.policy)
                .with_context(|| format!("{} is not valid", file.display()))?;
            println!("{} is valid:\n", file.display());
            println!("{config:#?}");
            if let (Some(phases), Some(script)) = (phases, &config.policy.file) {
                println!(
                    "\npolicy {} defines: {}",
                    script.display(),
                    phases.join(", ")
                );
            }
            Ok(())
        }
        Command::GenCert { cert, key, hosts } => {
            let generated = tls::generate(&hosts)?;
            std::fs::write(&cert, &generated.cert_pem)
                .with_context(|| format!("writing {}", cert.display()))?;
            write_private(&key, generated.key_pem.as_bytes())?;
            println!(
                "wrote {} and {} for {}",
                cert.display(),
                key.display(),
                hosts.join(", ")
            );
            Ok(())
        }
        Command::HashPassword => {
            let password = cli_util::read_password()?;
            let phc = imapgate::oauth::password::hash(&password)
                .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
            println!("{phc}");
            Ok(())
        }
        Command::Oauth { command } => oauth_command(command),
    }
}

fn oauth_command(command: OauthCommand) -> Result<()> {
    let (account, file) = match &command {
        OauthCommand::Enroll {
            account, config, ..
        }
        | OauthCommand::Import { account, config } => (account.clone(), config.clone()),
    };
    let config = Config::from_figment(&Config::figment(Some(&file)))
        .with_context(|| format!("{} is not valid", file.display()))?;
    let oauth = config.oauth;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match command {
        OauthCommand::Enroll { poll_interval, .. } => {
            let interval = poll_interval
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(std::time::Duration::from_secs_f64);
            runtime.block_on(imapgate::oauth::enroll::enroll(
                &oauth,
                &account,
                interval,
                |device| {
                    use std::io::Write as _;
                    println!("VERIFICATION_URI {}", device.verification_uri);
                    if let Some(complete) = &device.verification_uri_complete {
                        println!("VERIFICATION_URI_COMPLETE {complete}");
                    }
                    println!("USER_CODE {}", device.user_code);
                    println!(
                        "Open the address above on any device, sign in as the owner of \
                         {account:?} and enter the code (valid {} s). Waiting...",
                        device.expires_in
                    );
                    let _ = std::io::stdout().flush();
                },
            ))?;
        }
        OauthCommand::Import { .. } => {
            let token = cli_util::read_line_stdin()?;
            let token = imapgate::secret::Secret::new(token.to_vec());
            runtime.block_on(imapgate::oauth::enroll::import(&oauth, &account, &token))?;
        }
    }
    println!("ENROLLED {account}");
    Ok(())
}

/// Writes a file readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    imapgate::hardening::disable_core_dumps().context("turning core dumps off")?;
    let config = Config::from_figment(&args.figment()).context("configuration")?;
    if let Err(e) = telemetry::init(&config.log) {
        bail!("logging: {e}");
    }
    raise_fd_limit();
    let server_tls = tls::server_config(&config.tls).context("proxy certificate")?;
    if server_tls.generated {
        tracing::warn!(
            sha256 = %server_tls.fingerprint,
            names = ?config.tls.self_signed_names,
            "no certificate configured: generated a self-signed one"
        );
    } else {
        tracing::info!(sha256 = %server_tls.fingerprint, "certificate loaded");
    }
    let upstreams = Upstreams::new(&config).context("upstream TLS")?;
    // Metrics cost nothing unless the admin listener that serves them is configured.
    let metrics = match config.admin.listen {
        Some(_) => Some(Arc::new(
            Metrics::new(upstreams.iter().map(|u| &*u.name)).context("metrics registry")?,
        )),
        None => None,
    };
    // The audit stage goes first, so it sees every command before another stage decides on it.
    let audit = Audit::start(&config.audit)?.map(Arc::new);
    if let (Some(audit), Some(metrics)) = (&audit, &metrics) {
        audit.register(metrics.registry())?;
    }
    // OAuth injection: the token service (kept by reloads) and the local-users stage.
    let oauth = if config.oauth.enabled() {
        let service = imapgate::oauth::token_service(&config.oauth).context("[oauth]")?;
        if let Some(metrics) = &metrics {
            service
                .register(metrics.registry())
                .context("oauth metrics")?;
        }
        Some(service)
    } else {
        None
    };
    let oauth_stage = (!config.oauth.users.is_empty())
        .then(|| Arc::new(imapgate::oauth::OAuthStage::new(&config.oauth)) as Arc<dyn Phases>);
    // Policy audit events go to the audit log when there is one, else to the log.
    let sink: Arc<dyn EventSink> = match &audit {
        Some(a) => a.clone(),
        None => Arc::new(LogSink),
    };
    let policy = Policy::load(&config, sink)?.map(Arc::new);
    if let (Some(policy), Some(metrics)) = (&policy, &metrics) {
        policy.register(metrics.registry())?;
    }
    // The FETCH cache goes last: it rewrites only commands every other stage let through.
    let cache = config
        .cache
        .enabled()
        .then(|| Arc::new(imapgate::cache::Cache::new(&config.cache)));
    if let (Some(cache), Some(metrics)) = (&cache, &metrics) {
        cache
            .register(metrics.registry())
            .context("cache metrics")?;
    }
    // The policy decides after the audit and metrics (they note every command first, and count
    // an IDLE the policy refuses as they count its local answer); the OAuth stage comes last, so
    // a policy can refuse or route a login (or pick an OAuth account itself) before the local
    // users of [oauth.users] are looked at.
    let stages = Stages::new(
        audit
            .iter()
            .map(|a| a.clone() as Arc<dyn Phases>)
            .chain(metrics.iter().map(|m| m.clone() as Arc<dyn Phases>))
            .chain(policy.iter().map(|p| p.clone() as Arc<dyn Phases>))
            .chain(oauth_stage)
            .chain(cache.map(|c| c as Arc<dyn Phases>))
            .collect(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Sessions run on their own threads, one runtime each (src/workers.rs); the accept loops,
    // the admin listener and background jobs on `runtime`.
    let workers = Arc::new(
        imapgate::workers::Workers::start(config.runtime.threads(), runtime.handle())
            .context("starting the session threads")?,
    );
    let session_threads = workers.clone();
    let served = runtime.block_on(async move {
        let admin_addr = config.admin.listen;
        let ctx = Arc::new(
            Context::new(config, server_tls.config, upstreams, stages).with_oauth(oauth),
        );
        let (contexts_tx, contexts) = tokio::sync::watch::channel(ctx.clone());
        let listeners = server::bind(&ctx).await?;
        let readiness = Readiness::new();
        let (stop_admin, admin_stop) = tokio::sync::watch::channel(false);
        let mut admin_task = None;
        if let (Some(addr), Some(metrics)) = (admin_addr, metrics) {
            let socket = admin::bind(addr).await?;
            let addr = socket.local_addr()?;
            tracing::info!(%addr, "admin listening");
            // Before the LISTENING lines: a script that waits for those has seen this one too.
            println!("ADMIN {addr}");
            admin_task = Some(tokio::spawn(admin::serve(
                socket,
                metrics,
                readiness.clone(),
                Shutdown::new(admin_stop.clone()),
            )));
            tokio::spawn(admin::check_upstream(
                contexts.clone(),
                readiness.clone(),
                Shutdown::new(admin_stop),
            ));
        }
        for l in &listeners {
            let kind = match l.kind {
                imapgate::session::ListenerKind::Tls => "tls",
                imapgate::session::ListenerKind::Plain => "plain",
            };
            let addr = l.local_addr()?;
            tracing::info!(%addr, kind, "listening");
            // A machine-readable line on stdout, for scripts and tests that bind port 0.
            println!("LISTENING {kind} {addr}");
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        readiness.set_listeners_bound();
        for up in ctx.upstreams.iter() {
            tracing::info!(upstream = %up.name, address = %up.config.address, tls = ?up.config.tls, "upstream");
        }
        tracing::info!("ready");
        tokio::spawn(imapgate::reload::probe_upstreams(ctx.clone()));
        tokio::spawn(imapgate::reload::on_sighup(
            move || args.figment(),
            contexts_tx,
        ));
        // Not ready from the signal on, while sessions drain; the admin listener keeps
        // answering until the server has finished.
        let draining = readiness.clone();
        let shutdown = async move {
            signal().await;
            draining.set_draining();
        };
        drop(ctx);
        server::run_on(contexts, listeners, shutdown, Some(session_threads)).await;
        let _ = stop_admin.send(true);
        if let Some(task) = admin_task {
            let _ = imapgate::timer::timeout(std::time::Duration::from_secs(3), task).await;
        }
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    });
    if let Some(workers) = Arc::into_inner(workers) {
        workers.stop();
    }
    if let Some(audit) = audit {
        audit.flush(std::time::Duration::from_secs(3));
    }
    served
}

/// Completes on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Each session holds two sockets: raise the soft file limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
