//! Any aggregate function as view state. A view's step computes, per
//! group, the function's *partial state* (what DataFusion exchanges
//! between the partial and final phases of an aggregation) as one struct
//! column — [`partial_state`] wraps the function so that its value is
//! that state — and the view's state merges stored states with new ones
//! and turns them into values with the function's own accumulators
//! ([`StateMerger`]).

use std::sync::Arc;

use crate::aggregate::PartialState;
use crate::error::StreamsError;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StructArray, new_empty_array};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, ExprSchemable, GroupsAccumulator,
    Signature,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;

/// `f(args)` rewritten so that its value is `f`'s partial state over the
/// rows, plus the merger of such states. The coerced argument fields are
/// computed against `input`, the aggregate's input schema.
pub fn partial_state(
    aggregate: &AggregateFunction,
    input: &DFSchema,
) -> DfResult<(Expr, Arc<StateMerger>)> {
    let inner = aggregate.func.clone();
    let fields = aggregate
        .params
        .args
        .iter()
        .map(|a| Ok(a.to_field(input)?.1))
        .collect::<DfResult<Vec<_>>>()?;
    let arg_fields = fields_with_udf(&fields, inner.as_ref())?;
    let wrapper = PartialStateUdaf {
        name: format!("partial_state_{}", inner.name()),
        inner: inner.clone(),
    };
    let state_fields = wrapper.struct_fields(&arg_fields)?;
    let merger = StateMerger::new(
        inner,
        arg_fields,
        state_fields,
        aggregate.params.null_treatment
            == Some(datafusion::logical_expr::expr::NullTreatment::IgnoreNulls),
    )?;
    let expr = Expr::AggregateFunction(AggregateFunction {
        func: Arc::new(AggregateUDF::new_from_impl(wrapper)),
        params: aggregate.params.clone(),
    });
    Ok((expr, Arc::new(merger)))
}

/// An aggregate function whose value is another one's partial state.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PartialStateUdaf {
    name: String,
    inner: Arc<AggregateUDF>,
}

impl PartialStateUdaf {
    /// The inner function's state fields (all nullable, so that a group
    /// without state can be NULL).
    fn struct_fields(&self, arg_fields: &[FieldRef]) -> DfResult<Fields> {
        let return_field = self.inner.return_field(arg_fields)?;
        let fields = self.inner.state_fields(StateFieldsArgs {
            name: &self.name,
            input_fields: arg_fields,
            return_field,
            ordering_fields: &[],
            is_distinct: false,
        })?;
        Ok(fields
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect())
    }
}

impl AggregateUDFImpl for PartialStateUdaf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        let fields: Vec<FieldRef> = arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| Arc::new(Field::new(format!("a{i}"), t.clone(), true)))
            .collect();
        Ok(DataType::Struct(self.struct_fields(&fields)?))
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> DfResult<FieldRef> {
        Ok(Arc::new(Field::new(
            &self.name,
            DataType::Struct(self.struct_fields(arg_fields)?),
            true,
        )))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let fields = self.struct_fields(args.expr_fields)?;
        let inner = self.inner.accumulator(AccumulatorArgs {
            return_field: self.inner.return_field(args.expr_fields)?,
            ..args
        })?;
        Ok(Box::new(StateAccumulator { inner, fields }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        match self.inner.return_field(args.expr_fields) {
            Ok(return_field) => self.inner.groups_accumulator_supported(AccumulatorArgs {
                return_field,
                ..args
            }),
            Err(_) => false,
        }
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        let fields = self.struct_fields(args.expr_fields)?;
        let inner = self.inner.create_groups_accumulator(AccumulatorArgs {
            return_field: self.inner.return_field(args.expr_fields)?,
            ..args
        })?;
        Ok(Box::new(StateGroupsAccumulator { inner, fields }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        self.inner.state_fields(StateFieldsArgs {
            return_field: self.inner.return_field(args.input_fields)?,
            ..args
        })
    }
}

/// The inner accumulator, evaluating to its state.
#[derive(Debug)]
struct StateAccumulator {
    inner: Box<dyn Accumulator>,
    fields: Fields,
}

impl Accumulator for StateAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let columns = self
            .inner
            .state()?
            .into_iter()
            .map(|v| v.to_array())
            .collect::<DfResult<Vec<_>>>()?;
        let columns = cast_to(&self.fields, columns)?;
        Ok(ScalarValue::Struct(Arc::new(StructArray::try_new(
            self.fields.clone(),
            columns,
            None,
        )?)))
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.inner.merge_batch(states)
    }
}

/// The inner groups accumulator, evaluating to its states. The view's
/// state merges with the same kind of accumulator the step used (the two
/// kinds of some functions keep different states).
struct StateGroupsAccumulator {
    inner: Box<dyn GroupsAccumulator>,
    fields: Fields,
}

impl GroupsAccumulator for StateGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let columns = cast_to(&self.fields, self.inner.state(emit_to)?)?;
        Ok(Arc::new(StructArray::try_new(
            self.fields.clone(),
            columns,
            None,
        )?))
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}

/// Columns cast to the types of `fields` where they differ (a state's
/// scalars can come back with a narrower or wider type).
fn cast_to(fields: &Fields, columns: Vec<ArrayRef>) -> DfResult<Vec<ArrayRef>> {
    fields
        .iter()
        .zip(columns)
        .map(|(f, c)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                Ok(arrow::compute::cast(&c, f.data_type())?)
            }
        })
        .collect()
}

