//! `streamhouse server`: start-up, the ready banner, and ordered shutdown.
//!
//! Start-up order: lock the data directory, bind the HTTP admin listener (so
//! `/live` answers during recovery), open the object store and the metadata
//! store, start the log and the SQL catalog, bind the PostgreSQL listener,
//! then report ready. Shutdown order, on SIGINT or SIGTERM: stop advertising
//! readiness, stop accepting PostgreSQL connections and let open sessions
//! finish (briefly), stop accepting HTTP requests, flush the log (every
//! buffered append is committed or failed), close the metadata store, exit 0.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use streamhouse_log::{
    DataDir, Log, LogConfig, MetadataStore, PostgresMetadata, SqliteMetadata, Store, SystemClock,
};
use streamhouse_pgwire::{Auth, PgConfig, StartupConfig};
use streamhouse_sql::{Database, DatabaseOptions};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::{AuthMode, DoorSecurity, MetadataUrl, ServerConfig};
use crate::http::{self as admin, AdminState};

/// Runs the server until a shutdown signal.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let mut shutdown = ShutdownSignal::install()?;
    raise_open_file_limit();
    let data_dir = DataDir::open(&config.data_dir)
        .with_context(|| format!("cannot use data directory {}", config.data_dir.display()))?;

    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot bind HTTP admin address {}", config.http_addr))?;
    let http_addr = http.local_addr()?;
    warn_if_exposed(&config.security.http, "HTTP admin", http_addr);
    let load_tls = |door: &DoorSecurity| match &door.tls {
        Some((cert, key)) => {
            crate::tls::load(cert, key, config.security.client_ca.as_deref()).map(Some)
        }
        None => Ok(None),
    };
    let http_tls = load_tls(&config.security.http)?;
    let state = Arc::new(AdminState::new(
        crate::metrics::install()?,
        config.security.http.auth == AuthMode::Password,
    ));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_stopped = async move {
        let _ = http_stopped.await;
    };
    let http_task = match &http_tls {
        Some(t) => tokio::spawn(crate::tls::serve_http(
            http,
            admin::router(state.clone()),
            t.config.clone(),
            http_stopped,
        )),
        None => tokio::spawn(
            axum::serve(http, admin::router(state.clone()))
                .with_graceful_shutdown(http_stopped)
                .into_future(),
        ),
    };

    let store = Store::open(&config.object_store)
        .with_context(|| format!("cannot open object store {}", config.object_store))?;
    let meta: Arc<dyn MetadataStore> = match &config.metadata {
        MetadataUrl::Sqlite(path) if !path.exists() && lost_file(&store).await? => {
            anyhow::bail!(
                "the metadata file {} is missing, but the object store {} keeps streams: \
                 run `streamhouse metadata restore` with the same flags (it restores the newest \
                 backup rolled forward with the newer objects, or rebuilds from the objects \
                 alone), then start again",
                path.display(),
                redact(&config.object_store),
            );
        }
        MetadataUrl::Sqlite(path) => Arc::new(
            SqliteMetadata::open(path)
                .await
                .with_context(|| format!("cannot open metadata store {}", path.display()))?,
        ),
        MetadataUrl::Postgres(url) => {
            if store.kind() == streamhouse_log::StoreKind::Local {
                warn!(
                    "the object store is a local directory: other agents can read what this \
                     one writes only if that directory is shared; a cluster wants \
                     --object-store s3://…"
                );
            }
            Arc::new(
                PostgresMetadata::connect(url)
                    .await
                    .with_context(|| format!("cannot open metadata store {}", redact(url)))?,
            )
        }
    };
    if let MetadataUrl::Sqlite(path) = &config.metadata
        && let Some(kept) = streamhouse_log::recover::index_lost(meta.as_ref(), &store).await?
    {
        anyhow::bail!(
            "the metadata store {} has no streams, but the object store {} keeps the \
             definitions of {kept}: the metadata file was lost (or belongs elsewhere). \
             Move the file (and its -wal) aside and run `streamhouse metadata restore` with \
             the same flags: it restores the newest backup rolled forward with the newer \
             objects, or rebuilds from the objects alone",
            path.display(),
            redact(&config.object_store),
        );
    }
    let mut log_config = LogConfig::for_store(&store);
    // The embedded metadata inside the (locked) data directory has no
    // other agent.
    log_config.sole_agent = matches!(&config.metadata, MetadataUrl::Sqlite(path)
        if path.canonicalize().ok() == Some(data_dir.metadata_db()));
    if let Some(v) = config.log.flush_interval {
        log_config.flush.flush_interval = v;
    }
    if let Some(v) = config.log.flush_bytes {
        log_config.flush.flush_bytes = v;
    }
    if let Some(v) = config.log.cache_bytes {
        log_config.cache_bytes = v;
    }
    let upkeep = &mut log_config.maintenance;
    if let Some(v) = config.log.maintenance_interval {
        upkeep.interval = v;
    }
    if let Some(v) = config.log.compact_after {
        upkeep.compact_after = v;
    }
    if let Some(v) = config.log.tombstone_retention {
        upkeep.tombstone_retention = v;
    }
    let log = Arc::new(Log::open(
        store,
        meta.clone(),
        log_config,
        Arc::new(SystemClock),
    ));
    let db = Arc::new(
        Database::open_with(
            log.clone(),
            DatabaseOptions {
                state_dir: Some(data_dir.path().join("state")),
                checkpoint_interval: config.checkpoint_interval,
                idle_timeout: config.idle_timeout,
                server_query_memory: config.limits.query_memory,
                ..DatabaseOptions::default()
            },
        )
        .await
        .context("cannot open the SQL catalog")?,
    );
    first_superuser(&config, &log).await?;
    let pg = TcpListener::bind(config.pg_addr)
        .await
        .with_context(|| format!("cannot bind PostgreSQL address {}", config.pg_addr))?;
    let pg_addr = pg.local_addr()?;
    warn_if_exposed(&config.security.pgwire, "PostgreSQL", pg_addr);
    let pg_tls = load_tls(&config.security.pgwire)?;
    let (stop_pg, pg_stopped) = tokio::sync::oneshot::channel::<()>();
    let pg_config = PgConfig {
        max_connections: config.limits.pg_max_connections,
        startup: StartupConfig {
            auth: match config.security.pgwire.auth {
                AuthMode::Trust => Auth::Trust,
                AuthMode::Password => Auth::Password,
            },
            require_tls: config.security.require_tls,
            certificate_pem: pg_tls.as_ref().map(|t| t.certificate_pem.clone()),
        },
        tls: pg_tls.as_ref().map(|t| t.config.clone()),
        ..PgConfig::default()
    };
    let pg_handlers = streamhouse_pgwire::handlers(db.clone(), &pg_config)
        .map_err(|e| anyhow::anyhow!("cannot set up the PostgreSQL door: {e}"))?;
    let pg_task = tokio::spawn(streamhouse_pgwire::serve(
        pg,
        pg_handlers,
        pg_config,
        async move {
            let _ = pg_stopped.await;
        },
    ));
    let flight = TcpListener::bind(config.flight_addr)
        .await
        .with_context(|| format!("cannot bind Flight address {}", config.flight_addr))?;
    let flight_addr = flight.local_addr()?;
    warn_if_exposed(&config.security.flight, "Flight", flight_addr);
    let flight_tls = load_tls(&config.security.flight)?;
    let (stop_flight, flight_stopped) = tokio::sync::oneshot::channel::<()>();
    let flight_task = tokio::spawn(streamhouse_flight::serve(
        flight,
        db.clone(),
        streamhouse_flight::FlightConfig {
            max_connections: config.limits.flight_max_connections,
            max_message_bytes: config.limits.flight_max_message_bytes,
            require_password: config.security.flight.auth == AuthMode::Password,
            tls: flight_tls.as_ref().map(|t| streamhouse_flight::FlightTls {
                certificate_pem: t.certificate_pem.clone(),
                key_pem: t.key_pem.clone(),
                client_ca_pem: t.client_ca_pem.clone(),
            }),
        },
        async move {
            let _ = flight_stopped.await;
        },
    ));

    let kafka_tls = load_tls(&config.security.kafka)?;
    let kafka = TcpListener::bind(config.kafka_addr)
        .await
        .with_context(|| format!("cannot bind Kafka address {}", config.kafka_addr))?;
    let kafka_addr = kafka.local_addr()?;
    warn_if_exposed(&config.security.kafka, "Kafka", kafka_addr);
    let (stop_kafka, kafka_stopped) = tokio::sync::oneshot::channel::<()>();
    let kafka_task = tokio::spawn(streamhouse_kafka::serve(
        kafka,
        db.clone(),
        streamhouse_kafka::KafkaConfig {
            advertised: config.kafka_advertised.clone(),
            require_login: config.security.kafka.auth == AuthMode::Password,
            tls: kafka_tls.as_ref().map(|t| t.config.clone()),
            ..streamhouse_kafka::KafkaConfig::default()
        },
        async move {
            let _ = kafka_stopped.await;
        },
    ));

    let mut addresses: std::collections::BTreeMap<String, String> = [
        ("pgwire", pg_addr),
        ("flight", flight_addr),
        ("http", http_addr),
    ]
    .into_iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    let kafka_advertised = match &config.kafka_advertised {
        Some((host, port)) => format!("{host}:{port}"),
        None => kafka_addr.to_string(),
    };
    addresses.insert(
        streamhouse_kafka::brokers::ADDRESS.to_string(),
        kafka_advertised,
    );
    if let Err(e) = log.agent().set_addresses(addresses).await {
        warn!(error = %e, "cannot register this agent's addresses");
    }
    let leases = tokio::spawn(db.views().clone().maintain());
    let connector_leases = tokio::spawn(db.connectors().clone().maintain());
    let maintenance = log.start_maintenance();
    // An embedded metadata store is backed up into the object store.
    let backups = match &config.metadata {
        MetadataUrl::Sqlite(_) => {
            let b = Arc::new(crate::backups::Backups::new(
                log.clone(),
                data_dir.path().to_path_buf(),
                config.metadata_backups_kept,
            ));
            state.set_backups(b.clone());
            config
                .metadata_backup_interval
                .map(|every| tokio::spawn(b.run(every)))
        }
        MetadataUrl::Postgres(_) => None,
    };
    state.set_ready(log.clone(), db.clone());
    info!(http = %http_addr, pg = %pg_addr, flight = %flight_addr, "ready");
    print_banner(
        &config,
        &data_dir,
        http_addr,
        pg_addr,
        flight_addr,
        kafka_addr,
    );

    shutdown.recv().await;
    info!("shutting down");
    state.set_draining().await;
    let _ = stop_pg.send(());
    let _ = stop_flight.send(());
    let _ = stop_kafka.send(());
    match kafka_task.await {
        Ok(Err(e)) => warn!(error = %e, "Kafka door ended with an error"),
        Err(e) => warn!(error = %e, "Kafka task failed"),
        Ok(Ok(())) => {}
    }
    if let Err(e) = pg_task.await {
        warn!(error = %e, "PostgreSQL task failed");
    }
    match flight_task.await {
        Ok(Err(e)) => warn!(error = %e, "Flight server ended with an error"),
        Err(e) => warn!(error = %e, "Flight task failed"),
        Ok(Ok(())) => {}
    }
    let _ = stop_http.send(());
    match http_task.await {
        Ok(Err(e)) => warn!(error = %e, "HTTP admin server ended with an error"),
        Err(e) => warn!(error = %e, "HTTP admin task failed"),
        Ok(Ok(())) => {}
    }
    // Views stop here and their leases go to other agents at once.
    leases.abort();
    connector_leases.abort();
    if let Some(m) = maintenance {
        m.abort();
    }
    if let Some(b) = backups {
        b.abort();
    }
    db.views().release().await;
    // Sinks stop too: rows not yet in a file are copied again from the log
    // by whoever runs the sink next.
    db.connectors().shutdown().await;
    log.shutdown().await;
    meta.close().await;
    info!("stopped");
    Ok(())
}

