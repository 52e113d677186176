//! What a scan's filters say about where matching rows can be: which
//! partitions, which offsets, which event and append times.
//!
//! Only simple conjuncts are understood (`col op literal`, `literal op col`,
//! `col IN (…)`, `BETWEEN`); anything else leaves the bounds as wide as they
//! were. The bounds only decide which chunks are fetched: DataFusion still
//! applies every filter to the rows (pushdown is `Inexact`), so a bound that
//! is too wide costs GETs, never correctness.

use std::collections::BTreeSet;
use std::ops::Range;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use streamhouse_log::stream::{OFFSET_COLUMN, PARTITION_COLUMN, TIMESTAMP_COLUMN};

/// Where matching rows can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanBounds {
    /// Partitions that may hold matches; `None` means all.
    pub partitions: Option<BTreeSet<u32>>,
    pub offsets: Range<u64>,
    /// Event time, µs, half-open.
    pub event_time: Option<Range<i64>>,
    /// Append time (`_timestamp`), µs, half-open.
    pub append_time: Option<Range<i64>>,
}

impl Default for ScanBounds {
    fn default() -> Self {
        Self {
            partitions: None,
            offsets: 0..u64::MAX,
            event_time: None,
            append_time: None,
        }
    }
}

impl ScanBounds {
    /// Narrows the bounds by every filter (a conjunction).
    pub fn from_filters(filters: &[Expr], event_time_column: Option<&str>) -> Self {
        let mut b = ScanBounds::default();
        for f in filters {
            b.apply(f, event_time_column);
        }
        b
    }

    /// True when no row can match.
    pub fn is_empty(&self) -> bool {
        self.offsets.start >= self.offsets.end
            || self.partitions.as_ref().is_some_and(BTreeSet::is_empty)
            || self.event_time.as_ref().is_some_and(|r| r.start >= r.end)
            || self.append_time.as_ref().is_some_and(|r| r.start >= r.end)
    }

    fn apply(&mut self, e: &Expr, et: Option<&str>) {
        match e {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.apply(left, et);
                self.apply(right, et);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => self.compare(&c.name, *op, v, et),
                    (Expr::Literal(v, _), Expr::Column(c)) => {
                        if let Some(op) = op.swap() {
                            self.compare(&c.name, op, v, et)
                        }
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                if let (Expr::Column(c), Expr::Literal(lo, _), Expr::Literal(hi, _)) =
                    (expr.as_ref(), low.as_ref(), high.as_ref())
                {
                    self.compare(&c.name, Operator::GtEq, lo, et);
                    self.compare(&c.name, Operator::LtEq, hi, et);
                }
            }
            Expr::InList(list) if !list.negated => {
                let Expr::Column(c) = list.expr.as_ref() else {
                    return;
                };
                if c.name != PARTITION_COLUMN {
                    return;
                }
                let mut set = BTreeSet::new();
                for item in &list.list {
                    match item {
                        Expr::Literal(v, _) => match int(v) {
                            Some(p) if p >= 0 => {
                                set.insert(p as u32);
                            }
                            Some(_) => {}
                            None => return,
                        },
                        _ => return,
                    }
                }
                self.restrict_partitions(set);
            }
            _ => {}
        }
    }

    fn restrict_partitions(&mut self, set: BTreeSet<u32>) {
        self.partitions = Some(match self.partitions.take() {
            Some(prev) => prev.intersection(&set).copied().collect(),
            None => set,
        });
    }

    fn compare(&mut self, col: &str, op: Operator, v: &ScalarValue, et: Option<&str>) {
        if col == PARTITION_COLUMN {
            if let (Operator::Eq, Some(p)) = (op, int(v)) {
                let set = if p >= 0 {
                    BTreeSet::from([p as u32])
                } else {
                    BTreeSet::new()
                };
                self.restrict_partitions(set);
            }
        } else if col == OFFSET_COLUMN {
            let Some(v) = int(v) else { return };
            if let Some(r) = int_range(op, v) {
                self.offsets = self.offsets.start.max(r.start)..self.offsets.end.min(r.end);
            }
        } else if col == TIMESTAMP_COLUMN || Some(col) == et {
            let Some(t) = micros(v) else { return };
            let Some(r) = time_range(op, t) else { return };
            let slot = if col == TIMESTAMP_COLUMN {
                &mut self.append_time
            } else {
                &mut self.event_time
            };
            *slot = Some(match slot.take() {
                Some(p) => p.start.max(r.start)..p.end.min(r.end),
                None => r,
            });
        }
    }
}

