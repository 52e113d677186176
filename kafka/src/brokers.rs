//! Agents as Kafka brokers. Every live agent serving the Kafka door is a
//! broker, named by a node id derived from its agent id; since the log is
//! leaderless, any of them can lead any partition, and partitions are
//! spread over them so clients spread their load. Any agent coordinates
//! any group (group state is in the metadata store): a client is sent to
//! the agent it asked. A transactional producer's state lives on one agent,
//! so every agent names the same coordinator for a transactional id: one
//! of the live brokers, by a hash of the id.

use streamhouse_log::AgentState;
use streamhouse_sql::Database;

/// The address key agents register for this door.
pub const ADDRESS: &str = "kafka";

/// One broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

impl Broker {
    /// This agent, as a broker reachable at `host:port`.
    pub fn of_agent(agent_id: &str, host: String, port: u16) -> Broker {
        Broker {
            node_id: node_id(agent_id),
            host,
            port,
        }
    }
}

/// A non-negative node id for an agent (stable for its process).
pub fn node_id(agent_id: &str) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(agent_id.as_bytes()) % i32::MAX as u64) as i32
}

/// The live brokers by node id, never empty: this one is always among
/// them (alone when the others cannot be listed).
pub async fn live(db: &Database, me: &Broker) -> Vec<Broker> {
    let mut out = vec![me.clone()];
    let agents = match db.log().agents().await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list agents");
            return out;
        }
    };
    let me_id = db.log().agent().id();
    for (agent, state) in agents {
        if state != AgentState::Live || agent.id == me_id {
            continue;
        }
        let Some(addr) = agent.addresses.get(ADDRESS) else {
            continue;
        };
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else { continue };
        out.push(Broker::of_agent(
            &agent.id,
            host.trim_matches(['[', ']']).to_string(),
            port,
        ));
    }
    out.sort_by_key(|b| b.node_id);
    out
}

/// The broker that leads `partition` of `topic` among `brokers` (never
/// empty: see [`live`]).
pub fn leader<'a>(brokers: &'a [Broker], topic: &str, partition: u32) -> &'a Broker {
    let spread = xxhash_rust::xxh3::xxh3_64(topic.as_bytes()).wrapping_add(u64::from(partition));
    &brokers[(spread % brokers.len() as u64) as usize]
}

/// The broker that coordinates transactional id `id` among `brokers`
/// (never empty: see [`live`]).
pub fn coordinator<'a>(brokers: &'a [Broker], id: &str) -> &'a Broker {
    let spread = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
    &brokers[(spread % brokers.len() as u64) as usize]
}