/// A connection URL without its password.
/// Whether the object store keeps stream definitions (see
/// `streamhouse_log::definitions`): a missing metadata file is then lost.
async fn lost_file(store: &Store) -> anyhow::Result<bool> {
    Ok(!streamhouse_log::definitions::ids(store).await?.is_empty())
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// What the user needs to connect, printed once everything is bound.
fn print_banner(
    config: &ServerConfig,
    data_dir: &DataDir,
    http: SocketAddr,
    pg: SocketAddr,
    flight: SocketAddr,
    kafka: SocketAddr,
) {
    let meta = match &config.metadata {
        MetadataUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        MetadataUrl::Postgres(u) => redact(u),
    };
    println!("StreamHouse {} ready", env!("CARGO_PKG_VERSION"));
    println!("  data directory  {}", data_dir.path().display());
    println!("  object store    {}", config.object_store);
    println!("  metadata        {meta}");
    let security = &config.security;
    let http_scheme = if security.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let grpc_scheme = if security.flight.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    println!(
        "  HTTP admin      {http_scheme}://{http}  (/health /ready /live /metrics /v1/streams)"
    );
    let sslmode = if security.pgwire.tls.is_some() {
        "?sslmode=require"
    } else {
        ""
    };
    println!("  PostgreSQL      {pg}  psql \"postgresql://streamhouse@{pg}/streamhouse{sslmode}\"");
    println!("  Flight          {grpc_scheme}://{flight}  (Flight SQL, produce/consume)");
    let shown = match &config.kafka_advertised {
        Some((host, port)) => format!("{host}:{port}"),
        None => kafka.to_string(),
    };
    let kcat_security = match (
        security.kafka.tls.is_some(),
        security.kafka.auth == AuthMode::Password,
    ) {
        (false, false) => "",
        (true, false) => " -X security.protocol=ssl",
        (false, true) => {
            " -X security.protocol=sasl_plaintext -X sasl.mechanisms=SCRAM-SHA-256 \
              -X sasl.username=USER -X sasl.password=PASSWORD"
        }
        (true, true) => {
            " -X security.protocol=sasl_ssl -X sasl.mechanisms=SCRAM-SHA-256 \
              -X sasl.username=USER -X sasl.password=PASSWORD"
        }
    };
    println!("  Kafka           {shown}  kcat -b {shown}{kcat_security} -L");
    let doors = [
        ("PostgreSQL", &security.pgwire, pg, "SCRAM-SHA-256"),
        (
            "Flight",
            &security.flight,
            flight,
            "Basic for a bearer token (handshake)",
        ),
        (
            "HTTP",
            &security.http,
            http,
            "Basic for a bearer token (POST /v1/login)",
        ),
        (
            "Kafka",
            &security.kafka,
            kafka,
            "SASL PLAIN or SCRAM-SHA-256",
        ),
    ];
    let auth: Vec<String> = doors
        .iter()
        .map(|(name, door, addr, how)| match door.auth {
            AuthMode::Password => format!("{name} password: {how}"),
            AuthMode::Trust if addr.ip().is_loopback() => format!("{name} trust (loopback)"),
            AuthMode::Trust => format!("{name} trust (--insecure)"),
        })
        .collect();
    println!("  authentication  {}", auth.join("; "));
    let tls: Vec<&str> = doors
        .iter()
        .filter(|(_, door, _, _)| door.tls.is_some())
        .map(|(name, _, _, _)| *name)
        .collect();
    if !tls.is_empty() {
        println!(
            "  TLS             {}{}",
            tls.join(", "),
            match (security.pgwire.tls.is_some(), security.require_tls) {
                (true, true) => "; PostgreSQL refuses plaintext",
                (true, false) => "; PostgreSQL also takes plaintext (--require-tls refuses it)",
                _ => "",
            }
        );
        if security.client_ca.is_some() {
            println!("  client certs    required on every door, signed by --tls-client-ca");
        }
    }
    println!("Press Ctrl-C to stop.");
}

/// Start-up refuses `trust` beyond loopback unless `--insecure`; this
/// says so in the log when it was allowed.
fn warn_if_exposed(security: &DoorSecurity, door: &str, addr: SocketAddr) {
    if !addr.ip().is_loopback() && security.auth == AuthMode::Trust {
        warn!(%addr, "{door} listens beyond loopback with --auth trust (--insecure): anyone who reaches it is trusted");
    }
}

/// Creates the first superuser (`streamhouse`) on the server's first
/// start, with the password in `STREAMHOUSE_PASSWORD`; with `--auth
/// password`, refuses to start when no one could ever log in.
async fn first_superuser(config: &ServerConfig, log: &Log) -> anyhow::Result<()> {
    let password = std::env::var("STREAMHOUSE_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    streamhouse_sql::roles::ensure_first_superuser(log, password.as_deref())
        .await
        .context("cannot create the first superuser")?;
    if config.security.any_password() {
        let roles = log
            .metadata()
            .roles()
            .await
            .context("cannot read the roles")?;
        if !roles.iter().any(|r| r.login && r.verifier.is_some()) {
            anyhow::bail!(
                "--auth password, but no user has a password: set STREAMHOUSE_PASSWORD for \
                 the first superuser ({})",
                streamhouse_sql::roles::FIRST_SUPERUSER
            );
        }
    }
    Ok(())
}

/// Listens for SIGINT and SIGTERM from the moment it is created, so a
/// signal that arrives right after the ready banner is never missed.
struct ShutdownSignal {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Raises the soft limit on open files to the hard limit: each PostgreSQL
/// connection holds two descriptors (one for its session, one to end it
/// with a message), each Flight connection one, and the usual soft limit of
/// 1024 would stop accepts below the connection caps.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid pointer.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
            && {
                let want = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0
            }
    };
    if raised {
        tracing::debug!(
            from = limit.rlim_cur,
            to = limit.rlim_max,
            "raised the open-file limit"
        );
    }
}
