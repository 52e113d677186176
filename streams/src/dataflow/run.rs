//! Running a view: steps, checkpoints, recovery and the background loop.
//!
//! A **step** reads what its inputs gained since the last step (offset
//! ranges ending at the partitions' current ends), merges it into the state
//! and turns what changed into changelog rows: retractions and inserts of
//! the view's rows (`emit = 'on_update'`), or each window's row once the
//! watermark passes its end (`on_close`). Rows of windows already closed
//! are dropped as late before they reach the state.
//!
//! **Exactly-once output.** A step's changelog rows are appended as an
//! idempotent producer (the view's dataflow id, a sequence number per
//! append) whose progress — every step since the last checkpoint, with the
//! offsets it ended at and the watermarks it used — is committed in the
//! same metadata transaction as the rows. A **checkpoint** uploads a
//! snapshot of the state and records, in one transaction, the input
//! offsets, watermark and output sequence it reflects. Recovery restores
//! the checkpoint, then replays the recorded steps after it with the same
//! boundaries and watermarks and their output suppressed (it is already in
//! the changelog); the next step continues the changelog as a run that
//! never crashed would have.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use streamhouse_log::{AppendOptions, Log, ProducerSeq, ViewCheckpoint};

use super::changes::{self, INSERT};
use super::progress::{CheckpointRecord, Progress, Run, StepRecord, steps_to_replay};
use super::state_table::read_plan;
use super::{Aggregation, Body, Dataflow, Emit, Output, Status, producer_id};
use crate::error::{Result, StreamsError};
use crate::watermark::Watermarks;

/// Most rows one step reads (over all input partitions).
const MAX_STEP_ROWS: u64 = 1_000_000;
/// Least rows one step may read from a partition.
const MIN_PARTITION_ROWS: u64 = 10_000;

/// Seconds a dataflow's checkpoints take (snapshot upload and metadata
/// transaction), by `view`.
pub const CHECKPOINT_SECONDS: &str = "streamhouse_view_checkpoint_seconds";

/// Concatenates batches of one schema (`None` when there are no rows).
fn concat(schema: &arrow::datatypes::SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    Ok(concat_batches(schema, batches)?)
}

impl Dataflow {
    /// The producer id of the changelog appends.
    pub fn producer_id(&self) -> String {
        producer_id(&self.dataflow)
    }

    /// Brings the view up to date with everything its inputs hold now
    /// (before [`MatView::start`]).
    pub async fn backfill(&self, log: &Arc<Log>, ctx: &SessionContext) -> Result<()> {
        while self.step(log, ctx).await? {}
        Ok(())
    }

