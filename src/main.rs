//! The `streamhouse` binary: `streamhouse server` runs a server; client
//! commands that talk to a running server come with the protocols they use.

mod backups;
mod cli;
mod config;
mod http;
mod metrics;
mod server;
mod simulator;
mod tls;

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
    Server(Box<config::ServerArgs>),

    /// Create, list, describe and delete streams
    #[command(subcommand)]
    Streams(cli::StreamsCommand),

    /// Append rows read from standard input or a file (JSON lines or CSV)
    ///
    /// Example: echo '{"id":1,"user":"ann","amount":9.5}' | streamhouse produce orders
    ///
    /// Example: streamhouse produce orders --format csv --file orders.csv --key user
    Produce(cli::ProduceArgs),

    /// Print a stream's rows (or a view's changes); with --follow, as they arrive
    ///
    /// Example: streamhouse consume orders --from latest --follow --format json
    ///
    /// Example: streamhouse consume orders --group billing
    Consume(cli::ConsumeArgs),

    /// List, describe and reset consumer groups
    #[command(subcommand)]
    Groups(cli::GroupsCommand),

    /// List the backups of the embedded metadata store, or restore one
    #[command(subcommand)]
    Metadata(cli::MetadataCommand),

    /// An SQL shell (or run -c "statements" and exit)
    ///
    /// Example: streamhouse sql -c "SELECT count(*) FROM orders"
    Sql(cli::SqlArgs),

    /// Print a shell completion script
    ///
    /// Example: streamhouse completions bash > /etc/bash_completion.d/streamhouse
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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

/// Runs a client command on a small runtime.
fn client<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> ExitCode {
    // One TLS implementation for the process (ring), before any door or
    // client makes a TLS config: with more than one compiled in (the Delta
    // Lake crate's HTTP client brings aws-lc), rustls cannot pick one on
    // its own and refuses to build a config without it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let is_server = matches!(cli.command, Command::Server(_));
    #[cfg(unix)]
    if !is_server {
        // `streamhouse consume … | head` ends quietly, like other tools.
        // SAFETY: restoring the default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Client commands only log warnings unless told otherwise.
    let level = cli
        .log_level
        .as_deref()
        .or((!is_server && std::env::var_os("RUST_LOG").is_none()).then_some("warn"));
    init_tracing(level, cli.log_format);
    let result = match cli.command {
        Command::Server(args) => config::ServerConfig::resolve(&args).and_then(|config| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Planning deep queries recurses; 2 MiB is not always enough.
                .thread_stack_size(8 << 20)
                .build()?
                .block_on(server::run(config))
        }),
        Command::Streams(cmd) => client(cli::streams(cmd)),
        Command::Produce(args) => client(cli::produce(args)),
        Command::Consume(args) => client(cli::consume(args)),
        Command::Groups(cmd) => client(cli::groups(cmd)),
        Command::Sql(args) => client(cli::sql(args)),
        Command::Metadata(cmd) => client(cli::metadata::run(cmd)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "streamhouse",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
