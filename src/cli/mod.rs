//! Client commands for people at a terminal: streams, produce, consume,
//! groups and an SQL shell, all over the public Flight protocols of a
//! running server (`--server`, or `STREAMHOUSE_SERVER`).

mod client;
pub mod metadata;
mod output;
mod shell;

use anyhow::{Context, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, SchemaRef};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};

pub use client::{Client, DEFAULT_SERVER, Outcome};
pub use metadata::MetadataCommand;
pub use output::{Format, Printer};

/// Where the server is, and who is asking.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The server's Flight address (grpc+tls://… for TLS)
    #[arg(long, env = "STREAMHOUSE_SERVER", default_value = DEFAULT_SERVER, value_name = "URI")]
    pub server: String,

    /// Log in as this user (a server started with --auth password); the
    /// password comes from STREAMHOUSE_PASSWORD or a prompt
    #[arg(long, env = "STREAMHOUSE_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// The CA certificate (PEM) that signed the server's certificate; turns
    /// TLS on
    #[arg(long, env = "STREAMHOUSE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
}

/// `streamhouse streams …`
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// Create a stream
    ///
    /// Example: streamhouse streams create orders --partitions 16 --schema 'id bigint, user text, amount double'
    Create {
        name: String,
        /// Columns, as in CREATE STREAM: 'id bigint not null, user text, ts timestamp'
        #[arg(long)]
        schema: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// A column whose value picks the partition
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List streams
    ///
    /// Example: streamhouse streams list
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show a stream's columns, partitions and row counts
    ///
    /// Example: streamhouse streams describe orders
    Describe {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Delete a stream and its data
    ///
    /// Example: streamhouse streams delete orders
    Delete {
        name: String,
        /// No error when it does not exist
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// Input formats of `produce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line
    Json,
    /// Comma-separated values with a header line
    Csv,
}

/// `streamhouse produce …`
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The stream to append to
    pub stream: String,
    #[arg(long, value_enum, default_value_t = InputFormat::Json)]
    pub format: InputFormat,
    /// Read this file instead of standard input (with a progress bar)
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Rows per append
    #[arg(long, default_value_t = 8192)]
    pub batch_rows: usize,
    /// Partition rows by this column (repeat for several) instead of the
    /// stream's key
    #[arg(long)]
    pub key: Vec<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// `streamhouse consume …`
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The stream (or materialized view) to read
    pub stream: String,
    /// Read as this consumer group: start at its committed offsets and
    /// commit what was printed
    #[arg(long)]
    pub group: Option<String>,
    /// earliest, latest, an offset, or an RFC 3339 time
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Keep reading as rows arrive (until interrupted)
    #[arg(long)]
    pub follow: bool,
    /// Only this partition
    #[arg(long)]
    pub partition: Option<u32>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub server: ServerArg,
}

/// `streamhouse groups …`
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups
    ///
    /// Example: streamhouse groups list
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show a group's members and lag per partition
    ///
    /// Example: streamhouse groups describe billing
    Describe {
        group: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Move a group's committed offsets
    ///
    /// Example: streamhouse groups reset billing --to earliest
    Reset {
        group: String,
        /// earliest, latest, an offset, or an RFC 3339 time
        #[arg(long)]
        to: String,
        /// The group's stream (default: the one it has committed on)
        #[arg(long)]
        stream: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// `streamhouse sql …`
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Run these statements and exit (otherwise: an interactive shell)
    #[arg(short = 'c', long = "command")]
    pub command: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A name as an SQL identifier (quoted unless plain lower case).
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Prints what a statement returned.
fn show(outcome: Outcome, format: Format) -> anyhow::Result<()> {
    match outcome {
        Outcome::Rows(schema, batches) => {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows == 0 && format == Format::Table {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                println!("(no rows: {})", names.join(", "));
            } else {
                Printer::new(format, std::io::stdout().lock()).print(&batches)?;
            }
        }
        Outcome::Done(rows) => {
            if rows > 0 {
                println!("OK, {rows} rows");
            } else {
                println!("OK");
            }
        }
    }
    Ok(())
}

pub async fn streams(cmd: StreamsCommand) -> anyhow::Result<()> {
    match cmd {
        StreamsCommand::Create {
            name,
            schema,
            partitions,
            key,
            server,
        } => {
            if partitions == 0 {
                bail!("--partitions must be at least 1");
            }
            let mut with = format!("partitions = {partitions}");
            if let Some(k) = key {
                with.push_str(&format!(", key = {}", literal(&k)));
            }
            let sql = format!("CREATE STREAM {} ({schema}) WITH ({with})", ident(&name));
            Client::connect(&server).await?.run(&sql).await?;
            println!("created stream {name} ({partitions} partitions)");
        }
        StreamsCommand::List { server } => {
            let c = Client::connect(&server).await?;
            show(c.run("SHOW STREAMS").await?, Format::Table)?;
        }
        StreamsCommand::Describe { name, server } => {
            let c = Client::connect(&server).await?;
            show(
                c.run(&format!("DESCRIBE {}", ident(&name))).await?,
                Format::Table,
            )?;
            show(
                c.run(&format!(
                    "SELECT partition, rows, high_watermark, start_offset, bytes, last_append \
                     FROM streamhouse.partitions WHERE stream = {} ORDER BY partition",
                    literal(&name)
                ))
                .await?,
                Format::Table,
            )?;
        }
        StreamsCommand::Delete {
            name,
            if_exists,
            server,
        } => {
            let c = Client::connect(&server).await?;
            let sql = format!(
                "DROP STREAM {}{}",
                if if_exists { "IF EXISTS " } else { "" },
                ident(&name)
            );
            c.run(&sql).await?;
            println!("deleted stream {name}");
        }
    }
    Ok(())
}

/// The declared columns of a stream (what producers send).
async fn declared_schema(client: &Client, stream: &str) -> anyhow::Result<SchemaRef> {
    match client
        .run(&format!("SELECT * FROM {} LIMIT 0", ident(stream)))
        .await?
    {
        Outcome::Rows(schema, _) => Ok(schema),
        Outcome::Done(_) => bail!("{stream} is not a stream"),
    }
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.server).await?;
    let schema = declared_schema(&client, &args.stream)
        .await
        .with_context(|| format!("cannot produce to {}", args.stream))?;
    let (input, bar): (
        Box<dyn std::io::Read + Send>,
        Option<indicatif::ProgressBar>,
    ) = match &args.file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let bar = indicatif::ProgressBar::new(file.metadata()?.len());
            bar.set_style(indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
            )?);
            (Box::new(bar.wrap_read(file)), Some(bar))
        }
        None => (Box::new(std::io::stdin()), None),
    };
    // Parsing runs on its own thread; batches flow to the producer call.
    let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<RecordBatch>>(4);
    let format = args.format;
    let batch_rows = args.batch_rows.max(1);
    let reader_schema = schema.clone();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::with_capacity(1 << 20, input);
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>> =
            match format {
                InputFormat::Json => match arrow::json::ReaderBuilder::new(reader_schema)
                    .with_batch_size(batch_rows)
                    .build(reader)
                {
                    Ok(r) => Box::new(r),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                },
                InputFormat::Csv => match arrow::csv::ReaderBuilder::new(reader_schema)
                    .with_header(true)
                    .with_batch_size(batch_rows)
                    .build(reader)
                {
                    Ok(r) => Box::new(r),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                },
            };
        for b in batches {
            let stop = b.is_err();
            if tx
                .blocking_send(b.map_err(|e| anyhow::anyhow!("bad input: {e}")))
                .is_err()
                || stop
            {
                break;
            }
        }
    });
    let options = (!args.key.is_empty()).then(|| json!({ "key": args.key }));
    let started = streamhouse_log::Stopwatch::start();
    let rows = client
        .produce(&args.stream, tokio_stream_of(rx), options, |rows| {
            if let Some(b) = &bar {
                b.set_message(format!("{rows} rows"));
            }
        })
        .await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "appended {rows} rows to {} in {secs:.2} s ({:.0} rows/s)",
        args.stream,
        rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `from`/`to` as the server's JSON: a number is an offset, `earliest`
