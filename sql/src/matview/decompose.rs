//! An aggregate's functions as mergeable components: what each step
//! computes per group, how it merges into the state and how the value
//! comes out (count and sum add, min/max compare, avg is a sum and a count,
//! any other function keeps its partial state). Over signed rows (a view
//! over a view with updates) only functions that can take back a row are
//! possible, weighted by the sign.

use arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{Expr, cast, lit, when};
use streamhouse_streams::dataflow::changes::SIGN;
use streamhouse_streams::dataflow::partial;
use streamhouse_streams::{Final, Merge, ValueSet};

use super::unsupported;
use crate::error::Result;

/// The aggregate's functions as mergeable components.
#[derive(Default)]
pub(super) struct Decomposed {
    pub components: Vec<Expr>,
    pub merges: Vec<Merge>,
    pub finals: Vec<Final>,
    /// Those over a group's value set: (component, argument, kind).
    pub distinct: Vec<(usize, Expr, ValueSet)>,
    /// Over rows with a [`SIGN`]: the component counting a group's rows.
    pub rows: Option<usize>,
}

/// `signed`: the input rows carry a [`SIGN`] (deletes retract); only
/// aggregates that can subtract are possible then.
pub(super) fn decompose(aggr: &[Expr], input: &DFSchema, signed: bool) -> Result<Decomposed> {
    let mut d = Decomposed::default();
    for e in aggr {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(function) = inner else {
            return Err(unsupported(format!("the aggregate {e}")));
        };
        let AggregateFunction { func, params } = function;
        let name = func.name().to_lowercase();
        if !params.order_by.is_empty() {
            return Err(unsupported(format!("{} with ORDER BY", func.name())));
        }
        // A FILTER applies to each step's rows (a deleted row is taken
        // back where its insert was counted, as both have the same
        // values): the components of count, sum, min, max and avg carry it,
        // and a value set's argument is NULL (not kept) where it is false.
        let filterable = matches!(
            name.as_str(),
            "count" | "sum" | "min" | "max" | "avg" | "mean"
        );
        if params.filter.is_some() && !filterable {
            return Err(unsupported(format!(
                "{} with FILTER (supported on count, count(DISTINCT …), sum, min, max and avg)",
                func.name()
            )));
        }
        if signed {
            d.retracting(&name, inner, params)?;
            continue;
        }
        let Decomposed {
            components,
            merges,
            finals,
            distinct,
            ..
        } = &mut d;
        if params.distinct {
            if name != "count" || params.args.len() != 1 {
                return Err(unsupported(format!(
                    "{}(DISTINCT …) (count(DISTINCT x) of one column is supported)",
                    func.name()
                )));
            }
            // The step counts values new to the group (kept in the state);
            // the aggregate only holds the place (always 0).
            finals.push(Final::Same {
                component: components.len(),
                is_count: true,
            });
            distinct.push((
                components.len(),
                gated(params.args[0].clone(), params)?,
                ValueSet::CountDistinct,
            ));
            merges.push(Merge::Sum);
            components.push(count(Expr::Literal(
                datafusion::common::ScalarValue::Int64(None),
                None,
            )));
            continue;
        }
        match name.as_str() {
            "count" | "sum" | "min" | "max" => {
                finals.push(Final::Same {
                    component: components.len(),
                    is_count: name == "count",
                });
                merges.push(match name.as_str() {
                    "min" => Merge::Min,
                    "max" => Merge::Max,
                    _ => Merge::Sum,
                });
                components.push(inner.clone());
            }
            "avg" | "mean" => {
                let arg = params
                    .args
                    .first()
                    .cloned()
                    .ok_or_else(|| unsupported("avg without an argument"))?;
                finals.push(Final::Avg {
                    sum: components.len(),
                    count: components.len() + 1,
                });
                let filtered = |e: Expr| match e {
                    Expr::AggregateFunction(mut f) => {
                        f.params.filter = params.filter.clone();
                        Expr::AggregateFunction(f)
                    }
                    other => other,
                };
                components.push(filtered(sum(cast(arg.clone(), DataType::Float64))));
                components.push(filtered(count(arg)));
                merges.extend([Merge::Sum, Merge::Sum]);
            }
            _ => {
                // Any other function keeps its own partial state.
                let (state, merger) = partial::partial_state(function, input)?;
                finals.push(Final::Partial {
                    component: components.len(),
                    state: merger.clone(),
                });
                merges.push(Merge::Partial(merger));
                components.push(state);
            }
        }
    }
    if signed {
        d.rows = Some(d.components.len());
        d.components
            .push(sum(Expr::Column(Column::from_name(SIGN))));
        d.merges.push(Merge::Sum);
    }
    // Name the components so the delta plan's schema is unambiguous.
    d.components = std::mem::take(&mut d.components)
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("__component{i}")))
        .collect();
    Ok(d)
}

