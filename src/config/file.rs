//! The TOML configuration file's shape: its tables and keys (unknown
//! keys refused), and reading it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

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

/// The config file at `path`, parsed.
pub(super) fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}
