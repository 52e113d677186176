//! Server configuration: command-line flags, `STREAMHOUSE_*` environment
//! variables, an optional TOML file, and defaults — in that order of
//! precedence. Flags and environment are read by clap; the file fills only
//! what neither gave. The result is a plain [`ServerConfig`] passed down; no
//! global holds configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Flags of `streamhouse server`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// Directory for the embedded metadata store, the local object store and
    /// scratch files [default: ./streamhouse-data]
    #[arg(long, env = "STREAMHOUSE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL wire protocol address; port 0 picks a free port
    /// [default: 127.0.0.1:5433]
    #[arg(long, env = "STREAMHOUSE_PG_ADDR", value_name = "HOST:PORT")]
    pub pg_addr: Option<SocketAddr>,

    /// Arrow Flight / Flight SQL address; port 0 picks a free port
    /// [default: 127.0.0.1:50051]
    #[arg(long, env = "STREAMHOUSE_FLIGHT_ADDR", value_name = "HOST:PORT")]
    pub flight_addr: Option<SocketAddr>,

    /// Kafka protocol address; port 0 picks a free port
    /// [default: 127.0.0.1:9092]
    #[arg(long, env = "STREAMHOUSE_KAFKA_ADDR", value_name = "HOST:PORT")]
    pub kafka_addr: Option<SocketAddr>,

    /// The address Kafka clients are told to connect to, when they reach
    /// this server by another name (NAT, containers) [default: the Kafka
    /// address]
    #[arg(
        long,
        env = "STREAMHOUSE_KAFKA_ADVERTISED_ADDR",
        value_name = "HOST:PORT"
    )]
    pub kafka_advertised_addr: Option<String>,

    /// HTTP admin address (/health, /ready, /live, REST API); port 0 picks a
    /// free port [default: 127.0.0.1:8080]
    #[arg(long, env = "STREAMHOUSE_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,

    /// Object store: a path or file:// URL, memory://, or s3://bucket/prefix
    /// (S3 settings from the AWS_* environment variables)
    /// [default: DATA_DIR/objects]
    #[arg(long, env = "STREAMHOUSE_OBJECT_STORE", value_name = "URL")]
    pub object_store: Option<String>,

    /// Metadata store: sqlite://PATH or postgres://… [default:
    /// sqlite://DATA_DIR/metadata.db]
    #[arg(long, env = "STREAMHOUSE_METADATA", value_name = "URL")]
    pub metadata: Option<String>,

    /// How often the embedded metadata store is backed up into the object
    /// store (under metadata/backups/); 0s turns it off [default: 1h]
    #[arg(long, env = "STREAMHOUSE_METADATA_BACKUP_INTERVAL", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub metadata_backup_interval: Option<Duration>,

    /// How many backups of the metadata store are kept [default: 24]
    #[arg(long, env = "STREAMHOUSE_METADATA_BACKUPS_KEPT", value_name = "N")]
    pub metadata_backups_kept: Option<usize>,

    /// How often a materialized view whose state changed is checkpointed
    /// (recovery replays at most about this much input) [default: 2s]
    #[arg(long, env = "STREAMHOUSE_CHECKPOINT_INTERVAL", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Option<Duration>,

    /// After this long without rows, a stream partition stops holding back
    /// the watermark of the views reading it [default: 5s]
    #[arg(long, env = "STREAMHOUSE_IDLE_TIMEOUT", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// PostgreSQL connections served at once; more are refused with 53300
    /// [default: 1024]
    #[arg(long, env = "STREAMHOUSE_PG_MAX_CONNECTIONS", value_name = "N")]
    pub pg_max_connections: Option<usize>,

    /// Flight connections served at once; more are closed at once, which
    /// clients see as UNAVAILABLE [default: 1024]
    #[arg(long, env = "STREAMHOUSE_FLIGHT_MAX_CONNECTIONS", value_name = "N")]
    pub flight_max_connections: Option<usize>,

    /// Largest gRPC message the Flight port accepts (one record batch of an
    /// upload, one request); larger ones are RESOURCE_EXHAUSTED
    /// [default: 64 MiB]
    #[arg(
        long,
        env = "STREAMHOUSE_FLIGHT_MAX_MESSAGE_BYTES",
        value_name = "BYTES"
    )]
    pub flight_max_message_bytes: Option<usize>,

    /// Memory all running queries may reserve together; a query that would
    /// cross it fails with 53200 [default: half of the machine's memory]
    #[arg(long, env = "STREAMHOUSE_QUERY_MEMORY", value_name = "BYTES")]
    pub query_memory: Option<usize>,

    /// How clients prove who they are: `trust` (anyone, as any user; only
    /// while every door listens on loopback) or `password` (a user's
    /// password on every door: SCRAM-SHA-256 on PostgreSQL, Basic for a
    /// bearer token on Flight and the HTTP admin, SASL PLAIN or
    /// SCRAM-SHA-256 on Kafka) [default: trust]
    #[arg(long, env = "STREAMHOUSE_AUTH", value_name = "trust|password")]
    pub auth: Option<AuthMode>,

    /// The server's certificate chain (PEM): TLS on every door (Flight,
    /// Kafka and the HTTP admin speak only TLS then; PostgreSQL answers
    /// SSLRequest)
    #[arg(long, env = "STREAMHOUSE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM)
    #[arg(long, env = "STREAMHOUSE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// --auth for the PostgreSQL door alone
    #[arg(long, env = "STREAMHOUSE_PG_AUTH", value_name = "trust|password")]
    pub pg_auth: Option<AuthMode>,

    /// --auth for the Flight door alone
    #[arg(long, env = "STREAMHOUSE_FLIGHT_AUTH", value_name = "trust|password")]
    pub flight_auth: Option<AuthMode>,

    /// --auth for the HTTP admin alone
    #[arg(long, env = "STREAMHOUSE_HTTP_AUTH", value_name = "trust|password")]
    pub http_auth: Option<AuthMode>,

    /// --auth for the Kafka door alone (password: SASL PLAIN or
    /// SCRAM-SHA-256)
    #[arg(long, env = "STREAMHOUSE_KAFKA_AUTH", value_name = "trust|password")]
    pub kafka_auth: Option<AuthMode>,

    /// --tls-cert for the PostgreSQL door alone
    #[arg(long, env = "STREAMHOUSE_PG_TLS_CERT", value_name = "FILE")]
    pub pg_tls_cert: Option<PathBuf>,

    /// --tls-key for the PostgreSQL door alone
    #[arg(long, env = "STREAMHOUSE_PG_TLS_KEY", value_name = "FILE")]
    pub pg_tls_key: Option<PathBuf>,

    /// --tls-cert for the Flight door alone
    #[arg(long, env = "STREAMHOUSE_FLIGHT_TLS_CERT", value_name = "FILE")]
    pub flight_tls_cert: Option<PathBuf>,

    /// --tls-key for the Flight door alone
    #[arg(long, env = "STREAMHOUSE_FLIGHT_TLS_KEY", value_name = "FILE")]
    pub flight_tls_key: Option<PathBuf>,

    /// --tls-cert for the HTTP admin alone
    #[arg(long, env = "STREAMHOUSE_HTTP_TLS_CERT", value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,

    /// --tls-key for the HTTP admin alone
    #[arg(long, env = "STREAMHOUSE_HTTP_TLS_KEY", value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,

    /// --tls-cert for the Kafka door alone
    #[arg(long, env = "STREAMHOUSE_KAFKA_TLS_CERT", value_name = "FILE")]
    pub kafka_tls_cert: Option<PathBuf>,

    /// --tls-key for the Kafka door alone
    #[arg(long, env = "STREAMHOUSE_KAFKA_TLS_KEY", value_name = "FILE")]
    pub kafka_tls_key: Option<PathBuf>,

    /// Clients must present a certificate signed by this CA (PEM), on every
    /// door, as well as log in (needs --tls-cert)
    #[arg(long, env = "STREAMHOUSE_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Refuse PostgreSQL connections that do not use TLS (needs --tls-cert)
    #[arg(long, env = "STREAMHOUSE_REQUIRE_TLS")]
    pub require_tls: bool,

    /// Allow --auth trust on a door that listens beyond loopback
    #[arg(long, env = "STREAMHOUSE_INSECURE")]
    pub insecure: bool,

    /// TOML configuration file; flags and environment variables override it
    #[arg(long, env = "STREAMHOUSE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Trust,
    Password,
}

