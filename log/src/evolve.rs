//! How a stream's schema changes, and how rows written with one version of
//! it are read through another.
//!
//! Every declared column has a *field id* that no later version reuses: a
//! column keeps its id when it is renamed or widened, a dropped column's id
//! is retired, and a column added again under an old name gets a new one.
//! Ids live in the field metadata ([`FIELD_ID_KEY`]) of each schema
//! version, and so in the schema every chunk carries; the schema keeps the
//! next id to hand out ([`NEXT_FIELD_ID_KEY`]). Before a stream's first
//! change its fields carry no ids and a column's id is its position plus
//! one (versions before ids could only append columns, so positions never
//! moved).
//!
//! Reading a chunk of another version ([`through`]) matches columns by id:
//! a column the chunk lacks reads as its default or NULL, a widened one is
//! cast, a dropped or renamed one is simply not matched by name. Chunks are
//! never rewritten.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{LogError, Result};
use crate::stream::{StreamSpec, default_array};

/// Field metadata: a column's id (decimal).
pub const FIELD_ID_KEY: &str = "streamhouse.field_id";
/// Schema metadata: the next field id to hand out (decimal).
pub const NEXT_FIELD_ID_KEY: &str = "streamhouse.next_field_id";

/// Schema metadata keys under this prefix are properties others may set
/// ([`SchemaChange::SetProperty`]); the log's own keys are not.
pub const PROPERTY_PREFIX: &str = "streamhouse.property.";

/// One change of a stream's declared columns.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaChange {
    /// A column after the others (its default, if any, in its metadata).
    AddColumn(Field),
    /// Hidden from reads of later versions; the rows keep it.
    DropColumn(String),
    RenameColumn {
        from: String,
        to: String,
    },
    /// A widening of `column`'s type to `to`'s (name ignored); field
    /// metadata other than the id is taken from `to`.
    AlterType {
        column: String,
        to: Field,
    },
    /// The column may hold NULL from now on.
    DropNotNull(String),
    /// A property of the stream's schema (its metadata), no column
    /// changed: what a stream that follows a registered subject records of
    /// the version it follows.
    SetProperty {
        key: String,
        value: String,
    },
}

impl SchemaChange {
    /// The column the change is about (none for a property).
    pub fn column(&self) -> Option<&str> {
        match self {
            SchemaChange::AddColumn(f) => Some(f.name()),
            SchemaChange::DropColumn(c)
            | SchemaChange::DropNotNull(c)
            | SchemaChange::AlterType { column: c, .. } => Some(c),
            SchemaChange::RenameColumn { from, .. } => Some(from),
            SchemaChange::SetProperty { .. } => None,
        }
    }
}

/// Id of field `i` of a declared schema.
pub fn field_id(schema: &Schema, i: usize) -> u32 {
    id_of(schema.field(i)).unwrap_or(i as u32 + 1)
}

fn id_of(field: &Field) -> Option<u32> {
    field.metadata().get(FIELD_ID_KEY)?.parse().ok()
}

