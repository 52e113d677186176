//! The PostgreSQL door with the real `psql`: scripts run against a live
//! server and their exact output is compared with what PostgreSQL prints.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Server;

/// Runs a psql script; returns (exit code, stdout, stderr).
fn psql(server: &Server, script: &str) -> (i32, String, String) {
    let mut child = Command::new("psql")
        .args(["-X", "--no-psqlrc", "-v", "ON_ERROR_STOP=0", "-f", "-"])
        .arg(server.pg_url())
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql is installed (apt: postgresql-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The SQLSTATEs of the errors psql printed (with `\set VERBOSITY verbose`).
fn sqlstates(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.split("ERROR:  ").nth(1))
        .map(|l| &l[..5])
        .collect()
}

fn trimmed(s: &str) -> String {
    s.trim()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn create_insert_select_round_trip_with_exact_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let (code, out, err) = psql(
        &server,
        "CREATE STREAM orders (order_id BIGINT NOT NULL, user_id TEXT, amount DOUBLE PRECISION, ts TIMESTAMP) \
           WITH (partitions = 4, key = 'user_id');
         INSERT INTO orders VALUES (1, 'ann', 10.5, '2026-01-01 10:00:00'),
           (2, 'bob', 20, '2026-01-01 10:00:01.25'), (3, 'ann', 7.25, NULL);
         SELECT * FROM orders ORDER BY order_id;
         SELECT user_id, count(*), sum(amount) FROM orders GROUP BY user_id ORDER BY user_id;
         SELECT count(DISTINCT _partition) AS partitions, max(_offset) AS last_offset FROM orders WHERE user_id = 'ann';
        ",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    assert_eq!(
        trimmed(&out),
        trimmed(
            "
CREATE STREAM
INSERT 0 3
 order_id | user_id | amount |           ts
----------+---------+--------+------------------------
        1 | ann     |   10.5 | 2026-01-01 10:00:00
        2 | bob     |     20 | 2026-01-01 10:00:01.25
        3 | ann     |   7.25 |
(3 rows)

 user_id | count |  sum
---------+-------+-------
 ann     |     2 | 17.75
 bob     |     1 |    20
(2 rows)

 partitions | last_offset
------------+-------------
          1 |           1
(1 row)
"
        )
    );
}

#[test]
fn errors_have_sqlstates_and_the_session_survives_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let (code, out, err) = psql(
        &server,
        "\\set VERBOSITY verbose
         SELECT * FROM nope;
         SELEC 1;
         CREATE STREAM s (a INT NOT NULL);
         CREATE STREAM s (a INT);
         INSERT INTO s VALUES (NULL);
         INSERT INTO s VALUES ('x');
         SELECT 1/0;
         SELECT count(*) AS still_here FROM s;
        ",
    );
    assert_eq!(code, 0);
    let codes = sqlstates(&err);
    assert_eq!(
        codes,
        ["42P01", "42601", "42P07", "23502", "22P02", "22012"],
        "{err}"
    );
    assert!(err.contains("relation \"nope\" does not exist"), "{err}");
    assert!(
        out.contains(" still_here \n------------\n          0\n"),
        "{out}"
    );
}

