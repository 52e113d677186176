//! Privileges: what a role may do to streams, views, schemas and consumer
//! groups, and the one check every door's calls pass through
//! ([`Privileges::check`], called by `Database::authorize`).
//!
//! A role holds a privilege on an object when it (or a role it is a
//! member of, or `PUBLIC`) was granted it, or owns the object (the role
//! that created it holds every privilege on it). A superuser holds every
//! privilege. What is held is read from the metadata store into a
//! snapshot, re-read whenever the log's roles epoch moves — at once for a
//! change made through this agent, and when another agent's change is
//! announced — so a check costs a few hash lookups. A denial re-reads the
//! store before it is final, so a privilege granted anywhere counts on the
//! very next call.

pub mod grant;
pub mod needs;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use streamhouse_log::{GrantRecord, Log};

use crate::error::Result;

/// A privilege on an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// Read a stream or view (queries, subscriptions, consumers).
    Select,
    /// Append to a stream (INSERT, COPY, producers).
    Insert,
    /// Change a table's rows (UPDATE).
    Update,
    /// Remove a table's rows (DELETE).
    Delete,
    /// Create streams and views in a schema.
    Create,
    /// Drop a stream or view.
    Drop,
    /// Consume in a consumer group: join it, commit and reset its offsets.
    Consume,
}

impl Privilege {
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Create => "CREATE",
            Privilege::Drop => "DROP",
            Privilege::Consume => "CONSUME",
        }
    }

    pub fn parse(word: &str) -> Option<Privilege> {
        Some(match word.to_ascii_uppercase().as_str() {
            "SELECT" => Privilege::Select,
            "INSERT" => Privilege::Insert,
            "UPDATE" => Privilege::Update,
            "DELETE" => Privilege::Delete,
            "CREATE" => Privilege::Create,
            "DROP" => Privilege::Drop,
            "CONSUME" => Privilege::Consume,
            _ => return None,
        })
    }

    fn bit(self) -> u8 {
        match self {
            Privilege::Select => 1,
            Privilege::Insert => 2,
            Privilege::Create => 4,
            Privilege::Drop => 8,
            Privilege::Consume => 16,
            Privilege::Update => 32,
            Privilege::Delete => 64,
        }
    }

    /// The privileges an object of `kind` can have, in PostgreSQL's `ALL`
    /// order.
    pub fn of_kind(kind: ObjectKind) -> &'static [Privilege] {
        match kind {
            ObjectKind::Table => &[
                Privilege::Select,
                Privilege::Insert,
                Privilege::Update,
                Privilege::Delete,
                Privilege::Drop,
            ],
            ObjectKind::Schema => &[Privilege::Create],
            ObjectKind::Group => &[Privilege::Consume],
        }
    }
}

/// The stored name of ownership, which holds every privilege.
pub const OWNER: &str = "OWNER";
/// Every privilege bit, which ownership stands for.
const ALL_BITS: u8 = 0xff;
/// The grantee that stands for every role.
pub const PUBLIC: &str = "public";
/// The one schema user relations live in.
pub const SCHEMA: &str = "public";
/// The role whose members may read the HTTP admin API (metrics, streams,
/// agents), as PostgreSQL's role of that name may read its statistics.
pub const MONITOR: &str = "pg_monitor";
/// The group name that stands for every consumer group.
pub const ALL_GROUPS: &str = "*";

/// The kinds of objects privileges are held on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A stream or a view.
    Table,
    Schema,
    /// A consumer group.
    Group,
}

impl ObjectKind {
    pub fn stored(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::Schema => "schema",
            ObjectKind::Group => "group",
        }
    }

    fn of_stored(s: &str) -> Option<ObjectKind> {
        Some(match s {
            "table" => ObjectKind::Table,
            "schema" => ObjectKind::Schema,
            "group" => ObjectKind::Group,
            _ => return None,
        })
    }
}

/// An object privileges are held on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Object {
    pub kind: ObjectKind,
    /// A relation's name (schema-qualified outside `public`), a schema's,
    /// or a group's ([`ALL_GROUPS`]: every group).
    pub name: String,
}

impl Object {
    pub fn table(name: impl Into<String>) -> Object {
        Object {
            kind: ObjectKind::Table,
            name: name.into(),
        }
    }

    pub fn schema(name: impl Into<String>) -> Object {
        Object {
            kind: ObjectKind::Schema,
            name: name.into(),
        }
    }

    pub fn group(name: impl Into<String>) -> Object {
        Object {
            kind: ObjectKind::Group,
            name: name.into(),
        }
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        match self.kind {
            ObjectKind::Table => format!("relation {}", self.name),
            ObjectKind::Schema => format!("schema {}", self.name),
            ObjectKind::Group if self.name == ALL_GROUPS => "every consumer group".into(),
            ObjectKind::Group => format!("consumer group {}", self.name),
        }
    }
}