    /// After a restore: replays the steps recorded after the checkpoint
    /// whose output is already in the changelog, without writing it again.
    pub async fn recover(&self, log: &Arc<Log>, ctx: &SessionContext) -> Result<()> {
        if self.refill.swap(false, Ordering::AcqRel) {
            self.refill_joins(ctx).await?;
        }
        let Some(Output::Changelog(info)) = &self.output else {
            return Ok(());
        };
        let Some((last, progress)) = log
            .metadata()
            .producer_progress(&self.producer_id(), info.id)
            .await?
        else {
            return Ok(());
        };
        {
            let mut run = self.run.lock().await;
            if last <= run.sequence {
                return Ok(());
            }
            let progress: Progress = match progress.as_deref().map(serde_json::from_str) {
                Some(Ok(p)) => p,
                _ => {
                    return Err(StreamsError::Internal(format!(
                        "view \"{}\": changelog progress unreadable",
                        self.name
                    )));
                }
            };
            let consumed: Vec<Vec<u64>> = self
                .inputs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|i| i.consumed.clone())
                .collect();
            // Steps after what the state holds (earlier ones are in it).
            run.replay = steps_to_replay(progress.steps, &consumed);
            run.sequence = last;
        }
        let steps = self.run.lock().await.replay.len();
        tracing::info!(view = %self.name, steps, "replaying steps after the checkpoint");
        while !self.run.lock().await.replay.is_empty() {
            self.step(log, ctx).await?;
        }
        Ok(())
    }

    /// A checkpoint from before join rows were part of the state: the
    /// restored view runs its delta plan once over every input row the
    /// checkpoint reflects (the output is already in the state) to refill
    /// them.
    async fn refill_joins(&self, ctx: &SessionContext) -> Result<()> {
        let delta = match &self.body {
            Body::Pipeline { delta, .. } => delta,
            Body::Aggregate(a) => &a.delta,
        };
        self.steps.fetch_add(1, Ordering::AcqRel);
        let mut any = false;
        for input in self.inputs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            any |= input.consumed.iter().any(|&c| c > 0);
            *input.ranges.lock().unwrap_or_else(|p| p.into_inner()) =
                input.consumed.iter().map(|&c| 0..c).collect();
        }
        if any {
            tracing::info!(view = %self.name, "refilling the rows its joins keep");
            ctx.execute_logical_plan(delta.clone())
                .await?
                .collect()
                .await?;
        }
        Ok(())
    }

    /// Starts maintaining the view in the background: steps as rows
    /// arrive (or as idle partitions let the watermark move), and a
    /// checkpoint once the state has changed and the interval has passed.
    pub fn start(self: &Arc<Self>, log: Arc<Log>, ctx: SessionContext) {
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            let mut last_checkpoint = streamhouse_log::monotonic();
            loop {
                let Some(view) = weak.upgrade() else { return };
                if view.stopping.load(Ordering::Acquire) {
                    return;
                }
                let mut progressed = false;
                let outcome = async {
                    progressed = view.step(&log, &ctx).await?;
                    if view.dirty.load(Ordering::Acquire)
                        && last_checkpoint.elapsed() >= view.checkpoint_interval
                    {
                        view.checkpoint(&log).await?;
                        last_checkpoint = streamhouse_log::monotonic();
                    }
                    Ok::<_, StreamsError>(())
                }
                .await;
                if let Err(e) = outcome {
                    if !matches!(e, StreamsError::Cancelled) {
                        view.fail(&e);
                    }
                    return;
                }
                if progressed {
                    continue;
                }
                let mut waits = view.waits(&log);
                let wake = view.wake.clone();
                waits.push(Box::pin(async move { wake.notified().await }));
                if view.dirty.load(Ordering::Acquire) && view.checkpoint_interval > Duration::ZERO {
                    let due = last_checkpoint + view.checkpoint_interval;
                    waits.push(Box::pin(tokio::time::sleep_until(due)));
                }
                if view.emit == Emit::OnClose {
                    // Idle partitions stop holding the watermark back
                    // without any row arriving.
                    waits.push(Box::pin(tokio::time::sleep(Duration::from_millis(500))));
                }
                drop(view);
                if waits.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    let _ = futures::future::select_all(waits).await;
                }
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Records a checkpoint: a snapshot of the state and, in one metadata
    /// transaction, the input offsets, watermark and output sequence it
    /// reflects.
    pub async fn checkpoint(&self, log: &Arc<Log>) -> Result<()> {
        if matches!(self.output, Some(Output::Channel(_))) {
            return Ok(()); // a push query is not recovered
        }
        let started = streamhouse_log::Stopwatch::start();
        let mut run = self.run.lock().await;
        let number = self.checkpoint_no.load(Ordering::Acquire) + 1;
        let record = CheckpointRecord {
            inputs: self
                .inputs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|i| (i.info.id.to_string(), i.consumed.clone()))
                .collect(),
            sequence: run.sequence,
            maxima: run
                .watermarks
                .as_ref()
                .map(Watermarks::maxima)
                .unwrap_or_default(),
            watermark: run.watermark(),
            late_rows: self.late_rows(),
        };
        let input_offsets =
            serde_json::to_string(&record).map_err(|e| StreamsError::Internal(e.to_string()))?;
        let state_key = match &self.state {
            Some(state) => state.snapshot(log.store(), number).await?,
            None => String::new(),
        };
        log.metadata()
            .commit_view_checkpoint(
                &self.name,
                &self.dataflow,
                self.epoch,
                &ViewCheckpoint {
                    number,
                    input_offsets,
                    state_key,
                },
                log.now_micros(),
            )
            .await?;
        run.steps.clear();
        self.checkpoint_no.store(number, Ordering::Release);
        self.dirty.store(false, Ordering::Release);
        drop(run);
        metrics::histogram!(CHECKPOINT_SECONDS, "view" => self.name.clone())
            .record(started.elapsed().as_secs_f64());
        // The previous checkpoint stays as a margin; older ones go.
        if let Some(state) = &self.state
            && number > 2
            && let Err(e) = state.prune(log.store(), number - 1).await
        {
            tracing::warn!(view = %self.name, error = %e, "old state snapshots not pruned");
        }
        Ok(())
    }

    /// Futures that resolve when any input partition grows past what the
    /// view consumed.
    fn waits(&self, log: &Arc<Log>) -> Vec<BoxFuture<'static, ()>> {
        let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<BoxFuture<'static, ()>> = Vec::new();
        for input in inputs.iter() {
            for (p, &offset) in input.consumed.iter().enumerate() {
                let log = log.clone();
                let name = input.info.name().to_string();
                out.push(Box::pin(async move {
                    if log.wait_for(&name, p as u32, offset).await.is_err() {
                        // The stream is gone: the next step reports it.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
            }
        }
        out
    }

    /// Runs one step over what arrived since the last one (or the next
    /// recorded step, when replaying); `false` when nothing had and the
    /// watermark did not move.
    async fn step(&self, log: &Arc<Log>, ctx: &SessionContext) -> Result<bool> {
        let mut run = self.run.lock().await;
        let replaying = run.replay.pop_front();
        let inputs: Vec<(
            Arc<streamhouse_log::StreamInfo>,
            crate::scan::Ranges,
            Vec<u64>,
        )> = {
            let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
            inputs
                .iter()
                .map(|i| (i.info.clone(), i.ranges.clone(), i.consumed.clone()))
                .collect()
        };
        // Each step reads a bounded slice of each partition, ending at a
        // commit boundary (memory and latency stay bounded while catching
        // up); a replayed step reads exactly what it read before.
        let partitions: usize = inputs.iter().map(|(_, _, c)| c.len()).sum();
        let budget = (MAX_STEP_ROWS / partitions.max(1) as u64).max(MIN_PARTITION_ROWS);
        let mut ends = Vec::with_capacity(inputs.len());
        let mut maxima = Vec::with_capacity(partitions);
        // Whether this step reaches every end observed at its start.
        let observed = streamhouse_log::monotonic().into_std();
        let mut complete = replaying.is_none();
        for (i, (info, _, consumed)) in inputs.iter().enumerate() {
            let (limit, budget) = match &replaying {
                Some(r) => (r.ends[i].clone(), u64::MAX),
                None => (log.partition_ends(info.name()).await?, budget),
            };
            let mut e = Vec::with_capacity(consumed.len());
            for (p, (&c, &l)) in consumed.iter().zip(&limit).enumerate() {
                let (end, max) = log.bounded_read(info, p as u32, c, l, budget).await?;
                complete &= end >= l;
                e.push(end);
                maxima.push(max);
            }
            ends.push(e);
        }
        let mut any = false;
        for ((_, ranges, consumed), e) in inputs.iter().zip(&ends) {
            let r: Vec<Range<u64>> = consumed.iter().zip(e).map(|(&c, &e)| c..e).collect();
            any |= r.iter().any(|r| r.end > r.start);
            *ranges.lock().unwrap_or_else(|p| p.into_inner()) = r;
        }
        let now = streamhouse_log::monotonic().into_std();
        let before = match &replaying {
            Some(r) => r.before,
            None => run.watermark(),
        };
        // Event times of the new rows move the watermark.
        if let Some(w) = run.watermarks.as_mut() {
            let all_consumed = inputs.iter().flat_map(|(_, _, c)| c.iter());
            let all_ends = ends.iter().flatten();
            for (idx, ((c, e), t)) in all_consumed.zip(all_ends).zip(&maxima).enumerate() {
                if e > c {
                    w.observe(idx, *t, now);
                }
            }
        }
        let after = match (&replaying, run.watermarks.as_mut()) {
            (Some(r), Some(w)) => {
                w.set(r.after);
                r.after
            }
            (None, Some(w)) => w.advance(now),
            (_, None) => None,
        };
        let closes = self.emit == Emit::OnClose && after.is_some() && after != before;
        if !any && !closes {
            self.caught_up(complete, observed);
            return Ok(false);
        }
        self.steps.fetch_add(1, Ordering::AcqRel);
        self.join_clock.set(before);
        let changes = match &self.body {
            Body::Pipeline {
                delta,
                signed,
                top_n,
            } => {
                let mut batches = ctx
                    .execute_logical_plan(delta.clone())
                    .await?
                    .collect()
                    .await?;
                let mut schema = delta.schema().inner().clone();
                if let Some(t) = top_n {
                    batches = t.step(ctx, &batches).await?;
                    schema = t.output_schema();
                }
                let rows = concat(&schema, &batches)?;
                (rows.num_rows() > 0)
                    .then(|| match signed {
                        true => changes::with_signs(&self.changes_schema, &rows),
                        false => changes::with_op(&self.changes_schema, INSERT, &rows),
                    })
                    .transpose()?
                    .filter(|b| b.num_rows() > 0)
            }
            Body::Aggregate(a) => self.aggregate_step(a, ctx, any, before, after).await?,
        };
        self.late_rows
            .fetch_add(self.join_clock.take_late(), Ordering::Relaxed);
        if let Some(w) = after {
            self.watermark.store(w, Ordering::Relaxed);
        }
        run.steps.push(StepRecord {
            ends: ends.clone(),
            before,
            after,
        });
        if let Some(batch) = changes
            && replaying.is_none()
        {
            self.write_changes(log, &mut run, batch).await?;
        }
        self.dirty.store(true, Ordering::Release);
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        for (input, e) in inputs.iter_mut().zip(ends) {
            input.consumed = e;
        }
        drop(inputs);
        self.stepped.send_modify(|n| *n += 1);
        self.caught_up(complete, observed);
        Ok(true)
    }

    /// A step that reached every end observed at `observed` makes the view
    /// reflect everything committed before then.
    fn caught_up(&self, complete: bool, observed: Instant) {
        if complete {
            *self.caught_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(observed);
        }
    }

    /// Seconds since the view last reflected everything committed to its
    /// inputs, given its current lag (0 without lag).
    pub fn freshness(&self, lag: i64) -> f64 {
        if lag <= 0 {
            return 0.0;
        }
        match *self.caught_up.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(at) => at.elapsed().as_secs_f64(),
            None => f64::NAN,
        }
    }

    /// Bytes of local state (0 for a view without aggregate or join).
    pub fn state_bytes(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.size_bytes())
    }

    /// Merges a step into an aggregate's state; returns its changelog rows.
    async fn aggregate_step(
        &self,
        a: &Aggregation,
        ctx: &SessionContext,
        any: bool,
        before: Option<i64>,
        after: Option<i64>,
    ) -> Result<Option<RecordBatch>> {
        let (mut batches, mut distinct) = (Vec::new(), Vec::new());
        if any {
            batches = ctx
                .execute_logical_plan(a.delta.clone())
                .await?
                .collect()
                .await?;
            for plan in &a.distinct {
                distinct.push(
                    ctx.execute_logical_plan(plan.clone())
                        .await?
                        .collect()
                        .await?,
                );
            }
        }
        let on_update = self.emit == Emit::OnUpdate && self.output.is_some();
        let merged = a.state.merge(
            &batches,
            &distinct,
            before.filter(|_| a.windowed),
            on_update,
        )?;
        self.late_rows
            .fetch_add(merged.late_rows, Ordering::Relaxed);
        if let Some(ch) = merged.changes {
            let old = self.view_rows(a, ctx, ch.before).await?;
            let new = self.view_rows(a, ctx, ch.after).await?;
            return changes::consolidate(&self.changes_schema, &old, &new);
        }
        if self.emit == Emit::OnClose
            && let Some(w) = after
            && after != before
        {
            let closed = a.state.close_windows(w)?;
            if closed.num_rows() > 0 && self.output.is_some() {
                let rows = self.view_rows(a, ctx, closed).await?;
                if rows.num_rows() > 0 {
                    return Ok(Some(changes::with_op(&self.changes_schema, INSERT, &rows)?));
                }
            }
        }
        Ok(None)
    }

    /// The view's rows for state rows: the part of the query above the
    /// aggregate, run over them.
    async fn view_rows(
        &self,
        a: &Aggregation,
        ctx: &SessionContext,
        rows: RecordBatch,
    ) -> Result<RecordBatch> {
        let view_schema = self.read_plan.schema().inner().clone();
        if rows.num_rows() == 0 {
            return Ok(RecordBatch::new_empty(view_schema));
        }
        let table = MemTable::try_new(rows.schema(), vec![vec![rows]])?;
        let plan = read_plan(&a.plan, &a.agg, Arc::new(table))?;
        let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
        let out = concat(&view_schema, &batches)?;
        Ok(out)
    }

    /// Writes a step's changes where they go.
    async fn write_changes(&self, log: &Arc<Log>, run: &mut Run, batch: RecordBatch) -> Result<()> {
        match &self.output {
            Some(Output::Changelog(info)) => {
                run.sequence += 1;
                let progress = Progress {
                    checkpoint: self.checkpoint_no.load(Ordering::Acquire),
                    steps: run.steps.clone(),
                };
                let options = AppendOptions {
                    partition: Some(0),
                    producer: Some(ProducerSeq {
                        producer_id: self.producer_id(),
                        sequence: run.sequence,
                        progress: Some(
                            serde_json::to_string(&progress)
                                .map_err(|e| StreamsError::Internal(e.to_string()))?,
                        ),
                        epoch: Some(self.epoch),
                        first: None,
                    }),
                    key: None,
                    internal: true,
                };
                if let Some(s) = log.submit(info.name(), vec![batch], options).await? {
                    s.durable().await?;
                }
                Ok(())
            }
            Some(Output::Channel(tx)) => {
                tx.send(batch).await.map_err(|_| StreamsError::Cancelled)?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Status and rows not yet reflected, for SHOW MATERIALIZED VIEWS.
    pub async fn progress(&self, log: &Arc<Log>) -> (Status, i64) {
        let status = self
            .status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let inputs: Vec<(String, Vec<u64>)> = {
            let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
            inputs
                .iter()
                .map(|i| (i.info.name().to_string(), i.consumed.clone()))
                .collect()
        };
        let mut lag = 0i64;
        for (name, consumed) in inputs {
            if let Ok(ends) = log.partition_ends(&name).await {
                lag += ends
                    .iter()
                    .zip(&consumed)
                    .map(|(e, c)| e.saturating_sub(*c) as i64)
                    .sum::<i64>();
            }
        }
        (status, lag)
    }
}
