//! A client session: its settings (what `SET` changes and `SHOW` reports),
//! its transaction block, and whether it is working or idle (for
//! `idle_in_transaction_session_timeout`).
//!
//! Defaults are what drivers expect from a PostgreSQL 16 server (pgjdbc
//! disconnects if `client_encoding`, `DateStyle`, `integer_datetimes` or
//! `standard_conforming_strings` differ). Names are case-insensitive;
//! `SHOW` answers with PostgreSQL's spelling. Unknown names may be set (drivers
//! set many harmless ones); showing one that was never set is an error
//! (42704), as in PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use streamhouse_log::monotonic;
use tokio::time::Instant;

use crate::limits::parse_duration;
use crate::transaction::{Transaction, parse_size};

/// `server_version`: PostgreSQL's major line first (drivers parse it), then ours.
pub const SERVER_VERSION: &str = concat!("16.6 (StreamHouse ", env!("CARGO_PKG_VERSION"), ")");
/// `server_version_num`, agreeing with [`SERVER_VERSION`].
pub const SERVER_VERSION_NUM: &str = "160006";
/// What `version()` returns.
pub const VERSION: &str = concat!(
    "PostgreSQL 16.6 (StreamHouse ",
    env!("CARGO_PKG_VERSION"),
    ") on x86_64-pc-linux-gnu, compiled by rustc, 64-bit"
);

/// The one role: every session's user and the owner of every object.
pub const USER: &str = "streamhouse";
/// The one database (the DataFusion catalog).
pub const DATABASE: &str = "streamhouse";

/// (PostgreSQL spelling, default) of every built-in setting.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("DateStyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "10min"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("is_superuser", "on"),
    ("jit", "off"),
    ("lc_collate", "C.UTF-8"),
    ("lc_ctype", "C.UTF-8"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", SERVER_VERSION_NUM),
    ("session_authorization", USER),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("TimeZone", "UTC"),
    ("transaction_buffer_size", "256MB"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// Settings that cannot be changed by `SET`.
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
    "session_authorization",
    "lc_collate",
    "lc_ctype",
];

/// One session's settings.
#[derive(Debug)]
pub struct Session {
    /// Lower-case name → value, for settings changed from their default.
    changed: Mutex<BTreeMap<String, String>>,
    /// The door the session came through (labels its metrics).
    door: &'static str,
    /// The user the client named (logged in as, with passwords required).
    user: Option<String>,
    /// The role whose privileges every call is checked against; `None`:
    /// a trusted session (`--auth trust`, or the system's own), which may
    /// do anything.
    role: Option<String>,
    /// The open transaction block, if any.
    transaction: Transaction,
    /// Statements running now, and when the last one ended.
    activity: Mutex<(usize, Instant)>,
}

impl Default for Session {
    fn default() -> Self {
        Session::for_door("embedded")
    }
}

impl Session {
    /// A session of a client of `door` (`pgwire`, `flight`).
    pub fn for_door(door: &'static str) -> Session {
        Session::for_user(door, None)
    }

    /// A trusted session of `user`, a client of `door`: no privilege is
    /// checked (`--auth trust`).
    pub fn for_user(door: &'static str, user: Option<String>) -> Session {
        Session::new(door, user, None)
    }

    /// A session of `role`, which logged in through `door`: every call is
    /// checked against the role's privileges.
    pub fn for_role(door: &'static str, role: String) -> Session {
        Session::new(door, Some(role.clone()), Some(role))
    }

    fn new(door: &'static str, user: Option<String>, role: Option<String>) -> Session {
        Session {
            changed: Mutex::new(BTreeMap::new()),
            door,
            user,
            role,
            transaction: Transaction::default(),
            activity: Mutex::new((0, monotonic())),
        }
    }

    /// The role whose privileges apply (`None`: trusted).
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// The user the client named, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The door the session came through.
    pub fn door(&self) -> &'static str {
        self.door
    }

    /// The session's transaction block.
    pub fn transaction(&self) -> &Transaction {
        &self.transaction
    }

    /// How long a statement may run (`statement_timeout`); `None`: no
    /// limit.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.get("statement_timeout")
            .and_then(|(_, v)| parse_duration(&v).ok())
            .flatten()
    }

    /// How long the session may sit idle inside a transaction block
    /// (`idle_in_transaction_session_timeout`); `None`: no limit.
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        self.get("idle_in_transaction_session_timeout")
            .and_then(|(_, v)| parse_duration(&v).ok())
            .flatten()
    }

    /// A statement (or protocol message) of the session starts; pair with
    /// [`Session::work_ended`].
    pub fn work_started(&self) {
        self.activity.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
    }

    /// A statement of the session ended.
    pub fn work_ended(&self) {
        let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        a.0 = a.0.saturating_sub(1);
        a.1 = monotonic();
    }

    /// How long the session has been idle inside a transaction block (open
    /// or failed) with nothing running; `None` when it is not.
    pub fn idle_in_transaction(&self) -> Option<Duration> {
        if self.transaction.state() == crate::transaction::BlockState::Idle {
            return None;
        }
        let (running, since) = *self.activity.lock().unwrap_or_else(|p| p.into_inner());
        (running == 0).then(|| monotonic().duration_since(since))
    }

    /// The memory a query's operators may reserve, when the session set
    /// `query_memory_limit` (otherwise the database's default applies).
    pub fn query_memory_limit(&self) -> Option<usize> {
        self.get("query_memory_limit")
            .and_then(|(_, v)| parse_size(&v).ok())
    }

    /// The most bytes of writes a transaction block may hold.
    pub fn transaction_buffer_size(&self) -> usize {
        self.get("transaction_buffer_size")
            .and_then(|(_, v)| parse_size(&v).ok())
            .unwrap_or(256 << 20)
    }
}