/// The `[security]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    pub auth: Option<AuthMode>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub require_tls: Option<bool>,
    pub insecure: Option<bool>,
    /// `[security.pgwire]`, `[security.flight]`, `[security.http]`,
    /// `[security.kafka]`: one door's own settings over the ones above.
    pub pgwire: Option<DoorSection>,
    pub flight: Option<DoorSection>,
    pub http: Option<DoorSection>,
    pub kafka: Option<DoorSection>,
}

/// One door's overrides in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorSection {
    pub auth: Option<AuthMode>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// One door's authentication and TLS, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoorSecurity {
    pub auth: AuthMode,
    /// Certificate chain and key files (PEM); none: plaintext.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Authentication and TLS, resolved for each door.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub pgwire: DoorSecurity,
    pub flight: DoorSecurity,
    pub http: DoorSecurity,
    pub kafka: DoorSecurity,
    /// The CA (PEM) that signs the certificates clients must present.
    pub client_ca: Option<PathBuf>,
    /// The PostgreSQL door refuses plaintext.
    pub require_tls: bool,
}

impl Security {
    /// Whether any door asks for passwords.
    pub fn any_password(&self) -> bool {
        [&self.pgwire, &self.flight, &self.http, &self.kafka]
            .iter()
            .any(|d| d.auth == AuthMode::Password)
    }
}