/// An aggregate's argument where its FILTER holds, NULL elsewhere.
fn gated(arg: Expr, params: &AggregateFunctionParams) -> Result<Expr> {
    Ok(match &params.filter {
        Some(filter) => when(filter.as_ref().clone(), arg).end()?,
        None => arg,
    })
}

impl Decomposed {
    /// An aggregate over rows with a [`SIGN`]: counts and sums weighted by
    /// it, so that a delete takes back what its insert added; `min`, `max`
    /// and `count(DISTINCT …)` over the group's values with their counts.
    fn retracting(
        &mut self,
        name: &str,
        call: &Expr,
        params: &AggregateFunctionParams,
    ) -> Result<()> {
        let sign = Expr::Column(Column::from_name(SIGN));
        let refuse = || {
            unsupported(format!(
                "{name}{} over a view with updates or an outer, semi or anti join (count, \
                 count(DISTINCT x), sum, avg, min and max can take back deleted rows)",
                if params.distinct {
                    "(DISTINCT …)"
                } else {
                    "()"
                }
            ))
        };
        if params.args.len() > 1 {
            return Err(refuse());
        }
        let set = match (name, params.distinct) {
            ("count", true) => Some(ValueSet::CountDistinct),
            ("min", _) => Some(ValueSet::Min),
            ("max", _) => Some(ValueSet::Max),
            (_, true) => return Err(refuse()),
            _ => None,
        };
        let arg = params
            .args
            .first()
            .map(|a| gated(a.clone(), params))
            .transpose()?;
        if let (Some(set), Some(arg)) = (set, arg.clone()) {
            // The step fills the component from the value set; the
            // aggregate only holds its place (and type).
            let at = self.components.len();
            self.distinct.push((at, arg, set));
            self.finals.push(Final::Same {
                component: at,
                is_count: set == ValueSet::CountDistinct,
            });
            if set == ValueSet::CountDistinct {
                self.merges.push(Merge::Sum);
                self.components.push(count(Expr::Literal(
                    datafusion::common::ScalarValue::Int64(None),
                    None,
                )));
            } else {
                self.merges.push(Merge::Replace);
                self.components.push(call.clone());
            }
            return Ok(());
        }
        // How many non-NULL values (rows, for count(*)) the FILTER lets in.
        let counted = match (&arg, &params.filter) {
            (Some(arg), _) => when(arg.clone().is_null(), lit(0i64)).otherwise(sign.clone())?,
            (None, Some(filter)) => {
                when(filter.as_ref().clone(), sign.clone()).otherwise(lit(0i64))?
            }
            (None, None) => sign.clone(),
        };
        let at = self.components.len();
        match name {
            "count" => {
                self.finals.push(Final::Same {
                    component: at,
                    is_count: true,
                });
                self.components.push(sum(counted));
                self.merges.push(Merge::Sum);
            }
            "sum" | "avg" | "mean" => {
                let arg = arg.ok_or_else(refuse)?;
                let (value, last) = if name == "sum" {
                    (
                        arg,
                        Final::SumIfAny {
                            sum: at,
                            count: at + 1,
                        },
                    )
                } else {
                    (
                        cast(arg, DataType::Float64),
                        Final::Avg {
                            sum: at,
                            count: at + 1,
                        },
                    )
                };
                self.finals.push(last);
                self.components.push(sum(value * sign));
                self.components.push(sum(counted));
                self.merges.extend([Merge::Sum, Merge::Sum]);
            }
            _ => return Err(refuse()),
        }
        Ok(())
    }
}
