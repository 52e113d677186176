//! What a dataflow records to recover exactly: each step's boundaries
//! (committed with its changelog rows) and each checkpoint's offsets,
//! watermark and output sequence; and the step state built from them.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use streamhouse_log::ViewCheckpoint;

use crate::error::{Result, StreamsError};
use crate::watermark::Watermarks;

/// One step as recorded for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepRecord {
    /// Offsets the step read up to, per input (in the view's input order),
    /// per partition.
    pub ends: Vec<Vec<u64>>,
    /// Watermark before the step (rows of windows ending at or before it
    /// were late) and after it.
    pub before: Option<i64>,
    pub after: Option<i64>,
}

/// Progress committed with each changelog append.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// The checkpoint the steps follow.
    pub checkpoint: u64,
    pub steps: Vec<StepRecord>,
}

/// What a checkpoint records besides the snapshot's key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CheckpointRecord {
    /// {"<stream id>": [next offset per partition]}.
    pub inputs: HashMap<String, Vec<u64>>,
    /// Last changelog sequence written.
    #[serde(default)]
    pub sequence: u64,
    /// Latest event time seen per input partition.
    #[serde(default)]
    pub maxima: Vec<Option<i64>>,
    #[serde(default)]
    pub watermark: Option<i64>,
    #[serde(default)]
    pub late_rows: u64,
}

impl CheckpointRecord {
    pub(crate) fn parse(json: &str) -> Result<CheckpointRecord> {
        serde_json::from_str::<CheckpointRecord>(json)
            .or_else(|_| {
                // Checkpoints that recorded only the input offsets.
                serde_json::from_str::<HashMap<String, Vec<u64>>>(json).map(|inputs| {
                    CheckpointRecord {
                        inputs,
                        ..CheckpointRecord::default()
                    }
                })
            })
            .map_err(|e| StreamsError::Internal(format!("checkpoint record: {e}")))
    }
}

/// A view's step state.
pub(crate) struct Run {
    pub watermarks: Option<Watermarks>,
    /// Steps since the last checkpoint.
    pub steps: Vec<StepRecord>,
    /// Last changelog sequence written.
    pub sequence: u64,
    /// Recorded steps to run again, output suppressed.
    pub replay: VecDeque<StepRecord>,
    restored_late_rows: u64,
}

impl Run {
    pub(crate) fn new(
        mut watermarks: Option<Watermarks>,
        restore: Option<&ViewCheckpoint>,
    ) -> Result<Run> {
        let mut run = Run {
            watermarks: None,
            steps: Vec::new(),
            sequence: 0,
            replay: VecDeque::new(),
            restored_late_rows: 0,
        };
        if let Some(cp) = restore {
            let r = CheckpointRecord::parse(&cp.input_offsets)?;
            if let Some(w) = &mut watermarks {
                w.restore(&r.maxima, r.watermark);
            }
            run.sequence = r.sequence;
            run.restored_late_rows = r.late_rows;
        }
        run.watermarks = watermarks;
        Ok(run)
    }

    pub(crate) fn watermark(&self) -> Option<i64> {
        self.watermarks.as_ref().and_then(Watermarks::current)
    }

    pub(crate) fn restored_late_rows(&self) -> u64 {
        self.restored_late_rows
    }
}

/// The recorded steps a restored dataflow runs again: those after what
/// its state holds (`consumed`, per input, per partition), in order. A
/// step recorded for other inputs or partition counts is not one of them.
pub(crate) fn steps_to_replay(
    steps: Vec<StepRecord>,
    consumed: &[Vec<u64>],
) -> VecDeque<StepRecord> {
    let ahead = |s: &StepRecord| {
        s.ends.len() == consumed.len()
            && s.ends
                .iter()
                .zip(consumed)
                .all(|(e, c)| e.len() == c.len() && e.iter().zip(c).all(|(e, c)| e >= c))
            && s.ends != consumed
    };
    steps.into_iter().filter(ahead).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(ends: Vec<Vec<u64>>) -> StepRecord {
        StepRecord {
            ends,
            before: None,
            after: None,
        }
    }

    #[test]
    fn only_steps_past_the_state_are_replayed() {
        let steps = vec![
            step(vec![vec![10, 5]]),
            step(vec![vec![20, 5]]),
            step(vec![vec![30, 8]]),
        ];
        let replay = steps_to_replay(steps.clone(), &[vec![20, 5]]);
        assert_eq!(replay, VecDeque::from(vec![steps[2].clone()]));
        assert_eq!(steps_to_replay(steps.clone(), &[vec![0, 0]]).len(), 3);
        assert!(steps_to_replay(steps.clone(), &[vec![30, 8]]).is_empty());
        // Another partition count or input count: nothing to replay.
        assert!(steps_to_replay(steps.clone(), &[vec![0, 0, 0]]).is_empty());
        assert!(steps_to_replay(steps, &[vec![0, 0], vec![0]]).is_empty());
    }

    #[test]
    fn checkpoint_records_of_every_version_parse() {
        let old = CheckpointRecord::parse(r#"{"7":[1,2]}"#).unwrap();
        assert_eq!(old.inputs["7"], vec![1, 2]);
        assert_eq!(old.sequence, 0);
        let new = CheckpointRecord::parse(
            r#"{"inputs":{"7":[3]},"sequence":4,"maxima":[5],"watermark":6,"late_rows":1}"#,
        )
        .unwrap();
        assert_eq!(
            (new.sequence, new.watermark, new.late_rows),
            (4, Some(6), 1)
        );
        assert!(CheckpointRecord::parse("nonsense").is_err());
    }
}