/// The default of a built-in setting, by case-insensitive name.
pub fn default_of(name: &str) -> Option<(&'static str, &'static str)> {
    DEFAULTS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .copied()
}

impl Session {
    /// The current value, and the name as PostgreSQL spells it.
    pub fn get(&self, name: &str) -> Option<(String, String)> {
        let key = name.to_ascii_lowercase();
        if key == "session_authorization"
            && let Some(role) = &self.role
        {
            return Some(("session_authorization".to_string(), role.clone()));
        }
        let changed = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        let spelled = default_of(&key)
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| key.clone());
        match changed.get(&key) {
            Some(v) => Some((spelled, v.clone())),
            None => default_of(&key).map(|(n, v)| (n.to_string(), v.to_string())),
        }
    }

    /// Changes a setting; refuses read-only ones.
    pub fn set(&self, name: &str, value: String) -> Result<(), String> {
        let key = name.to_ascii_lowercase();
        if READ_ONLY.contains(&key.as_str()) {
            return Err(format!("parameter \"{key}\" cannot be changed"));
        }
        let value = match key.as_str() {
            // PostgreSQL reports these canonically whatever the spelling.
            "client_encoding"
                if value.eq_ignore_ascii_case("utf8") || value.eq_ignore_ascii_case("utf-8") =>
            {
                "UTF8".to_string()
            }
            "client_encoding" => {
                return Err(format!(
                    "client encoding \"{value}\" is not supported: use UTF8"
                ));
            }
            "transaction_buffer_size" | "query_memory_limit" => {
                parse_size(&value)?;
                value
            }
            "statement_timeout" | "idle_in_transaction_session_timeout" => {
                parse_duration(&value)?;
                value
            }
            _ => value,
        };
        self.changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
        Ok(())
    }

    /// Back to the default (`RESET name`); `None` resets everything.
    pub fn reset(&self, name: Option<&str>) {
        let mut changed = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(n) => {
                changed.remove(&n.to_ascii_lowercase());
            }
            None => changed.clear(),
        }
    }

    /// Every setting (built-in and changed), sorted by name.
    pub fn all(&self) -> Vec<(String, String)> {
        let mut out: BTreeMap<String, (String, String)> = DEFAULTS
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), (n.to_string(), v.to_string())))
            .collect();
        for (k, v) in self
            .changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let spelled = out
                .get(k)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| k.clone());
            out.insert(k.clone(), (spelled, v.clone()));
        }
        out.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset() {
        let s = Session::default();
        assert_eq!(
            s.get("datestyle").unwrap(),
            ("DateStyle".into(), "ISO, MDY".into())
        );
        s.set("DateStyle", "ISO, DMY".into()).unwrap();
        assert_eq!(s.get("DATESTYLE").unwrap().1, "ISO, DMY");
        s.set("my.custom", "1".into()).unwrap();
        assert_eq!(s.get("my.custom").unwrap().1, "1");
        assert!(s.get("never_set").is_none());
        assert!(s.set("server_version", "9".into()).is_err());
        assert!(s.set("client_encoding", "LATIN1".into()).is_err());
        s.set("client_encoding", "utf-8".into()).unwrap();
        assert_eq!(s.get("client_encoding").unwrap().1, "UTF8");
        s.reset(Some("datestyle"));
        assert_eq!(s.get("DateStyle").unwrap().1, "ISO, MDY");
        s.reset(None);
        assert!(s.get("my.custom").is_none());
        assert!(s.all().iter().any(|(n, _)| n == "TimeZone"));
    }
}
