//! Server configuration: command-line flags, `STREAMHOUSE_*` environment
//! variables, an optional TOML file, and defaults — in that order of
//! precedence. Flags and environment are read by clap; the file fills only
//! what neither gave. The result is a plain [`ServerConfig`] passed down; no
//! global holds configuration.

mod args;
mod file;
mod security;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

pub use args::ServerArgs;
pub use file::{AuthMode, LogSection};
use file::{FileConfig, load_file};
pub use security::{DoorSecurity, Security};

/// What each door accepts, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub pg_max_connections: usize,
    pub flight_max_connections: usize,
    pub flight_max_message_bytes: usize,
    pub query_memory: usize,
}

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub pg_addr: SocketAddr,
    pub flight_addr: SocketAddr,
    pub kafka_addr: SocketAddr,
    /// The host and port Kafka clients are told to connect to.
    pub kafka_advertised: Option<(String, u16)>,
    pub http_addr: SocketAddr,
    pub object_store: String,
    pub metadata: MetadataUrl,
    /// Backups of an embedded metadata store: how often (`None`: never).
    pub metadata_backup_interval: Option<Duration>,
    pub metadata_backups_kept: usize,
    pub log: LogSection,
    pub checkpoint_interval: Duration,
    pub idle_timeout: Duration,
    pub limits: Limits,
    pub security: Security,
}

impl ServerConfig {
    /// Applies flags/environment over the config file over defaults.
    pub fn resolve(args: &ServerArgs) -> anyhow::Result<ServerConfig> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("streamhouse-data"));
        let addr = |flag: Option<SocketAddr>, file: Option<SocketAddr>, default: &str| {
            flag.or(file)
                .unwrap_or_else(|| default.parse().expect("valid default address"))
        };
        let object_store = args
            .object_store
            .clone()
            .or(file.object_store)
            .unwrap_or_else(|| data_dir.join("objects").display().to_string());
        let metadata = match args.metadata.clone().or(file.metadata) {
            None => MetadataUrl::Sqlite(data_dir.join("metadata.db")),
            Some(url) => parse_metadata_url(&url)?,
        };
        let pg_addr = addr(args.pg_addr, file.pg_addr, "127.0.0.1:5433");
        let flight_addr = addr(args.flight_addr, file.flight_addr, "127.0.0.1:50051");
        let kafka_addr = addr(args.kafka_addr, file.kafka_addr, "127.0.0.1:9092");
        let kafka_advertised = args
            .kafka_advertised_addr
            .clone()
            .or(file.kafka_advertised_addr)
            .map(|a| host_port(&a))
            .transpose()?;
        let http_addr = addr(args.http_addr, file.http_addr, "127.0.0.1:8080");
        let security = security::resolve(
            args,
            file.security,
            [pg_addr, flight_addr, http_addr, kafka_addr],
        )?;
        Ok(ServerConfig {
            pg_addr,
            flight_addr,
            kafka_addr,
            kafka_advertised,
            http_addr,
            security,
            data_dir,
            object_store,
            metadata,
            metadata_backup_interval: Some(
                args.metadata_backup_interval
                    .or(file.metadata_backup_interval)
                    .unwrap_or(Duration::from_secs(3600)),
            )
            .filter(|d| !d.is_zero()),
            metadata_backups_kept: positive(
                "metadata_backups_kept",
                args.metadata_backups_kept
                    .or(file.metadata_backups_kept)
                    .unwrap_or(24),
            )?,
            log: file.log,
            checkpoint_interval: args
                .checkpoint_interval
                .or(file.views.checkpoint_interval)
                .unwrap_or(Duration::from_secs(2)),
            idle_timeout: args
                .idle_timeout
                .or(file.views.idle_timeout)
                .unwrap_or(Duration::from_secs(5)),
            limits: Limits {
                pg_max_connections: positive(
                    "pg_max_connections",
                    args.pg_max_connections
                        .or(file.limits.pg_max_connections)
                        .unwrap_or(1024),
                )?,
                flight_max_connections: positive(
                    "flight_max_connections",
                    args.flight_max_connections
                        .or(file.limits.flight_max_connections)
                        .unwrap_or(1024),
                )?,
                flight_max_message_bytes: positive(
                    "flight_max_message_bytes",
                    args.flight_max_message_bytes
                        .or(file.limits.flight_max_message_bytes)
                        .unwrap_or(64 << 20),
                )?,
                query_memory: positive(
                    "query_memory",
                    args.query_memory
                        .or(file.limits.query_memory)
                        .unwrap_or_else(streamhouse_sql::limits::default_query_memory),
                )?,
            },
        })
    }
}

/// `HOST:PORT` (a name or an address; an IPv6 address in brackets).
fn host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .with_context(|| format!("{s:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        bail!("{s:?} is not HOST:PORT");
    }
    Ok((host.to_string(), port))
}

fn positive(name: &str, n: usize) -> anyhow::Result<usize> {
    if n == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(n)
}

fn parse_metadata_url(url: &str) -> anyhow::Result<MetadataUrl> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            bail!("metadata URL {url:?} names no file: use sqlite://PATH");
        }
        return Ok(MetadataUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(MetadataUrl::Postgres(url.to_string()));
    }
    bail!("unsupported metadata URL {url:?}: use sqlite://PATH or postgres://…")
}