/// The next version of `spec`'s schema after `change`, every field with
/// its id; a change the log does not allow is [`LogError::Unsupported`]
/// naming the rule, a bad one [`LogError::InvalidSpec`].
pub fn apply(spec: &StreamSpec, change: &SchemaChange) -> Result<Schema> {
    let (mut fields, mut next) = with_ids(&spec.schema);
    let position = |name: &str| fields.iter().position(|f| f.name() == name);
    let existing = |name: &str| {
        position(name).ok_or_else(|| {
            LogError::InvalidSpec(format!(
                "column \"{name}\" does not exist in stream \"{}\"",
                spec.name
            ))
        })
    };
    let unsupported = |rule: String| LogError::Unsupported(rule);
    let pinned = |name: &str, what: &str| -> Result<()> {
        if spec.key.iter().any(|k| k == name) {
            return Err(unsupported(format!(
                "cannot {what} \"{name}\": it is a key column of stream \"{}\", and rows are \
                 placed in partitions by its values",
                spec.name
            )));
        }
        if spec.event_time.as_ref().is_some_and(|e| e.column == name) {
            return Err(unsupported(format!(
                "cannot {what} \"{name}\": it is the event-time column of stream \"{}\"",
                spec.name
            )));
        }
        Ok(())
    };
    match change {
        SchemaChange::AddColumn(field) => {
            if position(field.name()).is_some() {
                return Err(LogError::InvalidSpec(format!(
                    "column \"{}\" already exists in stream \"{}\"",
                    field.name(),
                    spec.name
                )));
            }
            if default_array(field, 1)?.is_none() && !field.is_nullable() {
                return Err(LogError::InvalidSpec(format!(
                    "column \"{}\" may not be NULL, so it needs a DEFAULT for the rows already \
                     written",
                    field.name()
                )));
            }
            fields.push(with_id(field.clone(), next));
            next += 1;
        }
        SchemaChange::DropColumn(name) => {
            let i = existing(name)?;
            pinned(name, "drop column")?;
            if fields.len() == 1 {
                return Err(unsupported(format!(
                    "cannot drop \"{name}\": it is the only column of stream \"{}\"",
                    spec.name
                )));
            }
            fields.remove(i);
        }
        SchemaChange::RenameColumn { from, to } => {
            let i = existing(from)?;
            pinned(from, "rename column")?;
            if position(to).is_some() {
                return Err(LogError::InvalidSpec(format!(
                    "column \"{to}\" already exists in stream \"{}\"",
                    spec.name
                )));
            }
            let old = &fields[i];
            fields[i] = Field::new(to.clone(), old.data_type().clone(), old.is_nullable())
                .with_metadata(old.metadata().clone());
        }
        SchemaChange::AlterType { column, to } => {
            let i = existing(column)?;
            pinned(column, "change the type of column")?;
            let old = &fields[i];
            if !widens(old.data_type(), to.data_type()) {
                return Err(unsupported(format!(
                    "cannot change column \"{column}\" from {} to {}: only widening changes are \
                     allowed (smallint → integer → bigint, integers → numeric or double, real → \
                     double, numeric to more digits), since rows already written are read as the \
                     new type",
                    old.data_type(),
                    to.data_type()
                )));
            }
            let id = field_id_of(old);
            let mut metadata = to.metadata().clone();
            // The default stays (it is what older rows read as).
            if let Some(d) = old.metadata().get(crate::stream::DEFAULT_KEY) {
                metadata.insert(crate::stream::DEFAULT_KEY.to_string(), d.clone());
            }
            let field = Field::new(column.clone(), to.data_type().clone(), old.is_nullable())
                .with_metadata(metadata);
            default_array(&field, 1)?;
            fields[i] = with_id(field, id);
        }
        SchemaChange::DropNotNull(name) => {
            let i = existing(name)?;
            pinned(name, "allow NULL in")?;
            let old = &fields[i];
            fields[i] = old.as_ref().clone().with_nullable(true);
        }
        SchemaChange::SetProperty { .. } => {}
    }
    let mut metadata = spec.schema.metadata().clone();
    if let SchemaChange::SetProperty { key, value } = change {
        if key.starts_with("streamhouse.") && !key.starts_with(PROPERTY_PREFIX) {
            return Err(LogError::InvalidSpec(format!(
                "schema property \"{key}\" is the log's own"
            )));
        }
        metadata.insert(key.clone(), value.clone());
    }
    metadata.insert(NEXT_FIELD_ID_KEY.to_string(), next.to_string());
    let schema = Schema::new_with_metadata(fields, metadata);
    StreamSpec {
        schema: Arc::new(schema.clone()),
        ..spec.clone()
    }
    .validate()?;
    Ok(schema)
}

/// The fields of `schema`, each with its id, and the next id to hand out.
fn with_ids(schema: &Schema) -> (Vec<Field>, u32) {
    let fields: Vec<Field> = (0..schema.fields().len())
        .map(|i| with_id(schema.field(i).clone(), field_id(schema, i)))
        .collect();
    let max = fields.iter().map(field_id_of).max().unwrap_or(0);
    let next = schema
        .metadata()
        .get(NEXT_FIELD_ID_KEY)
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0)
        .max(max + 1);
    (fields, next)
}

fn field_id_of(field: &Field) -> u32 {
    id_of(field).unwrap_or(0)
}

fn with_id(field: Field, id: u32) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(FIELD_ID_KEY.to_string(), id.to_string());
    field.with_metadata(metadata)
}

/// Whether every value of type `from` is a value of type `to`, so rows
/// written as `from` can be read as `to`.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType as D;
    let int_digits = |t: &DataType| match t {
        D::Int8 | D::UInt8 => Some(3),
        D::Int16 | D::UInt16 => Some(5),
        D::Int32 | D::UInt32 => Some(10),
        D::Int64 => Some(19),
        D::UInt64 => Some(20),
        _ => None,
    };
    match (from, to) {
        (a, b) if a == b => true,
        (D::Int8, D::Int16 | D::Int32 | D::Int64 | D::Float32 | D::Float64) => true,
        (D::Int16, D::Int32 | D::Int64 | D::Float32 | D::Float64) => true,
        (D::Int32, D::Int64 | D::Float64) => true,
        (D::UInt8, D::Int16 | D::Int32 | D::Int64 | D::Float32 | D::Float64) => true,
        (D::UInt16, D::Int32 | D::Int64 | D::Float32 | D::Float64) => true,
        (D::UInt32, D::Int64 | D::Float64) => true,
        (D::Float16, D::Float32 | D::Float64) | (D::Float32, D::Float64) => true,
        (D::Utf8, D::LargeUtf8) | (D::Binary, D::LargeBinary) => true,
        (D::Decimal128(p1, s1), D::Decimal128(p2, s2)) => {
            s2 >= s1 && (*p2 as i16 - *s2 as i16) >= (*p1 as i16 - *s1 as i16)
        }
        (int, D::Decimal128(p, s)) => {
            int_digits(int).is_some_and(|d| *s >= 0 && (*p as i16 - *s as i16) >= d)
        }
        _ => false,
    }
}

