//! The `streamhouse` binary, end to end: start-up banner, admin endpoints,
//! configuration precedence, a locked data directory, and a clean exit on
//! SIGTERM and SIGINT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_streamhouse");

/// A running server and what its banner said.
struct Server {
    child: Child,
    banner: Vec<String>,
}

impl Server {
    fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .arg("server")
            .args(["--http-addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
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
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("no ready banner: {banner:?}\nstderr: {err}");
        }
        Server { child, banner }
    }

    fn line(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(label)
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {label:?} in banner {:?}", self.banner))
    }

    fn http(&self) -> String {
        let l = self.line("HTTP admin");
        l.split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("http://")
            .to_string()
    }

    fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
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
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn starts_with_embedded_defaults_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[]);
    let data = dir.path().join("streamhouse-data").canonicalize().unwrap();
    assert_eq!(server.line("data directory"), data.display().to_string());
    assert_eq!(
        server.line("metadata"),
        "sqlite://streamhouse-data/metadata.db"
    );
    assert!(server.line("PostgreSQL").starts_with("127.0.0.1:5433"));
    assert!(server.line("Flight").starts_with("grpc://127.0.0.1:50051"));

    let http = server.http();
    assert_eq!(get(&http, "/live").0, 200);
    assert_eq!(get(&http, "/ready").0, 200);
    let (code, body) = get(&http, "/health");
    assert_eq!(code, 200);
    assert!(body.contains("\"ready\":true"), "{body}");
    let (code, body) = get(&http, "/v1/streams");
    assert_eq!((code, body.as_str()), (200, "{\"streams\":[]}"));
    assert_eq!(get(&http, "/nope").0, 404);

    assert!(data.join("metadata.db").exists());
    assert!(data.join("objects").is_dir());

    let status = server.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
}

#[test]
fn sigint_also_exits_zero_and_the_data_dir_is_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--data-dir", "d"], &[]);
    assert_eq!(server.signal(libc::SIGINT).code(), Some(0));
    let mut again = Server::start(dir.path(), &["--data-dir", "d"], &[]);
    assert_eq!(again.signal(libc::SIGTERM).code(), Some(0));
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start(dir.path(), &[], &[]);
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["server", "--http-addr", "127.0.0.1:0"])
        .env_remove("STREAMHOUSE_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}

#[test]
fn flags_override_environment_override_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sh.toml"),
        "data_dir = \"from-file\"\npg_addr = \"127.0.0.1:6001\"\n",
    )
    .unwrap();
    let cfg = ["--config", "sh.toml"];

    let s = Server::start(dir.path(), &cfg, &[]);
    assert!(s.line("data directory").ends_with("/from-file"));
    assert!(s.line("PostgreSQL").starts_with("127.0.0.1:6001"));
    drop(s);

    let s = Server::start(dir.path(), &cfg, &[("STREAMHOUSE_DATA_DIR", "from-env")]);
    assert!(s.line("data directory").ends_with("/from-env"));
    drop(s);

    let mut args = cfg.to_vec();
    args.extend(["--data-dir", "from-flag", "--pg-addr", "127.0.0.1:6002"]);
    let s = Server::start(dir.path(), &args, &[("STREAMHOUSE_DATA_DIR", "from-env")]);
    assert!(s.line("data directory").ends_with("/from-flag"));
    assert!(s.line("PostgreSQL").starts_with("127.0.0.1:6002"));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .arg("server")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--http-addr", "not-an-address"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--http-addr"), "{err}");
    let (code, err) = run(&["--http-addr", "127.0.0.1:0", "--object-store", "ftp://x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid object store URL"), "{err}");
    let (code, err) = run(&["--config", "missing.toml"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read config file missing.toml"),
        "{err}"
    );
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN)
        .args(["server", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--pg-addr",
        "--flight-addr",
        "--http-addr",
        "--object-store",
        "--metadata",
        "--config",
        "--log-level",
        "--log-format",
        "STREAMHOUSE_DATA_DIR",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("server"));
}