/// and `latest` are themselves, anything else is a time.
fn position(s: &str) -> Value {
    match s.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s),
    }
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.server).await?;
    let mut ticket = json!({
        "stream": args.stream,
        "from": position(&args.from),
        "follow": args.follow,
    });
    if let Some(p) = args.partition {
        ticket["partition"] = json!(p);
    }
    if let Some(g) = &args.group {
        ticket["group"] = json!(g);
    }
    let mut batches = client.consume(&ticket).await?;
    let mut printer = Printer::new(args.format, std::io::stdout().lock());
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        printer.print(std::slice::from_ref(&batch))?;
        if let Some(group) = &args.group {
            // What was printed is consumed.
            let offsets = next_offsets(&batch)?;
            client
                .action(
                    "commit_offsets",
                    json!({"group": group, "stream": args.stream, "offsets": offsets}),
                )
                .await?;
        }
    }
    Ok(())
}

/// Per partition in `batch`, the offset after its last row.
fn next_offsets(batch: &RecordBatch) -> anyhow::Result<serde_json::Map<String, Value>> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| anyhow::anyhow!("the server sent rows without {name}"))
    };
    let partitions = arrow::compute::cast(col("_partition")?, &arrow::datatypes::DataType::Int64)?;
    let offsets = arrow::compute::cast(col("_offset")?, &arrow::datatypes::DataType::Int64)?;
    let (partitions, offsets) = (
        partitions.as_primitive::<Int64Type>(),
        offsets.as_primitive::<Int64Type>(),
    );
    let mut next = serde_json::Map::new();
    for i in 0..batch.num_rows() {
        if partitions.is_null(i) || offsets.is_null(i) {
            continue;
        }
        let key = partitions.value(i).to_string();
        let end = offsets.value(i) + 1;
        let slot = next.entry(key).or_insert(json!(end));
        if slot.as_i64().unwrap_or(0) < end {
            *slot = json!(end);
        }
    }
    Ok(next)
}