/// What a call needs of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A privilege on an object.
    Privilege(Privilege, Object),
    /// Ownership of an object (granting and revoking on it).
    Owner(Object),
    /// The superuser attribute; says what for.
    Superuser(&'static str),
    /// Membership of a role (directly or not), such as [`MONITOR`].
    Role(&'static str),
}

impl Need {
    /// The denial's message.
    pub fn denied(&self) -> String {
        match self {
            Need::Privilege(p, o) => format!(
                "permission denied for {}: {} needs the {} privilege",
                o.describe(),
                what_needs(*p),
                p.name()
            ),
            Need::Owner(o) => format!("must be owner of {}", o.describe()),
            Need::Superuser(what) => format!("permission denied: {what} needs a superuser"),
            Need::Role(role) => {
                format!("permission denied: this needs a superuser or a member of role \"{role}\"")
            }
        }
    }
}

fn what_needs(p: Privilege) -> &'static str {
    match p {
        Privilege::Select => "reading",
        Privilege::Insert => "writing",
        Privilege::Update => "updating",
        Privilege::Delete => "deleting from",
        Privilege::Create => "creating",
        Privilege::Drop => "dropping",
        Privilege::Consume => "consuming",
    }
}

/// What is held, as read from the store at one roles epoch.
#[derive(Debug, Default)]
pub struct Snapshot {
    epoch: u64,
    superusers: HashSet<String>,
    roles: HashSet<String>,
    /// Member → the roles it is a member of.
    member_of: HashMap<String, Vec<String>>,
    /// Grantee → (object kind, object name) → privilege bits.
    held: HashMap<String, HashMap<(ObjectKind, String), u8>>,
    /// (object kind, object name) → owner.
    owners: HashMap<(ObjectKind, String), String>,
    grants: Vec<GrantRecord>,
}

impl Snapshot {
    fn build(
        epoch: u64,
        roles: Vec<streamhouse_log::RoleRecord>,
        members: Vec<(String, String)>,
        grants: Vec<GrantRecord>,
    ) -> Snapshot {
        let mut s = Snapshot {
            epoch,
            ..Snapshot::default()
        };
        for r in roles {
            if r.superuser {
                s.superusers.insert(r.name.clone());
            }
            s.roles.insert(r.name);
        }
        for (role, member) in members {
            s.member_of.entry(member).or_default().push(role);
        }
        for g in &grants {
            let Some(kind) = ObjectKind::of_stored(&g.object_kind) else {
                continue;
            };
            let bits = if g.privilege == OWNER {
                s.owners
                    .insert((kind, g.object_name.clone()), g.grantee.clone());
                ALL_BITS
            } else {
                match Privilege::parse(&g.privilege) {
                    Some(p) => p.bit(),
                    None => continue,
                }
            };
            *s.held
                .entry(g.grantee.clone())
                .or_default()
                .entry((kind, g.object_name.clone()))
                .or_default() |= bits;
        }
        s.grants = grants;
        s
    }

    /// Whether `role` is a superuser.
    pub fn is_superuser(&self, role: &str) -> bool {
        self.superusers.contains(role)
    }