/// The offsets `op v` selects (offsets are never negative).
fn int_range(op: Operator, v: i64) -> Option<Range<u64>> {
    let clamp = |x: i64| x.max(0) as u64;
    Some(match op {
        Operator::Eq if v < 0 => 0..0,
        Operator::Eq => v as u64..v as u64 + 1,
        Operator::Gt => clamp(v.saturating_add(1))..u64::MAX,
        Operator::GtEq => clamp(v)..u64::MAX,
        Operator::Lt => 0..clamp(v),
        Operator::LtEq => 0..clamp(v.saturating_add(1)),
        _ => return None,
    })
}

/// The times (µs) `op t` selects; `t` is already rounded outward.
fn time_range(op: Operator, t: (i64, i64)) -> Option<Range<i64>> {
    let (floor, ceil) = t;
    Some(match op {
        Operator::Eq => floor..ceil.saturating_add(1),
        Operator::Gt | Operator::GtEq => floor..i64::MAX,
        Operator::Lt => i64::MIN..ceil,
        Operator::LtEq => i64::MIN..ceil.saturating_add(1),
        _ => return None,
    })
}

fn int(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int8(Some(x)) => Some(*x as i64),
        ScalarValue::Int16(Some(x)) => Some(*x as i64),
        ScalarValue::Int32(Some(x)) => Some(*x as i64),
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::UInt8(Some(x)) => Some(*x as i64),
        ScalarValue::UInt16(Some(x)) => Some(*x as i64),
        ScalarValue::UInt32(Some(x)) => Some(*x as i64),
        ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
        _ => None,
    }
}

/// A timestamp literal as (floor, ceil) microseconds.
fn micros(v: &ScalarValue) -> Option<(i64, i64)> {
    match v {
        ScalarValue::TimestampSecond(Some(x), _) => {
            let m = x.saturating_mul(1_000_000);
            Some((m, m))
        }
        ScalarValue::TimestampMillisecond(Some(x), _) => {
            let m = x.saturating_mul(1_000);
            Some((m, m))
        }
        ScalarValue::TimestampMicrosecond(Some(x), _) => Some((*x, *x)),
        ScalarValue::TimestampNanosecond(Some(x), _) => {
            Some((x.div_euclid(1_000), (x + 999).div_euclid(1_000)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(us: i64) -> Expr {
        Expr::Literal(ScalarValue::TimestampMicrosecond(Some(us), None), None)
    }

    #[test]
    fn conjuncts_narrow_every_bound() {
        let b = ScanBounds::from_filters(
            &[
                col("_partition").eq(lit(2i32)),
                col("_offset")
                    .gt_eq(lit(10i64))
                    .and(col("_offset").lt(lit(20i64))),
                col("ts").gt(ts(1_000)),
                lit(5i64).lt_eq(col("_offset")),
                col("_timestamp").lt(ts(9_000)),
            ],
            Some("ts"),
        );
        assert_eq!(b.partitions, Some(BTreeSet::from([2])));
        assert_eq!(b.offsets, 10..20);
        assert_eq!(b.event_time, Some(1_000..i64::MAX));
        assert_eq!(b.append_time, Some(i64::MIN..9_000));
        assert!(!b.is_empty());
    }

    #[test]
    fn in_lists_between_and_contradictions() {
        let b = ScanBounds::from_filters(
            &[
                col("_partition").in_list(vec![lit(1i32), lit(3i32)], false),
                col("_offset").between(lit(3i64), lit(7i64)),
            ],
            None,
        );
        assert_eq!(b.partitions, Some(BTreeSet::from([1, 3])));
        assert_eq!(b.offsets, 3..8);
        let b = ScanBounds::from_filters(
            &[
                col("_partition").eq(lit(1i32)),
                col("_partition").eq(lit(2i32)),
            ],
            None,
        );
        assert!(b.is_empty());
        // Not understood: no narrowing.
        let b = ScanBounds::from_filters(&[col("_offset").not_eq(lit(1i64))], None);
        assert_eq!(b, ScanBounds::default());
    }
}
