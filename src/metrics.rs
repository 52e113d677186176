//! The Prometheus exporter behind `GET /metrics`: installed once per
//! process as the recorder of the `metrics` facade every crate records
//! through, with histogram buckets suited to each kind of measurement;
//! and the process allocator's statistics as memory gauges.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: 100 µs to 30 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Size buckets, in bytes: 1 KiB to 256 MiB.
const BYTES: &[f64] = &[
    1024.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
];
/// Row-count buckets: 1 to 10 M.
const ROWS: &[f64] = &[
    1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0,
];

/// Installs the exporter as the process's metrics recorder.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES)?
        .set_buckets_for_metric(Matcher::Suffix("_rows".into()), ROWS)?
        .install_recorder()?)
}

/// Sets `streamhouse_memory_bytes{kind}` from the allocator's statistics:
/// `allocated` (bytes the server holds), `active` (pages holding them),
/// `resident` (allocator pages in RAM), `mapped`, `retained` (unmapped but
/// kept as address space) and `metadata` (the allocator's own). A gap that
/// grows between `allocated` and `resident` is fragmentation or pages not yet
/// returned; `allocated` growing is memory something holds.
pub fn record_allocator() {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot refreshed by advancing the epoch.
    if let Err(e) = epoch::advance() {
        tracing::warn!(error = %e, "allocator statistics not refreshed");
        return;
    }
    let kinds: [(&str, tikv_jemalloc_ctl::Result<usize>); 6] = [
        ("allocated", stats::allocated::read()),
        ("active", stats::active::read()),
        ("resident", stats::resident::read()),
        ("mapped", stats::mapped::read()),
        ("retained", stats::retained::read()),
        ("metadata", stats::metadata::read()),
    ];
    for (kind, value) in kinds {
        match value {
            Ok(bytes) => {
                metrics::gauge!("streamhouse_memory_bytes", "kind" => kind).set(bytes as f64)
            }
            Err(e) => tracing::warn!(error = %e, kind, "allocator statistic not read"),
        }
    }
}
