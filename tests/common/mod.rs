//! Starting the real `streamhouse` binary for end-to-end tests.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

/// A running server and what its banner said.
pub struct Server {
    pub child: Child,
    pub banner: Vec<String>,
}

impl Server {
    /// A server on free ports (HTTP, PostgreSQL and Flight).
    pub fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut all = vec!["--flight-addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::start_with_flight_as_given(dir, &all, envs)
    }

    /// A server on free HTTP and PostgreSQL ports, its Flight address from
    /// `args`, the environment, a config file or the default.
    pub fn start_with_flight_as_given(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::spawn(dir, args, envs, Stdio::piped())
    }

    /// A server on free ports whose log goes to `log` (appended), for
    /// long runs whose log would fill a pipe nobody reads.
    pub fn start_logged(dir: &Path, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Server {
        let mut all = vec!["--flight-addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Server::spawn(dir, &all, envs, Stdio::from(file))
    }

    fn spawn(dir: &Path, args: &[&str], envs: &[(&str, &str)], stderr: Stdio) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .arg("server")
            .args(["--http-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0"])
            .args(args)
            // A free Kafka port, unless the test names one.
            .args(if args.contains(&"--kafka-addr") {
                &[][..]
            } else {
                &["--kafka-addr", "127.0.0.1:0"][..]
            })
            .stdout(Stdio::piped())
            .stderr(stderr);
        // Only what the test sets: no STREAMHOUSE_* from the caller's shell.
        for (k, _) in std::env::vars() {
            if k.starts_with("STREAMHOUSE_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            let done = line.starts_with("Press Ctrl-C");
            banner.push(line);
            if done {
                break;
            }
        }
        if !banner.iter().any(|l| l.contains(" ready")) {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("no ready banner: {banner:?}\nstderr: {err}");
        }
        Server { child, banner }
    }

    pub fn line(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(label)
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {label:?} in banner {:?}", self.banner))
    }

    pub fn http(&self) -> String {
        let l = self.line("HTTP admin");
        l.split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("http://")
            .to_string()
    }

    pub fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A plain HTTP/1.0 POST of a JSON body (may be empty): (status, body).
pub fn post(addr: &str, path: &str, json: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

impl Server {
    /// The psql connection URL from the banner.
    pub fn pg_url(&self) -> String {
        let l = self.line("PostgreSQL");
        l.split('"').nth(1).expect("psql URL in banner").to_string()
    }
}

/// A PostgreSQL-protocol client of `server`.
pub async fn connect(server: &Server) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server.pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Rows as sorted `|`-joined text lines (simple protocol: every value as
/// text, NULL as `NULL`).
pub async fn try_lines(
    c: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut out: Vec<String> = c
        .simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

/// [`try_lines`], panicking with the statement on error.
pub async fn lines(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    try_lines(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error()))
}

/// Checks stream `stream` (with an `id` column) after a run that recorded
/// the ids of acknowledged rows: each is there exactly once, no row is
/// there twice, and every partition's offsets are dense from 0.
pub async fn assert_acknowledged_exactly_once(
    c: &tokio_postgres::Client,
    stream: &str,
    acked: impl IntoIterator<Item = i64>,
) {
    use std::collections::HashSet;
    let ids: Vec<i64> = c
        .query(&format!("SELECT id FROM {stream}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let present: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(present.len(), ids.len(), "a row is present twice");
    let lost: Vec<i64> = acked
        .into_iter()
        .filter(|i| !present.contains(i))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    let partitions = format!(
        "SELECT _partition, count(*), min(_offset), max(_offset) FROM {stream} GROUP BY _partition"
    );
    for row in lines(c, &partitions).await {
        let f: Vec<i64> = row.split('|').map(|x| x.parse().unwrap()).collect();
        assert_eq!(
            (f[2], f[3] + 1),
            (0, f[1]),
            "partition {}: offsets not dense",
            f[0]
        );
    }
}

/// Waits up to `within` until `SELECT * FROM view` returns the rows of
/// `reference`; panics with both when it does not.
pub async fn converges(c: &tokio_postgres::Client, view: &str, reference: &str, within: Duration) {
    let want = lines(c, reference).await;
    // An empty reference would let an empty (or stuck) view pass.
    assert!(
        !want.is_empty(),
        "the reference query returned no rows, so comparing {view} with it proves nothing: {reference}"
    );
    let deadline = Instant::now() + within;
    loop {
        let got = lines(c, &format!("SELECT * FROM {view}")).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{view} did not converge:\n got {got:?}\nwant {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