/// The `need` columns (indices into `read`'s declared columns; `read`'s
/// length stands for `_timestamp`) of a chunk batch written with another
/// version, whose last column is `_timestamp`. Columns are matched by id;
/// one the chunk lacks reads as `read`'s default or NULL, one of a narrower
/// type is cast.
pub fn through(
    read: &Schema,
    need: &[usize],
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, ThroughError> {
    let schema = batch.schema();
    let width = schema
        .fields()
        .len()
        .checked_sub(1)
        .ok_or_else(|| ThroughError::Corrupt("a chunk without its _timestamp column".into()))?;
    let declared = Schema::new(schema.fields()[..width].to_vec());
    let by_id = ids_of(&declared);
    let mut fields = Vec::with_capacity(need.len());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(need.len());
    for &i in need {
        if i == read.fields().len() {
            fields.push(schema.field(width).clone());
            cols.push(batch.column(width).clone());
            continue;
        }
        let (field, col) = column_as(read, i, &by_id, batch)?;
        fields.push(field);
        cols.push(col);
    }
    let opts = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), cols, &opts)
        .map_err(|e| ThroughError::Corrupt(e.to_string()))
}

/// Rows made for an older version of a stream's declared columns (`batch`,
/// its schema that version's), as rows of version `to`: what a write
/// planned before a change appends after it. A column added since takes
/// its default or NULL — and one that may not be NULL and has no default
/// is an error, as is a value that does not fit.
pub fn rows_as(to: &Schema, batch: &RecordBatch) -> Result<RecordBatch> {
    let by_id = ids_of(&batch.schema());
    let mut cols = Vec::with_capacity(to.fields().len());
    for i in 0..to.fields().len() {
        let (field, col) = column_as(to, i, &by_id, batch).map_err(|e| match e {
            ThroughError::Corrupt(m) | ThroughError::Narrower(m) => LogError::InvalidArgument(m),
        })?;
        if !to.field(i).is_nullable() && col.null_count() > 0 {
            return Err(LogError::InvalidArgument(format!(
                "column \"{}\" may not be NULL",
                field.name()
            )));
        }
        cols.push(col);
    }
    let opts = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(to.clone()),
        cols,
        &opts,
    )?)
}

fn ids_of(declared: &Schema) -> HashMap<u32, usize> {
    (0..declared.fields().len())
        .map(|j| (field_id(declared, j), j))
        .collect()
}

/// Column `i` of `read` out of `batch` (whose declared columns `by_id`
/// indexes by field id): matched by id and cast, or its default or NULL.
fn column_as(
    read: &Schema,
    i: usize,
    by_id: &HashMap<u32, usize>,
    batch: &RecordBatch,
) -> std::result::Result<(Field, ArrayRef), ThroughError> {
    let n = batch.num_rows();
    let want = read.field(i);
    let Some(&j) = by_id.get(&field_id(read, i)) else {
        let col = default_array(want, n)
            .map_err(|e| ThroughError::Corrupt(e.to_string()))?
            .unwrap_or_else(|| arrow::array::new_null_array(want.data_type(), n));
        return Ok((want.clone().with_nullable(true), col));
    };
    let col = batch.column(j);
    let col = if col.data_type() == want.data_type() {
        col.clone()
    } else {
        arrow::compute::cast_with_options(
            col,
            want.data_type(),
            &CastOptions {
                safe: false,
                ..Default::default()
            },
        )
        .map_err(|e| {
            ThroughError::Narrower(format!(
                "column \"{}\" ({}) cannot be read as {} \"{}\": {e}",
                batch.schema().field(j).name(),
                col.data_type(),
                want.data_type(),
                want.name()
            ))
        })?
    };
    let nullable = want.is_nullable() || col.null_count() > 0;
    Ok((want.clone().with_nullable(nullable), col))
}

/// Why a chunk cannot be read through a version.
#[derive(Debug, Clone, PartialEq)]
pub enum ThroughError {
    /// The chunk is not what its version says.
    Corrupt(String),
    /// The chunk holds a value the (older, narrower) version cannot: the
    /// read was planned before a column was widened.
    Narrower(String),
}

#[cfg(test)]
mod tests;
