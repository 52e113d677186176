//! This process as an agent of the cluster: its registration in the
//! metadata store and its heartbeat.
//!
//! Every [`crate::Log`] registers one agent (a fresh id per start) and
//! refreshes its heartbeat every `heartbeat_interval`; a clean shutdown marks
//! it stopped. Other agents judge it by the heartbeat's age: older than the
//! timeout means dead (killed, paused, or cut off from the metadata store).
//! With the embedded store the registry holds this process's past starts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{ClockRef, Micros};
use crate::metadata::{AgentRecord, MetadataStore};

/// What other agents conclude from an agent's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Live,
    Stopped,
    /// No heartbeat within the timeout.
    Dead,
}

impl AgentState {
    /// The state of `a` at `now` with liveness timeout `timeout`.
    pub fn of(a: &AgentRecord, now: Micros, timeout: Duration) -> AgentState {
        if a.stopped_at.is_some() {
            AgentState::Stopped
        } else if now - a.heartbeat_at > timeout.as_micros() as i64 {
            AgentState::Dead
        } else {
            AgentState::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Live => "live",
            AgentState::Stopped => "stopped",
            AgentState::Dead => "dead",
        }
    }
}

/// Registrations older than this are forgotten when an agent starts.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// This process's registration.
#[derive(Debug)]
pub struct Agent {
    record: Mutex<AgentRecord>,
    meta: Arc<dyn MetadataStore>,
    clock: ClockRef,
    timeout: Duration,
}

impl Agent {
    /// A new agent identity (not yet registered).
    pub(crate) fn new(meta: Arc<dyn MetadataStore>, clock: ClockRef, timeout: Duration) -> Agent {
        let now = clock.now_micros();
        Agent {
            record: Mutex::new(AgentRecord {
                id: ulid::Ulid::new().to_string().to_lowercase(),
                addresses: BTreeMap::new(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: now,
                heartbeat_at: now,
                stopped_at: None,
            }),
            meta,
            clock,
            timeout,
        }
    }

    /// This agent's id.
    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    /// How old a heartbeat may be before its agent counts as dead.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AgentRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records where this agent listens (and heartbeats).
    pub async fn set_addresses(&self, addresses: BTreeMap<String, String>) -> crate::Result<()> {
        self.lock().addresses = addresses;
        self.heartbeat().await
    }

    /// The registration as this agent last recorded it.
    pub fn record(&self) -> AgentRecord {
        self.lock().clone()
    }

    /// Refreshes the registration.
    pub async fn heartbeat(&self) -> crate::Result<()> {
        let record = {
            let mut r = self.lock();
            r.heartbeat_at = self.clock.now_micros();
            r.clone()
        };
        self.meta.register_agent(&record).await
    }

    /// Marks every other registration that is not stopped as stopped.
    async fn stop_past_starts(&self) -> crate::Result<()> {
        let me = self.id();
        let now = self.clock.now_micros();
        for mut past in self.meta.agents().await? {
            if past.id != me && past.stopped_at.is_none() {
                past.stopped_at = Some(now);
                self.meta.register_agent(&past).await?;
            }
        }
        Ok(())
    }

    /// Marks this agent stopped (a clean shutdown).
    pub async fn stop(&self) -> crate::Result<()> {
        let record = {
            let mut r = self.lock();
            let now = self.clock.now_micros();
            r.heartbeat_at = now;
            r.stopped_at = Some(now);
            r.clone()
        };
        self.meta.register_agent(&record).await
    }

    /// Registers, forgets long-gone agents, then heartbeats every
    /// `interval` until stopped or dropped. As the `sole` agent of its
    /// metadata store, it first marks the earlier registrations stopped: a
    /// start after a crash does not wait for its own past start's heartbeat
    /// to age out (nor share views with it).
    pub(crate) async fn run(self: Arc<Self>, interval: Duration, sole: bool) {
        let forget = self.clock.now_micros() - FORGET_AFTER.as_micros() as i64;
        if let Err(e) = self.meta.forget_agents(forget).await {
            tracing::debug!(error = %e, "cannot forget old agents");
        }
        if sole && let Err(e) = self.stop_past_starts().await {
            tracing::warn!(error = %e, "cannot mark past starts stopped");
        }
        let mut failing = false;
        loop {
            if self.lock().stopped_at.is_some() {
                return;
            }
            match self.heartbeat().await {
                Ok(()) if failing => {
                    tracing::info!("heartbeat recorded again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot record this agent's heartbeat");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}
