//! Resolving flags over the config file over defaults, and the refusals.

use super::*;

#[test]
fn flags_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sh.toml");
    std::fs::write(
        &file,
        "data_dir = \"/from/file\"\nhttp_addr = \"127.0.0.1:9999\"\n[log]\nflush_interval = \"20ms\"\ncompact_after = \"2s\"\n\
         [views]\ncheckpoint_interval = \"750ms\"\nidle_timeout = \"3s\"\n",
    )
    .unwrap();
    let args = ServerArgs {
        config: Some(file.clone()),
        http_addr: Some("127.0.0.1:1234".parse().unwrap()),
        ..Default::default()
    };
    let c = ServerConfig::resolve(&args).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/from/file"));
    assert_eq!(c.http_addr.port(), 1234);
    assert_eq!(c.pg_addr.port(), 5433);
    assert_eq!(c.flight_addr.port(), 50051);
    assert_eq!(c.log.flush_interval, Some(Duration::from_millis(20)));
    assert_eq!(c.log.compact_after, Some(Duration::from_secs(2)));
    assert_eq!(c.checkpoint_interval, Duration::from_millis(750));
    assert_eq!(c.idle_timeout, Duration::from_secs(3));
    assert_eq!(c.object_store, "/from/file/objects");
    assert_eq!(
        c.metadata,
        MetadataUrl::Sqlite("/from/file/metadata.db".into())
    );
}

#[test]
fn checkpoint_interval_defaults_to_two_seconds() {
    let c = ServerConfig::resolve(&ServerArgs::default()).unwrap();
    assert_eq!(c.checkpoint_interval, Duration::from_secs(2));
}

#[test]
fn metadata_backups_default_hourly_keeping_24_and_0s_turns_them_off() {
    let c = ServerConfig::resolve(&ServerArgs::default()).unwrap();
    assert_eq!(c.metadata_backup_interval, Some(Duration::from_secs(3600)));
    assert_eq!(c.metadata_backups_kept, 24);
    let off = ServerArgs {
        metadata_backup_interval: Some(Duration::ZERO),
        metadata_backups_kept: Some(3),
        ..ServerArgs::default()
    };
    let c = ServerConfig::resolve(&off).unwrap();
    assert_eq!(
        (c.metadata_backup_interval, c.metadata_backups_kept),
        (None, 3)
    );
    let none_kept = ServerArgs {
        metadata_backups_kept: Some(0),
        ..ServerArgs::default()
    };
    let err = ServerConfig::resolve(&none_kept).unwrap_err().to_string();
    assert!(err.contains("metadata_backups_kept"), "{err}");
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "nonsense = 1\n").unwrap();
    let args = ServerArgs {
        config: Some(file),
        ..Default::default()
    };
    let e = format!("{:#}", ServerConfig::resolve(&args).unwrap_err());
    assert!(e.contains("unknown field `nonsense`"), "{e}");
    let e = parse_metadata_url("mysql://x").unwrap_err().to_string();
    assert!(e.contains("unsupported metadata URL"), "{e}");
}

#[test]
fn trust_beyond_loopback_is_refused_unless_insecure() {
    let open = ServerArgs {
        pg_addr: Some("0.0.0.0:0".parse().unwrap()),
        ..Default::default()
    };
    let e = format!("{:#}", ServerConfig::resolve(&open).unwrap_err());
    assert!(
        e.contains("beyond loopback") && e.contains("--insecure"),
        "{e}"
    );
    let insecure = ServerArgs {
        insecure: true,
        ..open.clone()
    };
    assert_eq!(
        ServerConfig::resolve(&insecure)
            .unwrap()
            .security
            .pgwire
            .auth,
        AuthMode::Trust
    );
    let password = ServerArgs {
        auth: Some(AuthMode::Password),
        ..open
    };
    assert_eq!(
        ServerConfig::resolve(&password)
            .unwrap()
            .security
            .pgwire
            .auth,
        AuthMode::Password
    );
    let half = ServerArgs {
        tls_cert: Some("c.pem".into()),
        ..Default::default()
    };
    let e = format!("{:#}", ServerConfig::resolve(&half).unwrap_err());
    assert!(e.contains("--tls-key"), "{e}");
    let require = ServerArgs {
        require_tls: true,
        ..Default::default()
    };
    let e = format!("{:#}", ServerConfig::resolve(&require).unwrap_err());
    assert!(e.contains("needs a certificate"), "{e}");
    let client_ca = ServerArgs {
        tls_client_ca: Some("ca.pem".into()),
        ..Default::default()
    };
    let e = format!("{:#}", ServerConfig::resolve(&client_ca).unwrap_err());
    assert!(e.contains("--tls-client-ca needs"), "{e}");
}