#[test]
fn many_statements_in_one_query_and_ssl_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    // One simple-query message with several statements.
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 1 AS a; SELECT 'two' AS b; SHOW STREAMS",
        ])
        .arg(server.pg_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\ntwo\n");
    // sslmode=require must fail (no TLS yet), sslmode=prefer falls back.
    let url = server.pg_url();
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT 42"])
        .arg(format!("{url}?sslmode=require"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not support SSL"));
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT 42"])
        .arg(format!("{url}?sslmode=prefer"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
}

#[test]
fn rows_written_through_psql_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    let (code, _, err) = psql(
        &server,
        "CREATE STREAM t (id BIGINT) WITH (partitions = 2);
         INSERT INTO t SELECT * FROM generate_series(1, 1000);",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.signal(libc::SIGKILL).code(), None);
    let server = Server::start(dir.path(), &[], &[]);
    let (_, out, err) = psql(&server, "SELECT count(*), sum(id) FROM t;");
    assert!(out.contains("  1000 | 500500"), "{out}{err}");
}

#[test]
fn copy_in_and_out_in_text_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let (code, out, err) = psql(
        &server,
        "CREATE STREAM c (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) WITH (partitions = 2);
COPY c FROM STDIN WITH (FORMAT csv, HEADER);
id,name,amount
1,ann,1.5
2,\"b,ob\",
\\.
COPY c (id, name) FROM STDIN;
3\ttab\\there
4\t\\N
\\.
SELECT * FROM c ORDER BY id;
COPY (SELECT id, name FROM c ORDER BY id) TO STDOUT;
COPY c FROM STDIN WITH (FORMAT csv);
5,x,not-a-number
\\.
SELECT count(*) FROM c;
",
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("invalid COPY data"), "{err}");
    assert_eq!(
        trimmed(&out),
        trimmed(
            "
CREATE STREAM
COPY 2
COPY 2
 id |     name     | amount
----+--------------+--------
  1 | ann          |    1.5
  2 | b,ob         |
  3 | tab     here |
  4 |              |
(4 rows)

1\tann
2\tb,ob
3\ttab\\there
4\t\\N
 count
-------
     4
(1 row)
"
        )
    );
}

#[test]
fn session_settings_and_identity_functions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let (code, out, err) = psql(
        &server,
        "\\pset format unaligned
\\pset tuples_only on
SELECT version() LIKE 'PostgreSQL 16.%', current_schema(), current_database(), current_setting('server_version_num');
SHOW server_version;
SHOW standard_conforming_strings;
SET DateStyle = 'ISO, DMY';
SHOW datestyle;
RESET ALL;
SHOW DateStyle;
SHOW transaction isolation level;
SHOW no_such_setting;
SET server_version = '1';
",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        trimmed(&out),
        trimmed(
            "Output format is unaligned.
t|public|streamhouse|160006
16.6 (StreamHouse 0.1.0)
on
SET
ISO, DMY
RESET
ISO, MDY
read committed"
        )
    );
    assert!(
        err.contains("unrecognized configuration parameter \"no_such_setting\""),
        "{err}"
    );
    assert!(
        err.contains("parameter \"server_version\" cannot be changed"),
        "{err}"
    );
}

#[test]
fn a_failed_transaction_block_refuses_statements_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let (code, out, err) = psql(
        &server,
        "\\set VERBOSITY verbose
BEGIN;
SELECT 1 AS inside;
SELECT 1/0;
SELECT 2 AS refused;
COMMIT;
SELECT 3 AS after;
",
    );
    assert_eq!(code, 0);
    let codes = sqlstates(&err);
    assert_eq!(codes, ["22012", "25P02"], "{err}");
    assert!(out.contains("BEGIN"), "{out}");
    assert!(out.contains(" inside"), "{out}");
    assert!(!out.contains("refused"), "{out}");
    // COMMIT of a failed block rolls back, as in PostgreSQL.
    assert!(out.contains("ROLLBACK"), "{out}");
    assert!(out.contains(" after"), "{out}");
}

#[test]
fn sigterm_with_a_connected_client_still_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    // An interactive session that stays connected (its stdin stays open).
    let mut client = Command::new("psql")
        .args(["-X", "-q"])
        .arg(server.pg_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"SELECT 1;\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert_eq!(server.signal(libc::SIGTERM).code(), Some(0));
    // Open sessions get a short drain window, then are closed.
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    drop(stdin);
    let _ = client.wait();
}

#[test]
fn psql_describes_streams_schemas_databases_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let (code, out, err) = psql(
        &server,
        "CREATE STREAM orders (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) WITH (partitions = 2);
         CREATE STREAM clicks (url TEXT);
         \\dt
         \\d orders
         \\dn
         \\du
         \\df
        ",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    assert_eq!(
        trimmed(&out),
        trimmed(
            "
CREATE STREAM
CREATE STREAM
           List of relations
 Schema |  Name  | Type  |    Owner
--------+--------+-------+-------------
 public | clicks | table | streamhouse
 public | orders | table | streamhouse
(2 rows)

                         Table \"public.orders\"
   Column   |           Type           | Collation | Nullable | Default
------------+--------------------------+-----------+----------+---------
 id         | bigint                   |           | not null |
 name       | text                     |           |          |
 amount     | double precision         |           |          |
 _partition | integer                  |           | not null |
 _offset    | bigint                   |           | not null |
 _timestamp | timestamp with time zone |           | not null |

      List of schemas
    Name     |    Owner
-------------+-------------
 public      | streamhouse
 streamhouse | streamhouse
(2 rows)

            List of roles
  Role name  | Attributes | Member of
-------------+------------+-----------
 streamhouse | Superuser  |

                       List of functions
 Schema | Name | Result data type | Argument data types | Type
--------+------+------------------+---------------------+------
(0 rows)
"
        )
    );
    // \l lists the database the banner names.
    let (code, out, err) = psql(&server, "\\l");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("streamhouse | streamhouse")),
        "{out}"
    );
    // A dropped stream leaves the catalog.
    let (code, out, err) = psql(&server, "DROP STREAM clicks;\n\\dt");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("orders") && !out.contains("clicks"), "{out}");
}
