//! Starting the real `streamhouse` binary for end-to-end tests.
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

impl Server {
    /// The psql connection URL from the banner.
    pub fn pg_url(&self) -> String {
        let l = self.line("PostgreSQL");
        l.split('"').nth(1).expect("psql URL in banner").to_string()
    }
}