/// Merges and finishes one aggregate function's partial states.
#[derive(Debug)]
pub struct StateMerger {
    func: Arc<AggregateUDF>,
    arg_fields: Vec<FieldRef>,
    return_field: FieldRef,
    schema: Schema,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    state_fields: Fields,
    ignore_nulls: bool,
}

fn streams_err(e: datafusion::error::DataFusionError) -> StreamsError {
    StreamsError::Internal(format!("aggregate state: {e}"))
}

impl StateMerger {
    fn new(
        func: Arc<AggregateUDF>,
        arg_fields: Vec<FieldRef>,
        state_fields: Fields,
        ignore_nulls: bool,
    ) -> DfResult<StateMerger> {
        let return_field = func.return_field(&arg_fields)?;
        let schema = Schema::new(arg_fields.clone());
        let exprs = arg_fields
            .iter()
            .enumerate()
            .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        Ok(StateMerger {
            func,
            arg_fields,
            return_field,
            schema,
            exprs,
            state_fields,
            ignore_nulls,
        })
    }

    fn args(&self) -> AccumulatorArgs<'_> {
        AccumulatorArgs {
            return_field: self.return_field.clone(),
            schema: &self.schema,
            ignore_nulls: self.ignore_nulls,
            order_bys: &[],
            is_reversed: false,
            name: self.func.name(),
            is_distinct: false,
            exprs: &self.exprs,
            expr_fields: &self.arg_fields,
        }
    }

    /// One accumulator for all groups, when the function has one.
    fn groups_accumulator(&self) -> DfResult<Option<Box<dyn GroupsAccumulator>>> {
        if self.func.groups_accumulator_supported(self.args()) {
            Ok(Some(self.func.create_groups_accumulator(self.args())?))
        } else {
            Ok(None)
        }
    }

    /// Row by row, an accumulator that merged the valid states of `inputs`
    /// at that row is handed to `finish`.
    fn per_row(
        &self,
        inputs: &[&StructArray],
        mut finish: impl FnMut(&mut dyn Accumulator) -> DfResult<()>,
    ) -> DfResult<()> {
        let rows = inputs.first().map_or(0, |s| s.len());
        for row in 0..rows {
            let mut acc = self.func.accumulator(self.args())?;
            for s in inputs {
                if s.is_valid(row) {
                    let state: Vec<ArrayRef> =
                        s.columns().iter().map(|c| c.slice(row, 1)).collect();
                    acc.merge_batch(&state)?;
                }
            }
            finish(acc.as_mut())?;
        }
        Ok(())
    }

    /// Merges the valid rows of each input into group `row`.
    fn merge_groups(
        acc: &mut dyn GroupsAccumulator,
        inputs: &[&StructArray],
        rows: usize,
    ) -> DfResult<()> {
        for s in inputs {
            // Even with no valid row: the call sizes the accumulator to
            // `rows` groups.
            let valid: Vec<usize> = (0..rows).filter(|&r| s.is_valid(r)).collect();
            let indices =
                arrow::array::UInt32Array::from_iter_values(valid.iter().map(|&r| r as u32));
            let columns = s
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c, &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            acc.merge_batch(&columns, &valid, rows)?;
        }
        Ok(())
    }

    fn merge_states(&self, inputs: &[&StructArray]) -> DfResult<ArrayRef> {
        let rows = inputs.first().map_or(0, |s| s.len());
        if rows == 0 {
            return Ok(new_empty_array(&DataType::Struct(
                self.state_fields.clone(),
            )));
        }
        let columns = if let Some(mut acc) = self.groups_accumulator()? {
            Self::merge_groups(acc.as_mut(), inputs, rows)?;
            acc.state(EmitTo::All)?
        } else {
            let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.state_fields.len()];
            self.per_row(inputs, |acc| {
                for (column, v) in values.iter_mut().zip(acc.state()?) {
                    column.push(v);
                }
                Ok(())
            })?;
            values
                .into_iter()
                .map(ScalarValue::iter_to_array)
                .collect::<DfResult<Vec<_>>>()?
        };
        let columns = cast_to(&self.state_fields, columns)?;
        Ok(Arc::new(StructArray::try_new(
            self.state_fields.clone(),
            columns,
            None,
        )?))
    }

    fn finish_states(&self, state: &StructArray) -> DfResult<ArrayRef> {
        let rows = state.len();
        if rows == 0 {
            return Ok(new_empty_array(self.return_field.data_type()));
        }
        if let Some(mut acc) = self.groups_accumulator()? {
            Self::merge_groups(acc.as_mut(), &[state], rows)?;
            return acc.evaluate(EmitTo::All);
        }
        let mut values = Vec::with_capacity(rows);
        self.per_row(&[state], |acc| {
            values.push(acc.evaluate()?);
            Ok(())
        })?;
        ScalarValue::iter_to_array(values)
    }
}

impl PartialState for StateMerger {
    fn merge(&self, old: &ArrayRef, delta: &ArrayRef) -> crate::error::Result<ArrayRef> {
        self.merge_states(&[old.as_struct(), delta.as_struct()])
            .map_err(streams_err)
    }

    fn finish(&self, state: &ArrayRef) -> crate::error::Result<ArrayRef> {
        self.finish_states(state.as_struct()).map_err(streams_err)
    }
}
