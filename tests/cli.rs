//! The `streamhouse` command line against a running server: streams,
//! produce (stdin and --file), consume (to the end, as a group, following),
//! groups, the SQL command, completions, and one-line errors with a
//! non-zero exit for bad arguments, unknown names and a missing server.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server};

/// Runs the command line against `server` with `stdin`.
fn run(server: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("STREAMHOUSE_SERVER", server)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(server: &str, args: &[&str], stdin: &str) -> String {
    let out = run(server, args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A command that must fail with one line on stderr containing `words`.
fn fails(server: &str, args: &[&str], stdin: &str, words: &str) {
    let out = run(server, args, stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(words), "{args:?}: {err}");
}

fn flight(server: &Server) -> String {
    server
        .line("Flight")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_command_line_drives_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let s = flight(&server);
    let s = s.as_str();

    // Streams.
    let out = ok(
        s,
        &[
            "streams",
            "create",
            "orders",
            "--partitions",
            "4",
            "--schema",
            "id bigint not null, customer text, amount double",
            "--key",
            "customer",
        ],
        "",
    );
    assert_eq!(out.trim(), "created stream orders (4 partitions)");
    let list = ok(s, &["streams", "list"], "");
    assert!(
        list.lines()
            .any(|l| l.contains("| orders ") && l.contains("| 4 ") && l.contains("customer")),
        "{list}"
    );

    // Produce JSON lines from stdin.
    let lines: String = (0..50)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"customer\":\"c{}\",\"amount\":{i}.5}}\n",
                i % 5
            )
        })
        .collect();
    let out = run(s, &["produce", "orders"], &lines);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("appended 50 rows to orders"), "{err}");
    assert!(err.contains("rows/s"), "{err}");

    // Produce CSV from a file.
    let csv = dir.path().join("more.csv");
    let mut text = String::from("id,customer,amount\n");
    for i in 50..1050 {
        text.push_str(&format!("{i},c{},{i}.25\n", i % 7));
    }
    std::fs::write(&csv, text).unwrap();
    let out = run(
        s,
        &[
            "produce",
            "orders",
            "--format",
            "csv",
            "--file",
            csv.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("appended 1000 rows to orders"));

    // Describe counts them per partition.
    let described = ok(s, &["streams", "describe", "orders"], "");
    assert!(
        described.contains("customer") && described.contains("key"),
        "{described}"
    );
    let counted: u64 = described
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("partition"))
        .filter_map(|l| l.split('|').nth(2)?.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 1050, "{described}");

    // Consume to the end: every row once, then exit 0.
    let json = ok(s, &["consume", "orders", "--format", "json"], "");
    assert_eq!(json.lines().count(), 1050);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert!(first.get("_offset").is_some() && first.get("customer").is_some());
    let partition = first["_partition"].to_string();
    let csv_out = ok(
        s,
        &[
            "consume",
            "orders",
            "--format",
            "csv",
            "--partition",
            &partition,
        ],
        "",
    );
    assert!(
        csv_out.starts_with("id,customer,amount,_partition,_offset,_timestamp\n"),
        "{csv_out}"
    );
    let in_partition = json
        .lines()
        .filter(|l| l.contains(&format!("\"_partition\":{partition},")))
        .count();
    assert_eq!(csv_out.lines().count(), in_partition + 1);

    // As a group: the first read prints everything and commits it, the
    // second prints nothing; describe shows no lag; reset replays.
    assert_eq!(
        ok(
            s,
            &[
                "consume", "orders", "--group", "billing", "--format", "json"
            ],
            ""
        )
        .lines()
        .count(),
        1050
    );
    assert_eq!(
        ok(
            s,
            &[
                "consume", "orders", "--group", "billing", "--format", "json"
            ],
            ""
        ),
        ""
    );
    let groups = ok(s, &["groups", "list"], "");
    assert!(
        groups
            .lines()
            .any(|l| l.starts_with("billing") && l.contains("orders")),
        "{groups}"
    );
    let described = ok(s, &["groups", "describe", "billing"], "");
    assert!(described.contains("total lag: 0 rows"), "{described}");
    let reset = ok(s, &["groups", "reset", "billing", "--to", "earliest"], "");
    assert!(reset.contains("reset to earliest"), "{reset}");
    let described = ok(s, &["groups", "describe", "billing"], "");
    assert!(described.contains("total lag: 1050 rows"), "{described}");

    // SQL.
    let out = ok(
        s,
        &[
            "sql",
            "-c",
            "SELECT count(*) AS n FROM orders; SELECT 'a;b' AS s",
        ],
        "",
    );
    assert!(out.contains("| 1050 |") && out.contains("| a;b |"), "{out}");
    let out = ok(
        s,
        &[
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT customer, count(*) AS n FROM orders WHERE id < 50 GROUP BY customer ORDER BY customer",
        ],
        "",
    );
    assert_eq!(out, "customer,n\nc0,10\nc1,10\nc2,10\nc3,10\nc4,10\n");

    // The shell: statements over several lines, an error that does not
    // end it, \q.
    let out = ok(
        s,
        &["sql"],
        "SELECT count(*) AS n\n FROM orders;\nSELEC 1;\nSELECT 'after' AS s;\n\\q\n",
    );
    assert!(out.contains("| 1050 |"), "{out}");
    assert!(out.contains("ERROR: syntax error"), "{out}");
    assert!(out.contains("| after |"), "{out}");

    // Following: a row produced later shows up on an open read.
    let mut follow = Command::new(BIN)
        .args([
            "consume", "orders", "--from", "latest", "--follow", "--format", "json",
        ])
        .env("STREAMHOUSE_SERVER", s)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    std::thread::sleep(Duration::from_millis(500));
    ok(
        s,
        &["produce", "orders"],
        "{\"id\":9999,\"customer\":\"late\",\"amount\":1}\n",
    );
    let started = Instant::now();
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("\"id\":9999"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(10));
    follow.kill().unwrap();
    let _ = follow.wait();

    // --key partitions a keyless stream's rows by a column: each device's
    // rows in one partition, the devices spread over several.
    ok(
        s,
        &[
            "streams",
            "create",
            "events",
            "--partitions",
            "4",
            "--schema",
            "id bigint, device text",
        ],
        "",
    );
    let rows: String = (0..40)
        .map(|i| format!("{{\"id\":{i},\"device\":\"d{}\"}}\n", i % 8))
        .collect();
    ok(s, &["produce", "events", "--key", "device"], &rows);
    let mut partition_of = std::collections::HashMap::new();
    for line in ok(s, &["consume", "events", "--format", "json"], "").lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let device = v["device"].as_str().unwrap().to_string();
        let p = v["_partition"].as_i64().unwrap();
        assert_eq!(*partition_of.entry(device).or_insert(p), p, "{line}");
    }
    assert_eq!(partition_of.len(), 8);
    let used: std::collections::HashSet<_> = partition_of.values().collect();
    assert!(used.len() > 1, "{partition_of:?}");
    fails(
        s,
        &["produce", "events", "--key", "nope"],
        "{\"id\":1}\n",
        "no column \"nope\"",
    );

    // Delete.
    ok(s, &["streams", "delete", "orders"], "");
    fails(s, &["consume", "orders"], "", "\"orders\" does not exist");

    // Bad input and arguments: one line, non-zero exit.
    ok(
        s,
        &["streams", "create", "t", "--schema", "id bigint not null"],
        "",
    );
    fails(s, &["produce", "t"], "{\"id\":\"seven\"}\n", "bad input");
    fails(s, &["sql", "-c", "SELEC 1"], "", "42601");
    fails(
        s,
        &[
            "streams",
            "create",
            "u",
            "--schema",
            "a int",
            "--partitions",
            "0",
        ],
        "",
        "--partitions must be at least 1",
    );
    fails(
        s,
        &["groups", "describe", "nobody"],
        "",
        "\"nobody\" does not exist",
    );
    let out = run(s, &["consume"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("<STREAM>"));

    // Completions for the shells people use.
    for shell in ["bash", "zsh", "fish"] {
        assert!(ok(s, &["completions", shell], "").contains("streamhouse"));
    }
    // Every command has help with an example.
    for cmd in [
        &["streams", "create"][..],
        &["produce"],
        &["consume"],
        &["groups", "reset"],
        &["sql"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        assert!(ok(s, &args, "").contains("Example: streamhouse"), "{cmd:?}");
    }
}

#[test]
fn a_missing_server_is_reported_with_how_to_start_one() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("127.0.0.1:{port}");
    fails(
        &server,
        &["streams", "list"],
        "",
        "start one with `streamhouse server`",
    );
}