#[test]
fn each_door_may_override_the_settings_for_every_door() {
    // Passwords and a certificate on the public PostgreSQL door only;
    // the other doors stay on loopback, trusted, in plaintext.
    let args = ServerArgs {
        pg_addr: Some("0.0.0.0:0".parse().unwrap()),
        pg_auth: Some(AuthMode::Password),
        pg_tls_cert: Some("pg.pem".into()),
        pg_tls_key: Some("pg.key".into()),
        require_tls: true,
        ..Default::default()
    };
    let s = ServerConfig::resolve(&args).unwrap().security;
    assert_eq!(s.pgwire.auth, AuthMode::Password);
    assert_eq!(s.pgwire.tls, Some(("pg.pem".into(), "pg.key".into())));
    assert_eq!(s.flight, DoorSecurity::default());
    assert_eq!(s.http, DoorSecurity::default());
    assert!(s.any_password());
    // A trusted door beyond loopback is refused by name.
    let open_flight = ServerArgs {
        flight_addr: Some("0.0.0.0:0".parse().unwrap()),
        auth: Some(AuthMode::Password),
        flight_auth: Some(AuthMode::Trust),
        ..Default::default()
    };
    let e = format!("{:#}", ServerConfig::resolve(&open_flight).unwrap_err());
    assert!(e.contains("the Flight door"), "{e}");
    let half = ServerArgs {
        http_tls_cert: Some("h.pem".into()),
        ..Default::default()
    };
    let e = format!("{:#}", ServerConfig::resolve(&half).unwrap_err());
    assert!(e.contains("--http-tls-key"), "{e}");
    // The config file's door tables, under the flags.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doors.toml");
    std::fs::write(
        &file,
        "[security]\nauth = \"password\"\ntls_cert = \"all.pem\"\ntls_key = \"all.key\"\n\
         [security.http]\nauth = \"trust\"\ntls_cert = \"h.pem\"\ntls_key = \"h.key\"\n",
    )
    .unwrap();
    let args = ServerArgs {
        config: Some(file),
        http_auth: Some(AuthMode::Password),
        ..Default::default()
    };
    let s = ServerConfig::resolve(&args).unwrap().security;
    assert_eq!(s.http.auth, AuthMode::Password);
    assert_eq!(s.http.tls, Some(("h.pem".into(), "h.key".into())));
    assert_eq!(s.flight.tls, Some(("all.pem".into(), "all.key".into())));
    assert_eq!(s.flight.auth, AuthMode::Password);
    assert_eq!(s.kafka.tls, Some(("all.pem".into(), "all.key".into())));
    // The Kafka door's own flags, and its table in the file.
    let args = ServerArgs {
        kafka_auth: Some(AuthMode::Password),
        kafka_tls_cert: Some("k.pem".into()),
        kafka_tls_key: Some("k.key".into()),
        ..Default::default()
    };
    let s = ServerConfig::resolve(&args).unwrap().security;
    assert_eq!(s.kafka.auth, AuthMode::Password);
    assert_eq!(s.kafka.tls, Some(("k.pem".into(), "k.key".into())));
    assert_eq!(s.pgwire, DoorSecurity::default());
    std::fs::write(
        dir.path().join("kafka.toml"),
        "[security.kafka]\nauth = \"password\"\n",
    )
    .unwrap();
    let args = ServerArgs {
        config: Some(dir.path().join("kafka.toml")),
        ..Default::default()
    };
    let s = ServerConfig::resolve(&args).unwrap().security;
    assert_eq!(s.kafka.auth, AuthMode::Password);
    assert_eq!(s.http.auth, AuthMode::Trust);
}