/// The `[log]` table of the config file: write-path tunables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Flush once the oldest buffered append is this old, e.g. "5ms".
    #[serde(default, with = "humantime_serde_opt")]
    pub flush_interval: Option<Duration>,
    /// Flush once this many bytes are buffered.
    pub flush_bytes: Option<usize>,
    /// Bytes of decoded chunks cached in memory.
    pub cache_bytes: Option<u64>,
    /// How often the log's upkeep (retention, compaction, garbage
    /// collection) runs, e.g. "60s"; "0s" never.
    #[serde(default, with = "humantime_serde_opt")]
    pub maintenance_interval: Option<Duration>,
    /// How old a chunk is before compaction rewrites it, e.g. "60s".
    #[serde(default, with = "humantime_serde_opt")]
    pub compact_after: Option<Duration>,
    /// How long a table's log keeps a deleted key's tombstone, e.g. "24h".
    #[serde(default, with = "humantime_serde_opt")]
    pub tombstone_retention: Option<Duration>,
}

/// The `[views]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsSection {
    /// How often a changing view is checkpointed, e.g. "2s".
    #[serde(default, with = "humantime_serde_opt")]
    pub checkpoint_interval: Option<Duration>,
    /// When an idle partition stops holding the watermark back, e.g. "5s".
    #[serde(default, with = "humantime_serde_opt")]
    pub idle_timeout: Option<Duration>,
}

/// The `[limits]` table of the config file: what each door accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub pg_max_connections: Option<usize>,
    pub flight_max_connections: Option<usize>,
    pub flight_max_message_bytes: Option<usize>,
    pub query_memory: Option<usize>,
}

/// What each door accepts, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub pg_max_connections: usize,
    pub flight_max_connections: usize,
    pub flight_max_message_bytes: usize,
    pub query_memory: usize,
}

