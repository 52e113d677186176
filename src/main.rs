//! The `streamhouse` binary: `streamhouse server` runs a server; client
//! commands that talk to a running server come with the protocols they use.

mod admin;
mod config;
mod metrics;
mod server;

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// StreamHouse: a streaming SQL database over an object-storage log.
#[derive(Debug, Parser)]
#[command(name = "streamhouse", version, about, long_about = None)]
struct Cli {
    /// Log level or filter (e.g. info, debug, streamhouse_log=trace);
    /// RUST_LOG is used when this is not given
    #[arg(
        long,
        global = true,
        env = "STREAMHOUSE_LOG_LEVEL",
        value_name = "FILTER"
    )]
    log_level: Option<String>,

    /// Log output format
    #[arg(long, global = true, env = "STREAMHOUSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server: with no flags, embedded defaults in ./streamhouse-data
    ///
    /// Precedence: flags > STREAMHOUSE_* environment > --config file > defaults.
    /// Example: streamhouse server --data-dir /var/lib/streamhouse --http-addr 127.0.0.1:0
    Server(config::ServerArgs),
}

fn init_tracing(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_level.as_deref(), cli.log_format);
    let result = match cli.command {
        Command::Server(args) => config::ServerConfig::resolve(&args).and_then(|config| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(server::run(config))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