    /// Whether a role of that name exists.
    pub fn role_exists(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// `role` and every role it is a member of, directly or not.
    pub fn roles_of(&self, role: &str) -> Vec<String> {
        let mut out = vec![role.to_string()];
        let mut i = 0;
        while i < out.len() {
            if let Some(parents) = self.member_of.get(&out[i]) {
                for p in parents {
                    if !out.contains(p) {
                        out.push(p.clone());
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// Whether `role` may do what `need` says.
    pub fn allows(&self, role: &str, need: &Need) -> bool {
        if self.is_superuser(role) {
            return true;
        }
        match need {
            Need::Superuser(_) => false,
            Need::Role(r) => self.roles_of(role).iter().any(|m| m == r),
            Need::Owner(o) => match self.owners.get(&(o.kind, o.name.clone())) {
                Some(owner) => self.roles_of(role).contains(owner),
                None => false,
            },
            Need::Privilege(p, o) => {
                let key = (o.kind, o.name.clone());
                let every_group = (ObjectKind::Group, ALL_GROUPS.to_string());
                let holds = |grantee: &str| {
                    self.held.get(grantee).is_some_and(|objects| {
                        objects.get(&key).is_some_and(|b| b & p.bit() != 0)
                            || (o.kind == ObjectKind::Group
                                && objects.get(&every_group).is_some_and(|b| b & p.bit() != 0))
                    })
                };
                holds(PUBLIC) || self.roles_of(role).iter().any(|r| holds(r))
            }
        }
    }

    /// Every privilege held, as stored.
    pub fn grants(&self) -> &[GrantRecord] {
        &self.grants
    }

    /// The owner of an object, if it has one.
    pub fn owner(&self, o: &Object) -> Option<&str> {
        self.owners
            .get(&(o.kind, o.name.clone()))
            .map(String::as_str)
    }
}

/// The privileges cache and check.
pub struct Privileges {
    log: Arc<Log>,
    current: RwLock<Arc<Snapshot>>,
}

impl std::fmt::Debug for Privileges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Privileges")
    }
}

impl Privileges {
    pub fn new(log: Arc<Log>) -> Privileges {
        Privileges {
            log,
            // An epoch no log has: the first check reads the store.
            current: RwLock::new(Arc::new(Snapshot {
                epoch: u64::MAX,
                ..Snapshot::default()
            })),
        }
    }

    /// What is held now: the cached snapshot, or a fresh one when roles or
    /// privileges changed since it was read.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let cached = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if cached.epoch == self.log.roles_epoch() {
            return Ok(cached);
        }
        self.reload().await
    }

    /// The snapshot last read, without looking at the store (for the
    /// catalog's functions, which cannot wait; queries refresh it first).
    pub fn cached(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads what is held from the store.
    async fn reload(&self) -> Result<Arc<Snapshot>> {
        // The epoch is read first: a change committed while the rows are
        // read moves it again, and the next check reads once more.
        let epoch = self.log.roles_epoch();
        let meta = self.log.metadata();
        let snapshot = Arc::new(Snapshot::build(
            epoch,
            meta.roles().await?,
            meta.members().await?,
            meta.grants().await?,
        ));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = snapshot.clone();
        Ok(snapshot)
    }

    /// Checks that `role` may do everything `needs` says; the first need
    /// it lacks otherwise. A denial is decided on what the store holds now,
    /// not on the cache.
    pub async fn check(&self, role: &str, needs: &[Need]) -> Result<std::result::Result<(), Need>> {
        let snapshot = self.snapshot().await?;
        if needs.iter().all(|n| snapshot.allows(role, n)) {
            return Ok(Ok(()));
        }
        let fresh = self.reload().await?;
        Ok(match needs.iter().find(|n| !fresh.allows(role, n)) {
            Some(n) => Err(n.clone()),
            None => Ok(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamhouse_log::RoleRecord;

    fn role(name: &str, superuser: bool) -> RoleRecord {
        RoleRecord {
            name: name.into(),
            superuser,
            login: true,
            verifier: None,
            created_at: 0,
        }
    }

    fn grant(kind: &str, object: &str, grantee: &str, privilege: &str) -> GrantRecord {
        GrantRecord {
            object_kind: kind.into(),
            object_name: object.into(),
            grantee: grantee.into(),
            privilege: privilege.into(),
            grantor: "root".into(),
        }
    }

    #[test]
    fn privileges_come_from_grants_ownership_membership_and_public() {
        let held = Snapshot::build(
            0,
            vec![role("root", true), role("alice", false), role("bob", false)],
            vec![
                ("analysts".into(), "bob".into()),
                ("readers".into(), "analysts".into()),
            ],
            vec![
                grant("table", "orders", "alice", "SELECT"),
                grant("table", "made", "alice", OWNER),
                grant("table", "secrets", "readers", "SELECT"),
                grant("table", "open", PUBLIC, "SELECT"),
                grant("group", ALL_GROUPS, "bob", "CONSUME"),
            ],
        );
        let select = |t: &str| Need::Privilege(Privilege::Select, Object::table(t));
        assert!(held.allows("alice", &select("orders")));
        assert!(!held.allows("alice", &select("secrets")));
        assert!(!held.allows(
            "alice",
            &Need::Privilege(Privilege::Insert, Object::table("orders"))
        ));
        // Ownership holds everything on the object, and nothing elsewhere.
        assert!(held.allows(
            "alice",
            &Need::Privilege(Privilege::Drop, Object::table("made"))
        ));
        assert!(held.allows("alice", &Need::Owner(Object::table("made"))));
        assert!(!held.allows("bob", &Need::Owner(Object::table("made"))));
        // Membership, through two levels.
        assert!(held.allows("bob", &select("secrets")));
        assert!(held.allows("bob", &Need::Role("readers")));
        assert!(!held.allows("alice", &Need::Role("readers")));
        // PUBLIC, and every group.
        assert!(held.allows("alice", &select("open")));
        let consume = |g: &str| Need::Privilege(Privilege::Consume, Object::group(g));
        assert!(held.allows("bob", &consume("any-group")));
        assert!(!held.allows("alice", &consume("any-group")));
        // A superuser holds everything.
        assert!(held.allows("root", &Need::Superuser("x")));
        assert!(!held.allows("alice", &Need::Superuser("x")));
        assert!(held.allows("root", &select("secrets")));
    }
}
