//! Nexmark live: the views of the queries (all, or those `--filter
//! "nexmark live qN"` names) are made first, over empty streams; then
//! events are produced through Flight at a fixed rate
//! (`--nexmark-live-rate` events/s of wall-clock time, and as many per
//! second of event time, so windows close as time passes) for
//! `--nexmark-live-seconds`, while every view runs.
//!
//! Reported: whether production kept the rate, how long the views took to
//! drain after the last event, the CPU time and peak memory of the whole
//! process (every view together), and per view how stale it was while the
//! events came: `streamhouse.views.freshness_seconds` (how long since the
//! view, and each of its stages, last had read everything — an upper bound
//! on the age of any event the view did not reflect yet) sampled every
//! 100 ms, as p50/p99, and the largest lag in rows seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use streamhouse_sql::Database;

use crate::{Args, Row, cpu_seconds, reset_peak_memory, resident_mib};

/// Per view: freshness samples (seconds) and lag samples (rows).
type Samples = HashMap<String, (Vec<f64>, Vec<i64>)>;

/// The live scenario (see the module's documentation).
pub async fn live(args: &Args) -> Vec<Row> {
    let (_tmp, _dd, log, db, uri) = super::server().await;
    let wanted = |name: &str| {
        args.filter
            .as_deref()
            .is_none_or(|f| f == "nexmark live" || name.contains(f))
    };
    let mut rows = Vec::new();
    let mut views = Vec::new();
    for q in super::queries() {
        let scenario = format!("nexmark live {}", q.name);
        if !wanted(&scenario) {
            continue;
        }
        let mut failure = None;
        for statement in super::statements(&q) {
            if let Err(e) = db.execute(&statement).await {
                failure = Some(e);
                break;
            }
        }
        match failure {
            Some(e) => rows.push(Row {
                scenario,
                note: Some(format!("not run: {e}")),
                ..Default::default()
            }),
            None => views.push((scenario, format!("nexmark_{}", q.name))),
        }
    }
    let rate = args.nexmark_live_rate.max(1);
    let n = rate * args.nexmark_live_seconds;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(db.clone(), stop.clone()));
    reset_peak_memory();
    let cpu0 = cpu_seconds();
    let produced = super::ingest(&db, &uri, n, rate, Some(rate)).await;
    let last_event = Instant::now();
    let deadline = last_event + Duration::from_secs(300);
    while lagging(&db).await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = last_event.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    let cpu = cpu_seconds() - cpu0;
    let mut table = vec![Row {
        scenario: format!("nexmark live: {} views at {rate} events/s", views.len()),
        rows: n,
        seconds: produced.seconds,
        cpu: Some(cpu),
        peak_mib: Some(resident_mib().1),
        note: Some(format!(
            "views drained {drain:.1} s after the last event{}",
            if Instant::now() >= deadline {
                " (gave up waiting)"
            } else {
                ""
            }
        )),
        ..Default::default()
    }];
    for (scenario, view) in views {
        let (mut fresh, lags) = samples.get(&view).cloned().unwrap_or_default();
        fresh.retain(|f| f.is_finite());
        fresh.sort_by(f64::total_cmp);
        let at = |q: f64| {
            fresh
                .get(((fresh.len() as f64 * q) as usize).min(fresh.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let max_lag = lags.iter().copied().max().unwrap_or(0);
        let row = Row {
            scenario,
            rows: n,
            seconds: produced.seconds,
            latency: Some((at(0.5) * 1e3, at(0.99) * 1e3)),
            note: Some(format!(
                "freshness bound sampled every 100 ms ({} samples); largest lag {max_lag} rows",
                fresh.len()
            )),
            ..Default::default()
        };
        eprintln!(
            "{}: freshness p50 {:.0} ms, p99 {:.0} ms, largest lag {max_lag} rows",
            row.scenario,
            at(0.5) * 1e3,
            at(0.99) * 1e3
        );
        table.push(row);
    }
    table.extend(rows);
    log.shutdown().await;
    table
}

/// Samples every listed view's freshness and lag every 100 ms until
/// `stop`.
async fn sample(db: Arc<Database>, stop: Arc<AtomicBool>) -> Samples {
    let mut out = Samples::new();
    while !stop.load(Ordering::Relaxed) {
        for (name, lag, fresh) in views(&db).await {
            let e = out.entry(name).or_default();
            e.0.push(fresh);
            e.1.push(lag);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

/// Whether any view still lags.
async fn lagging(db: &Database) -> bool {
    views(db).await.iter().any(|(_, lag, _)| *lag > 0)
}

/// (name, lag in rows, freshness in seconds) of every listed view.
async fn views(db: &Database) -> Vec<(String, i64, f64)> {
    let batches = crate::collect(
        db,
        "SELECT name, lag_rows, freshness_seconds FROM streamhouse.views",
    )
    .await;
    let mut out = Vec::new();
    for b in &batches {
        let names = cast(b.column(0), &DataType::Utf8).expect("names");
        let names = names.as_string::<i32>();
        let lags = b.column(1).as_primitive::<Int64Type>();
        let fresh = b.column(2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((
                names.value(i).to_string(),
                if lags.is_null(i) { 0 } else { lags.value(i) },
                if fresh.is_null(i) {
                    f64::NAN
                } else {
                    fresh.value(i)
                },
            ));
        }
    }
    out
}