/// Prints JSON objects as a table of the given keys.
fn print_objects(rows: &[Value], keys: &[&str]) {
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| keys.iter().map(|k| cell(&r[*k])).collect())
        .collect();
    let widths: Vec<usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            table
                .iter()
                .map(|r| r[i].len())
                .chain([k.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(keys.iter().map(|k| k.to_string()).collect()));
    for r in table {
        println!("{}", line(r));
    }
}

pub async fn groups(cmd: GroupsCommand) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::List { server } => {
            let c = Client::connect(&server).await?;
            let groups = c.action("list_groups", json!({})).await?;
            let rows: Vec<Value> = groups
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut g| {
                    let members = g["members"].as_array().map_or(0, Vec::len);
                    g["members"] = json!(members);
                    g
                })
                .collect();
            print_objects(&rows, &["group", "stream", "generation", "members"]);
        }
        GroupsCommand::Describe { group, server } => {
            let c = Client::connect(&server).await?;
            let d = c.action("describe_group", json!({"group": group})).await?;
            let state = match d["generation"].as_u64() {
                Some(g) => format!("generation {g}"),
                None => "no member connected".to_string(),
            };
            println!(
                "group {group} on stream {} ({state})",
                d["stream"].as_str().unwrap_or("?")
            );
            let partitions = d["partitions"].as_array().cloned().unwrap_or_default();
            print_objects(
                &partitions,
                &["partition", "committed", "end", "lag", "member"],
            );
            let lag: u64 = partitions.iter().filter_map(|p| p["lag"].as_u64()).sum();
            println!("total lag: {lag} rows");
        }
        GroupsCommand::Reset {
            group,
            to,
            stream,
            server,
        } => {
            let c = Client::connect(&server).await?;
            let stream = match stream {
                Some(s) => s,
                None => c.action("describe_group", json!({"group": group})).await?["stream"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("name the group's stream with --stream"))?,
            };
            let r = c
                .action(
                    "reset_offsets",
                    json!({"group": group, "stream": stream, "to": position(&to)}),
                )
                .await?;
            let mut offsets: Vec<(u64, Value)> = r["offsets"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(p, v)| (p.parse().unwrap_or(0), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            offsets.sort_by_key(|(p, _)| *p);
            println!("group {group} on {stream} reset to {to}");
            let rows: Vec<Value> = offsets
                .into_iter()
                .map(|(p, o)| json!({"partition": p, "committed": o}))
                .collect();
            print_objects(&rows, &["partition", "committed"]);
        }
    }
    Ok(())
}

pub async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.server).await?;
    match &args.command {
        Some(text) => {
            for statement in shell::split_statements(text) {
                show(client.run(&statement).await?, args.format)?;
            }
            Ok(())
        }
        None => shell::interactive(&client, args.format).await,
    }
}
