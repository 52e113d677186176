//! What a dataflow computes and where it runs, as the SQL layer hands it
//! over: logical plans over streams and the layout of an aggregate's state.
//! The engine makes no decision about SQL; it instantiates a
//! [`Description`] at a [`Placement`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use streamhouse_log::{StreamInfo, ViewCheckpoint};

use super::topn::TopNDescription;
use crate::aggregate::{Final, Merge, Sessions, ValueSet, Windowing};

/// When a windowed dataflow emits a window's row into its changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Once, when the watermark passes the window's end.
    OnClose,
    /// At every change, as a retraction of the old row and the new row.
    OnUpdate,
}

/// The watermark delay of each input, in order, when every input has an
/// event time; `None` otherwise. The one place that decides whether a
/// dataflow over `inputs` has a watermark (and so whether its windows
/// close): the SQL layer asks it before choosing windowed emission, the
/// engine before building watermarks.
pub fn watermark_delays(inputs: &[Arc<StreamInfo>]) -> Option<Vec<Duration>> {
    inputs
        .iter()
        .map(|i| i.spec.event_time.as_ref().map(|et| et.watermark_delay))
        .collect()
}

/// A continuous query, compiled.
pub struct Description {
    /// The streams it reads, each once, in the order its progress records
    /// them.
    pub inputs: Vec<Arc<StreamInfo>>,
    pub shape: Shape,
    pub emit: Emit,
    /// `op`, then the output columns (see [`changes_schema`](super::changes::changes_schema)).
    pub changes_schema: SchemaRef,
    /// Idle timeout of input partitions for the watermark.
    pub idle_timeout: Duration,
}

/// The two kinds of dataflow.
pub enum Shape {
    /// No aggregate: `plan` runs over each step's new rows (its stream
    /// scans switched to offset ranges); reading the output runs `read`
    /// over the log.
    Pipeline {
        plan: LogicalPlan,
        read: LogicalPlan,
        /// The rows end with a sign column (it reads a changelog with
        /// updates).
        signed: bool,
        /// A top-N over the plan's rows (then signed), and the plan above
        /// it.
        top_n: Option<TopNDescription>,
    },
    Aggregate(AggregateDescription),
}

/// An aggregate dataflow: a stateless pipeline below one aggregate whose
/// functions are split into mergeable components.
pub struct AggregateDescription {
    /// The whole query: state rows become output rows by running it with
    /// `agg` replaced by them.
    pub plan: LogicalPlan,
    /// The query's one aggregate (its input is the pipeline).
    pub agg: Aggregate,
    /// Per group, what a step computes over its new rows (named
    /// `__component{i}`).
    pub components: Vec<Expr>,
    /// How each component merges into the stored one.
    pub merges: Vec<Merge>,
    /// How each aggregate's value comes out of the components.
    pub finals: Vec<Final>,
    /// Per aggregate over a group's value set (`count(DISTINCT x)`, and
    /// `min`/`max` over signed rows): its component, `x` and what it is.
    pub distinct: Vec<(usize, Expr, ValueSet)>,
    /// Over signed rows: the component counting a group's rows (a group
    /// at zero is gone).
    pub rows: Option<usize>,
    pub sessions: Option<Sessions>,
    /// Grouped by a window that closes with the watermark.
    pub windowing: Option<Windowing>,
}

/// Where a dataflow's changes go.
pub enum Output {
    /// A changelog stream (stored views).
    Changelog(Arc<StreamInfo>),
    /// A push query's client; a closed channel ends the dataflow.
    Channel(tokio::sync::mpsc::Sender<arrow::array::RecordBatch>),
}

/// Where a dataflow's state lives, and what to restore it from.
pub struct Placement {
    /// Local directory of its state store.
    pub dir: PathBuf,
    /// This incarnation's id (names its state objects and its producer).
    pub dataflow: String,
    /// The checkpoint to resume from; none: start from the beginning.
    pub restore: Option<ViewCheckpoint>,
    /// How often the state is checkpointed while it changes.
    pub checkpoint_interval: Duration,
    /// Where changes go; none: nowhere (the output is only read).
    pub output: Option<Output>,
    /// The epoch of this agent's lease: checkpoints and changelog appends
    /// carry it, and are refused once it is superseded.
    pub epoch: u64,
}
