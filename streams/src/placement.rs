//! Where views run across agents: the decisions of one round of lease
//! upkeep as pure functions of the stored leases, this agent, the live
//! agents and the time. The SQL layer's driver reads the inputs, calls
//! these, and performs what they decide (take, hand back).

use std::collections::HashSet;

use streamhouse_log::{Micros, ViewRecord};

/// How many views one agent should run: the views spread over the live
/// agents, rounded up (at least one agent counts).
pub fn share(views: usize, live_agents: usize) -> usize {
    views.div_ceil(live_agents.max(1))
}

/// The views this agent may take, by name: those with no owner or whose
/// owner's lease has expired at `now`, not run by `me`, and not among
/// `failed` (a view that failed here is not retried every round).
pub fn free_views<'a>(
    records: impl IntoIterator<Item = &'a ViewRecord>,
    me: &str,
    failed: &HashSet<String>,
    now: Micros,
) -> Vec<&'a ViewRecord> {
    let mut free: Vec<&ViewRecord> = records
        .into_iter()
        .filter(|r| {
            !failed.contains(&r.name)
                && r.lease.owner.as_deref() != Some(me)
                && (r.lease.owner.is_none() || r.lease.until.is_none_or(|u| u < now))
        })
        .collect();
    free.sort_by(|a, b| a.name.cmp(&b.name));
    free
}

/// Whether this agent, running `owned` views, should hand one back (an
/// agent joined, and the share shrank).
pub fn hand_back(owned: usize, share: usize) -> bool {
    owned > share
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamhouse_log::ViewLease;

    fn view(name: &str, owner: Option<&str>, until: Option<Micros>) -> ViewRecord {
        ViewRecord {
            name: name.into(),
            dataflow: format!("{name}-1"),
            definition: "SELECT 1".into(),
            input_versions: Default::default(),
            checkpoint: None,
            lease: ViewLease {
                owner: owner.map(Into::into),
                epoch: 1,
                until,
            },
        }
    }

    #[test]
    fn shares_round_up_over_live_agents() {
        assert_eq!(share(5, 2), 3);
        assert_eq!(share(4, 2), 2);
        assert_eq!(share(3, 0), 3);
        assert_eq!(share(0, 3), 0);
        assert!(hand_back(3, 2));
        assert!(!hand_back(2, 2));
    }

    #[test]
    fn free_views_are_unowned_or_expired_and_not_failed_here() {
        let records = [
            view("e", Some("other"), Some(99)),
            view("b", None, None),
            view("a", Some("other"), Some(101)),
            view("c", Some("me"), Some(50)),
            view("d", Some("other"), None),
            view("f", None, None),
        ];
        let failed = HashSet::from(["f".to_string()]);
        let free: Vec<&str> = free_views(&records, "me", &failed, 100)
            .into_iter()
            .map(|r| r.name.as_str())
            .collect();
        // a: leased until after now; c: mine; f: failed here. d has an
        // owner and no expiry: taken as expired.
        assert_eq!(free, ["b", "d", "e"]);
        let later: Vec<&str> = free_views(&records, "me", &failed, 102)
            .into_iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(later, ["a", "b", "d", "e"]);
    }
}