/// The config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub pg_addr: Option<SocketAddr>,
    pub flight_addr: Option<SocketAddr>,
    pub kafka_addr: Option<SocketAddr>,
    pub kafka_advertised_addr: Option<String>,
    pub http_addr: Option<SocketAddr>,
    pub object_store: Option<String>,
    pub metadata: Option<String>,
    /// How often the embedded metadata store is backed up, e.g. "1h".
    #[serde(default, with = "humantime_serde_opt")]
    pub metadata_backup_interval: Option<Duration>,
    pub metadata_backups_kept: Option<usize>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub views: ViewsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub security: SecuritySection,
}

mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
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
        let security = security(
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

/// Authentication and TLS from flags over the file, each door's own
/// settings over the ones for every door; refuses settings that cannot
/// work, and `trust` on a door beyond loopback unless `insecure`.
fn security(
    args: &ServerArgs,
    file: SecuritySection,
    addrs: [SocketAddr; 4],
) -> anyhow::Result<Security> {
    let auth = args.auth.or(file.auth).unwrap_or_default();
    let pair = |cert: Option<PathBuf>, key: Option<PathBuf>, door: &str| match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => {
            bail!("--{door}tls-cert needs --{door}tls-key (the certificate's private key)")
        }
        (None, Some(_)) => {
            bail!("--{door}tls-key needs --{door}tls-cert (the certificate it belongs to)")
        }
    };
    let tls = pair(
        args.tls_cert.clone().or(file.tls_cert),
        args.tls_key.clone().or(file.tls_key),
        "",
    )?;
    let door = |flag_auth: Option<AuthMode>,
                flag_cert: &Option<PathBuf>,
                flag_key: &Option<PathBuf>,
                section: Option<DoorSection>,
                prefix: &str|
     -> anyhow::Result<DoorSecurity> {
        let section = section.unwrap_or_default();
        let own = pair(
            flag_cert.clone().or(section.tls_cert),
            flag_key.clone().or(section.tls_key),
            prefix,
        )?;
        Ok(DoorSecurity {
            auth: flag_auth.or(section.auth).unwrap_or(auth),
            tls: own.or_else(|| tls.clone()),
        })
    };
    let pgwire = door(
        args.pg_auth,
        &args.pg_tls_cert,
        &args.pg_tls_key,
        file.pgwire,
        "pg-",
    )?;
    let flight = door(
        args.flight_auth,
        &args.flight_tls_cert,
        &args.flight_tls_key,
        file.flight,
        "flight-",
    )?;
    let http = door(
        args.http_auth,
        &args.http_tls_cert,
        &args.http_tls_key,
        file.http,
        "http-",
    )?;
    let require_tls = args.require_tls || file.require_tls.unwrap_or(false);
    let insecure = args.insecure || file.insecure.unwrap_or(false);
    if require_tls && pgwire.tls.is_none() {
        bail!("--require-tls needs a certificate: --tls-cert FILE --tls-key FILE");
    }
    let client_ca = args.tls_client_ca.clone().or(file.tls_client_ca);
    let kafka = door(
        args.kafka_auth,
        &args.kafka_tls_cert,
        &args.kafka_tls_key,
        file.kafka,
        "kafka-",
    )?;
    let doors = [
        ("PostgreSQL", &pgwire, addrs[0]),
        ("Flight", &flight, addrs[1]),
        ("HTTP admin", &http, addrs[2]),
        ("Kafka", &kafka, addrs[3]),
    ];
    if client_ca.is_some()
        && let Some((name, _, _)) = doors.iter().find(|(_, d, _)| d.tls.is_none())
    {
        bail!(
            "--tls-client-ca needs the server's own certificate on every door, and the \
             {name} door has none: --tls-cert FILE --tls-key FILE"
        );
    }
    if !insecure
        && let Some((name, _, addr)) = doors
            .iter()
            .find(|(_, d, a)| d.auth == AuthMode::Trust && !a.ip().is_loopback())
    {
        bail!(
            "the {name} door listens on {addr}, beyond loopback, with --auth trust: anyone \
             who can reach it could connect as any user. Use --auth password (with \
             --tls-cert/--tls-key), or --insecure to allow it"
        );
    }
    Ok(Security {
        pgwire,
        flight,
        http,
        kafka,
        client_ca,
        require_tls,
    })
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

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sh.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\nhttp_addr = \"127.0.0.1:9999\"\n[log]\nflush_interval = \"20ms\"\ncompact_after = \"2s\"\n\
             [views]\ncheckpoint_interval = \"750ms\"\nidle_timeout = \"3s\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(file.clone()),
            http_addr: Some("127.0.0.1:1234".parse().unwrap()),
            ..Default::default()
        };
        let c = ServerConfig::resolve(&args).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.http_addr.port(), 1234);
        assert_eq!(c.pg_addr.port(), 5433);
        assert_eq!(c.flight_addr.port(), 50051);
        assert_eq!(c.log.flush_interval, Some(Duration::from_millis(20)));
        assert_eq!(c.log.compact_after, Some(Duration::from_secs(2)));
        assert_eq!(c.checkpoint_interval, Duration::from_millis(750));
        assert_eq!(c.idle_timeout, Duration::from_secs(3));
        assert_eq!(c.object_store, "/from/file/objects");
        assert_eq!(
            c.metadata,
            MetadataUrl::Sqlite("/from/file/metadata.db".into())
        );
    }

    #[test]
    fn checkpoint_interval_defaults_to_two_seconds() {
        let c = ServerConfig::resolve(&ServerArgs::default()).unwrap();
        assert_eq!(c.checkpoint_interval, Duration::from_secs(2));
    }

    #[test]
    fn metadata_backups_default_hourly_keeping_24_and_0s_turns_them_off() {
        let c = ServerConfig::resolve(&ServerArgs::default()).unwrap();
        assert_eq!(c.metadata_backup_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.metadata_backups_kept, 24);
        let off = ServerArgs {
            metadata_backup_interval: Some(Duration::ZERO),
            metadata_backups_kept: Some(3),
            ..ServerArgs::default()
        };
        let c = ServerConfig::resolve(&off).unwrap();
        assert_eq!(
            (c.metadata_backup_interval, c.metadata_backups_kept),
            (None, 3)
        );
        let none_kept = ServerArgs {
            metadata_backups_kept: Some(0),
            ..ServerArgs::default()
        };
        let err = ServerConfig::resolve(&none_kept).unwrap_err().to_string();
        assert!(err.contains("metadata_backups_kept"), "{err}");
    }

    #[test]
    fn bad_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "nonsense = 1\n").unwrap();
        let args = ServerArgs {
            config: Some(file),
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::resolve(&args).unwrap_err());
        assert!(e.contains("unknown field `nonsense`"), "{e}");
        let e = parse_metadata_url("mysql://x").unwrap_err().to_string();
        assert!(e.contains("unsupported metadata URL"), "{e}");
    }

    #[test]
    fn trust_beyond_loopback_is_refused_unless_insecure() {
        let open = ServerArgs {
            pg_addr: Some("0.0.0.0:0".parse().unwrap()),
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::resolve(&open).unwrap_err());
        assert!(
            e.contains("beyond loopback") && e.contains("--insecure"),
            "{e}"
        );
        let insecure = ServerArgs {
            insecure: true,
            ..open.clone()
        };
        assert_eq!(
            ServerConfig::resolve(&insecure)
                .unwrap()
                .security
                .pgwire
                .auth,
            AuthMode::Trust
        );
        let password = ServerArgs {
            auth: Some(AuthMode::Password),
            ..open
        };
        assert_eq!(
            ServerConfig::resolve(&password)
                .unwrap()
                .security
                .pgwire
                .auth,
            AuthMode::Password
        );
        let half = ServerArgs {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::resolve(&half).unwrap_err());
        assert!(e.contains("--tls-key"), "{e}");
        let require = ServerArgs {
            require_tls: true,
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::resolve(&require).unwrap_err());
        assert!(e.contains("needs a certificate"), "{e}");
        let client_ca = ServerArgs {
            tls_client_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::resolve(&client_ca).unwrap_err());
        assert!(e.contains("--tls-client-ca needs"), "{e}");
    }

    #[test]
    fn each_door_may_override_the_settings_for_every_door() {
        // Passwords and a certificate on the public PostgreSQL door only;
        // the other doors stay on loopback, trusted, in plaintext.
        let args = ServerArgs {
            pg_addr: Some("0.0.0.0:0".parse().unwrap()),
            pg_auth: Some(AuthMode::Password),
            pg_tls_cert: Some("pg.pem".into()),
            pg_tls_key: Some("pg.key".into()),
            require_tls: true,
            ..Default::default()
        };
        let s = ServerConfig::resolve(&args).unwrap().security;
        assert_eq!(s.pgwire.auth, AuthMode::Password);
        assert_eq!(s.pgwire.tls, Some(("pg.pem".into(), "pg.key".into())));
        assert_eq!(s.flight, DoorSecurity::default());
        assert_eq!(s.http, DoorSecurity::default());
        assert!(s.any_password());
        // A trusted door beyond loopback is refused by name.
        let open_flight = ServerArgs {
            flight_addr: Some("0.0.0.0:0".parse().unwrap()),
            auth: Some(AuthMode::Password),
            flight_auth: Some(AuthMode::Trust),
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::resolve(&open_flight).unwrap_err());
        assert!(e.contains("the Flight door"), "{e}");
        let half = ServerArgs {
            http_tls_cert: Some("h.pem".into()),
            ..Default::default()
        };
        let e = format!("{:#}", ServerConfig::resolve(&half).unwrap_err());
        assert!(e.contains("--http-tls-key"), "{e}");
        // The config file's door tables, under the flags.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("doors.toml");
        std::fs::write(
            &file,
            "[security]\nauth = \"password\"\ntls_cert = \"all.pem\"\ntls_key = \"all.key\"\n\
             [security.http]\nauth = \"trust\"\ntls_cert = \"h.pem\"\ntls_key = \"h.key\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(file),
            http_auth: Some(AuthMode::Password),
            ..Default::default()
        };
        let s = ServerConfig::resolve(&args).unwrap().security;
        assert_eq!(s.http.auth, AuthMode::Password);
        assert_eq!(s.http.tls, Some(("h.pem".into(), "h.key".into())));
        assert_eq!(s.flight.tls, Some(("all.pem".into(), "all.key".into())));
        assert_eq!(s.flight.auth, AuthMode::Password);
        assert_eq!(s.kafka.tls, Some(("all.pem".into(), "all.key".into())));
        // The Kafka door's own flags, and its table in the file.
        let args = ServerArgs {
            kafka_auth: Some(AuthMode::Password),
            kafka_tls_cert: Some("k.pem".into()),
            kafka_tls_key: Some("k.key".into()),
            ..Default::default()
        };
        let s = ServerConfig::resolve(&args).unwrap().security;
        assert_eq!(s.kafka.auth, AuthMode::Password);
        assert_eq!(s.kafka.tls, Some(("k.pem".into(), "k.key".into())));
        assert_eq!(s.pgwire, DoorSecurity::default());
        std::fs::write(
            dir.path().join("kafka.toml"),
            "[security.kafka]\nauth = \"password\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(dir.path().join("kafka.toml")),
            ..Default::default()
        };
        let s = ServerConfig::resolve(&args).unwrap().security;
        assert_eq!(s.kafka.auth, AuthMode::Password);
        assert_eq!(s.http.auth, AuthMode::Trust);
    }
}
