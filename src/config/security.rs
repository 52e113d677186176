//! Authentication and TLS of each door, resolved from the flags over the
//! config file, with the refusals of settings that cannot work.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;

use super::args::ServerArgs;
use super::file::{AuthMode, DoorSection, SecuritySection};

/// One door's authentication and TLS, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoorSecurity {
    pub auth: AuthMode,
    /// Certificate chain and key files (PEM); none: plaintext.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Authentication and TLS, resolved for each door.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub pgwire: DoorSecurity,
    pub flight: DoorSecurity,
    pub http: DoorSecurity,
    pub kafka: DoorSecurity,
    /// The CA (PEM) that signs the certificates clients must present.
    pub client_ca: Option<PathBuf>,
    /// The PostgreSQL door refuses plaintext.
    pub require_tls: bool,
}

impl Security {
    /// Whether any door asks for passwords.
    pub fn any_password(&self) -> bool {
        [&self.pgwire, &self.flight, &self.http, &self.kafka]
            .iter()
            .any(|d| d.auth == AuthMode::Password)
    }
}

/// Authentication and TLS from flags over the file, each door's own
/// settings over the ones for every door; refuses settings that cannot
/// work, and `trust` on a door beyond loopback unless `insecure`.
pub(super) fn resolve(
    args: &ServerArgs,
    file: SecuritySection,
    addrs: [SocketAddr; 4],
) -> anyhow::Result<Security> {
    let auth = args.auth.or(file.auth).unwrap_or_default();
    let pair = |cert: Option<PathBuf>, key: Option<PathBuf>, door: &str| match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => {
            bail!("--{door}tls-cert needs --{door}tls-key (the certificate's private key)")
        }
        (None, Some(_)) => {
            bail!("--{door}tls-key needs --{door}tls-cert (the certificate it belongs to)")
        }
    };
    let tls = pair(
        args.tls_cert.clone().or(file.tls_cert),
        args.tls_key.clone().or(file.tls_key),
        "",
    )?;
    let door = |flag_auth: Option<AuthMode>,
                flag_cert: &Option<PathBuf>,
                flag_key: &Option<PathBuf>,
                section: Option<DoorSection>,
                prefix: &str|
     -> anyhow::Result<DoorSecurity> {
        let section = section.unwrap_or_default();
        let own = pair(
            flag_cert.clone().or(section.tls_cert),
            flag_key.clone().or(section.tls_key),
            prefix,
        )?;
        Ok(DoorSecurity {
            auth: flag_auth.or(section.auth).unwrap_or(auth),
            tls: own.or_else(|| tls.clone()),
        })
    };
    let pgwire = door(
        args.pg_auth,
        &args.pg_tls_cert,
        &args.pg_tls_key,
        file.pgwire,
        "pg-",
    )?;
    let flight = door(
        args.flight_auth,
        &args.flight_tls_cert,
        &args.flight_tls_key,
        file.flight,
        "flight-",
    )?;
    let http = door(
        args.http_auth,
        &args.http_tls_cert,
        &args.http_tls_key,
        file.http,
        "http-",
    )?;
    let require_tls = args.require_tls || file.require_tls.unwrap_or(false);
    let insecure = args.insecure || file.insecure.unwrap_or(false);
    if require_tls && pgwire.tls.is_none() {
        bail!("--require-tls needs a certificate: --tls-cert FILE --tls-key FILE");
    }
    let client_ca = args.tls_client_ca.clone().or(file.tls_client_ca);
    let kafka = door(
        args.kafka_auth,
        &args.kafka_tls_cert,
        &args.kafka_tls_key,
        file.kafka,
        "kafka-",
    )?;
    let doors = [
        ("PostgreSQL", &pgwire, addrs[0]),
        ("Flight", &flight, addrs[1]),
        ("HTTP admin", &http, addrs[2]),
        ("Kafka", &kafka, addrs[3]),
    ];
    if client_ca.is_some()
        && let Some((name, _, _)) = doors.iter().find(|(_, d, _)| d.tls.is_none())
    {
        bail!(
            "--tls-client-ca needs the server's own certificate on every door, and the \
             {name} door has none: --tls-cert FILE --tls-key FILE"
        );
    }
    if !insecure
        && let Some((name, _, addr)) = doors
            .iter()
            .find(|(_, d, a)| d.auth == AuthMode::Trust && !a.ip().is_loopback())
    {
        bail!(
            "the {name} door listens on {addr}, beyond loopback, with --auth trust: anyone \
             who can reach it could connect as any user. Use --auth password (with \
             --tls-cert/--tls-key), or --insecure to allow it"
        );
    }
    Ok(Security {
        pgwire,
        flight,
        http,
        kafka,
        client_ca,
        require_tls,
    })
}
