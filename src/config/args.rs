//! The flags of `streamhouse server` (each with its `STREAMHOUSE_*`
//! environment variable), read by clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::file::AuthMode;

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
