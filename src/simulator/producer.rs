//! A simulated producer: every tick, the rows its rate owes since it
//! started, generated and appended as one batch, acknowledged once durable
//! (one append in flight). A producer that falls more than a second behind
//! forgets the rows it owes beyond that second, so a slow store lowers its
//! rate instead of piling up work.

use std::sync::Arc;

use streamhouse_log::{AppendOptions, Log, StreamInfo, monotonic};
use tokio::sync::watch;

use super::generate::Generator;
use super::{RETRY, Status, TICK, transient};

/// Rows in one append, at most.
const MAX_BATCH: u64 = 50_000;

pub struct Plan {
    pub info: Arc<StreamInfo>,
    /// Rows per second.
    pub rate: u64,
    /// Stop after this many rows.
    pub rows: Option<u64>,
    pub seed: u64,
}

/// Rows owed at `elapsed_s` seconds by a producer of `rate` rows/s that has
/// sent `sent`: what the rate owes minus what was sent, the backlog held to
/// one second's rows, one append to [`MAX_BATCH`]. Answers the rows to send
/// and `sent` as rebased after dropping a backlog older than a second.
fn owed(rate: u64, elapsed_s: f64, sent: u64) -> (u64, u64) {
    let due = (rate as f64 * elapsed_s) as u64;
    let sent = sent.max(due.saturating_sub(rate));
    (due.saturating_sub(sent).min(MAX_BATCH), sent)
}

pub async fn run(log: Arc<Log>, plan: Plan, status: Arc<Status>, mut stop: watch::Receiver<bool>) {
    let name = plan.info.name().to_string();
    let mut generator = match Generator::new(plan.info.spec.schema.clone(), plan.seed) {
        Ok(g) => g,
        Err(e) => return status.end("failed", Some(e.to_string())),
    };
    let started = monotonic();
    // Rows the rate accounts as sent (rebased when the producer falls
    // behind), and rows really written.
    let mut sent = 0u64;
    let mut written = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let (mut n, rebased) = owed(plan.rate, started.elapsed().as_secs_f64(), sent);
        sent = rebased;
        if let Some(limit) = plan.rows {
            n = n.min(limit - written);
        }
        if n == 0 {
            continue;
        }
        let batch = match generator.batch(n as usize, log.now_micros()) {
            Ok(b) => b,
            Err(e) => return status.end("failed", Some(format!("generating rows: {e}"))),
        };
        match log.append(&name, batch, AppendOptions::default()).await {
            Ok(_) => {
                sent += n;
                written += n;
                status.add_rows(n);
                status.set_error(None);
                if plan.rows == Some(written) {
                    return status.end("finished", None);
                }
            }
            Err(e) if transient(&e) => {
                status.set_error(Some(e.to_string()));
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
            Err(e) => return status.end("failed", Some(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_owes_its_rate_since_it_started() {
        assert_eq!(owed(1_000, 0.25, 0), (250, 0));
        assert_eq!(owed(1_000, 0.35, 250), (100, 250));
        assert_eq!(owed(1_000, 0.35, 350), (0, 350));
    }

    #[test]
    fn a_backlog_past_a_second_is_forgotten_and_appends_are_bounded() {
        // Ten seconds in, nothing sent: one second's rows, not ten.
        assert_eq!(owed(1_000, 10.0, 0), (1_000, 9_000));
        assert_eq!(owed(100_000, 10.0, 0), (MAX_BATCH, 900_000));
    }
}
