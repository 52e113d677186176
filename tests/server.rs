//! The `streamhouse` binary, end to end: start-up banner, admin endpoints,
//! configuration precedence, a locked data directory, and a clean exit on
//! SIGTERM and SIGINT.

mod common;

use std::process::Command;

use common::{BIN, Server, get};

#[test]
fn starts_with_embedded_defaults_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The only test on the default Flight port.
    let mut server = Server::start_with_flight_as_given(dir.path(), &[], &[]);
    let data = dir.path().join("streamhouse-data").canonicalize().unwrap();
    assert_eq!(server.line("data directory"), data.display().to_string());
    assert_eq!(
        server.line("metadata"),
        "sqlite://streamhouse-data/metadata.db"
    );
    assert!(
        server
            .line("PostgreSQL")
            .contains("psql \"postgresql://streamhouse@127.0.0.1:")
    );
    assert!(server.line("Flight").starts_with("grpc://127.0.0.1:50051"));

    let http = server.http();
    assert_eq!(get(&http, "/live").0, 200);
    assert_eq!(get(&http, "/ready").0, 200);
    let (code, body) = get(&http, "/health");
    assert_eq!(code, 200);
    assert!(body.contains("\"ready\":true"), "{body}");
    let (code, body) = get(&http, "/v1/streams");
    assert_eq!((code, body.as_str()), (200, "{\"streams\":[]}"));
    assert_eq!(get(&http, "/v1/streams?internal=true").0, 200);
    // A client's mistake is a 4xx with a JSON error, not a 500.
    let (code, body) = get(&http, "/v1/streams?internal=maybe");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("internal=true|false"), "{body}");
    assert_eq!(get(&http, "/v1/streams?limit=3").0, 400);
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
        .args([
            "server",
            "--http-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
            "--kafka-addr",
            "127.0.0.1:0",
        ])
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
        "data_dir = \"from-file\"\nflight_addr = \"127.0.0.1:6001\"\n",
    )
    .unwrap();
    let cfg = ["--config", "sh.toml"];

    let s = Server::start_with_flight_as_given(dir.path(), &cfg, &[]);
    assert!(s.line("data directory").ends_with("/from-file"));
    assert!(s.line("Flight").starts_with("grpc://127.0.0.1:6001"));
    drop(s);

    let s = Server::start(dir.path(), &cfg, &[("STREAMHOUSE_DATA_DIR", "from-env")]);
    assert!(s.line("data directory").ends_with("/from-env"));
    drop(s);

    let mut args = cfg.to_vec();
    args.extend(["--data-dir", "from-flag", "--flight-addr", "127.0.0.1:6002"]);
    let s = Server::start_with_flight_as_given(
        dir.path(),
        &args,
        &[("STREAMHOUSE_DATA_DIR", "from-env")],
    );
    assert!(s.line("data directory").ends_with("/from-flag"));
    assert!(s.line("Flight").starts_with("grpc://127.0.0.1:6002"));
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
