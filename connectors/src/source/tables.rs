//! Upstream tables downstream: which tables a publication holds, what each
//! becomes — a table of the same primary key when it has one (its log's
//! rows: the columns and `__deleted`), else a changelog stream (the
//! columns, `_op` and `_lsn`) — with its columns' types mapped to Arrow,
//! and rows of text values turned into batches of either.
//!
//! Types: `boolean`, `smallint`/`integer`/`bigint`, `real`/`double
//! precision`, `numeric(p, s)` (p ≤ 38), `date`, `timestamp [with time
//! zone]` (microseconds; with time zone as UTC) and `bytea` keep their
//! type; every other type (text, varchar, uuid, json, unconstrained
//! numeric, arrays, …) arrives as its text.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::postgres::PgConnection;
use streamhouse_log::{TABLE_DELETED_COLUMN, TABLE_PREFIX};

use super::pgoutput::Value;
use super::{Result, SourceError};

/// The column that says what a row is: `insert`, `update`, `delete`,
/// `truncate`.
pub const OP_COLUMN: &str = "_op";
/// The column holding the upstream commit's LSN (0 for snapshot rows).
pub const LSN_COLUMN: &str = "_lsn";

/// An upstream table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// `schema.table`.
    pub name: String,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the primary key.
    pub key: bool,
}

impl Table {
    /// The table's columns as fields: the key's NOT NULL, the others
    /// nullable (a delete carries only the key).
    pub fn fields(&self) -> Vec<Field> {
        self.columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.type_oid, c.type_modifier), !c.key))
            .collect()
    }

    /// A changelog stream's declared columns (for a table without a
    /// primary key): the table's, then `_op` and `_lsn`.
    pub fn schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self.fields();
        fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(LSN_COLUMN, DataType::Int64, false));
        Arc::new(Schema::new(fields))
    }

    /// The primary key's columns.
    pub fn key(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect()
    }

    /// The query that reads the table's rows as text, in column order.
    pub fn select_text(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{}::text", ident(&c.name)))
            .collect();
        let (schema, table) = self.name.split_once('.').unwrap_or(("public", &self.name));
        format!(
            "SELECT {} FROM {}.{}",
            columns.join(", "),
            ident(schema),
            ident(table)
        )
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The Arrow type a PostgreSQL type's values take in a stream.
pub fn arrow_type(oid: u32, modifier: i32) -> DataType {
    match oid {
        16 => DataType::Boolean,
        21 => DataType::Int16,
        23 => DataType::Int32,
        20 => DataType::Int64,
        700 => DataType::Float32,
        701 => DataType::Float64,
        1082 => DataType::Date32,
        1114 => DataType::Timestamp(TimeUnit::Microsecond, None),
        1184 => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        17 => DataType::Binary,
        1700 if modifier >= 4 => {
            let precision = ((modifier - 4) >> 16) & 0xFFFF;
            let scale = (modifier - 4) & 0xFFFF;
            if (1..=38).contains(&precision) && scale <= precision {
                DataType::Decimal128(precision as u8, scale as i8)
            } else {
                DataType::Utf8
            }
        }
        _ => DataType::Utf8,
    }
}

/// The tables of `publication` (only `only` when not empty), with their
/// columns, by name.
pub async fn publication_tables(
    conn: &mut PgConnection,
    publication: &str,
    only: &[String],
) -> Result<Vec<Table>> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_publication WHERE pubname = $1")
        .bind(publication)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Err(SourceError::Invalid(format!(
            "PostgreSQL has no publication \"{publication}\" (CREATE PUBLICATION {publication} \
             FOR TABLE … upstream first)"
        )));
    }
    let rows = sqlx::query(
        "SELECT n.nspname || '.' || c.relname AS table_name, a.attname::text AS column_name, \
                a.atttypid::int8 AS type_oid, a.atttypmod AS type_modifier, \
                coalesce(a.attnum = ANY(i.indkey::int2[]), false) AS key \
         FROM pg_publication_tables pt \
         JOIN pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
              AND NOT a.attisdropped AND a.attgenerated = '' \
         LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
         WHERE pt.pubname = $1 \
         ORDER BY 1, a.attnum",
    )
    .bind(publication)
    .fetch_all(&mut *conn)
    .await?;
    let mut tables: Vec<Table> = Vec::new();
    for row in rows {
        let name: String = row.try_get("table_name")?;
        let column = Column {
            name: row.try_get("column_name")?,
            type_oid: row.try_get::<i64, _>("type_oid")? as u32,
            type_modifier: row.try_get("type_modifier")?,
            key: row.try_get("key")?,
        };
        match tables.last_mut() {
            Some(t) if t.name == name => t.columns.push(column),
            _ => tables.push(Table {
                name,
                columns: vec![column],
            }),
        }
    }
    if !only.is_empty() {
        if let Some(missing) = only.iter().find(|t| !tables.iter().any(|x| &x.name == *t)) {
            return Err(SourceError::Invalid(format!(
                "publication \"{publication}\" has no table {missing}"
            )));
        }
        tables.retain(|t| only.contains(&t.name));
    }
    if tables.is_empty() {
        return Err(SourceError::Invalid(format!(
            "publication \"{publication}\" has no tables"
        )));
    }
    Ok(tables)
}

/// Rows of one stream being gathered: each table column's text values,
/// with the change each makes, in the stream's column order. The change
/// goes into the columns the stream has, found by name (columns added
/// later come after them): a changelog stream's `_op` and `_lsn`, a table
/// log's `__deleted`.
pub struct Rows {
    schema: SchemaRef,
    /// Per table column ([`table_columns`]), in order.
    values: Vec<Vec<Option<String>>>,
    ops: Vec<&'static str>,
    lsns: Vec<i64>,
    /// Bytes of text held.
    pub bytes: usize,
}

impl Rows {
    pub fn new(schema: SchemaRef) -> Rows {
        let n = table_columns(&schema).count();
        Rows {
            schema,
            values: vec![Vec::new(); n],
            ops: Vec::new(),
            lsns: Vec::new(),
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds a row: `values[i]` is the value of the stream's `i`th table
    /// column (None: NULL or not sent; missing ones are NULL).
    pub fn push(&mut self, values: Vec<Option<String>>, op: &'static str, lsn: u64) {
        let values = values.into_iter().chain(std::iter::repeat(None));
        for (column, v) in self.values.iter_mut().zip(values) {
            self.bytes += v.as_ref().map_or(1, |s| s.len() + 1);
            column.push(v);
        }
        self.ops.push(op);
        self.lsns.push(lsn as i64);
    }

    /// The gathered rows as one batch of the stream's columns; empties
    /// the gathering.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut values = std::mem::take(&mut self.values).into_iter();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            columns.push(match field.name().as_str() {
                OP_COLUMN => Arc::new(StringArray::from_iter_values(self.ops.iter())),
                LSN_COLUMN => Arc::new(Int64Array::from(std::mem::take(&mut self.lsns))),
                TABLE_DELETED_COLUMN => Arc::new(BooleanArray::from_iter(
                    self.ops.iter().map(|op| Some(*op == "delete")),
                )),
                _ => typed(field, values.next().unwrap_or_default())?,
            });
        }
        self.ops.clear();
        self.lsns.clear();
        self.values = vec![Vec::new(); table_columns(&self.schema).count()];
        self.bytes = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// A stream's columns other than those saying what changed: the table's.
pub fn table_columns(schema: &Schema) -> impl Iterator<Item = &Field> {
    schema.fields().iter().map(|f| f.as_ref()).filter(|f| {
        f.name() != OP_COLUMN && f.name() != LSN_COLUMN && f.name() != TABLE_DELETED_COLUMN
    })
}

/// Where each of a stream's table columns is among an upstream table's
/// `columns` (matched by name; None: the table no longer has it, NULL).
/// An upstream column the stream lacks, or whose type it stores as
/// another, is an error naming the fix.
pub fn positions(
    stream: &str,
    schema: &Schema,
    table: &str,
    columns: &[Column],
) -> Result<Vec<Option<usize>>> {
    let (what, fix) = match stream.strip_prefix(TABLE_PREFIX) {
        Some(name) => (
            format!("table \"{name}\""),
            "a table's columns do not change yet: drop the source and the table and create \
             them again"
                .to_string(),
        ),
        None => (
            format!("stream \"{stream}\""),
            format!("ALTER STREAM {stream} ADD COLUMN to go on"),
        ),
    };
    for c in columns {
        let want = arrow_type(c.type_oid, c.type_modifier);
        match schema.field_with_name(&c.name) {
            Ok(f) if *f.data_type() == want => {}
            Ok(f) => {
                return Err(SourceError::Upstream(format!(
                    "column {} of upstream table {table} is now stored as {want}, but {what} \
                     has it as {}; the source waits until they match (or is dropped and \
                     created again)",
                    c.name,
                    f.data_type()
                )));
            }
            Err(_) => {
                return Err(SourceError::Upstream(format!(
                    "upstream table {table} has a new column {} ({want}) that {what} lacks; \
                     {fix}",
                    c.name
                )));
            }
        }
    }
    Ok(table_columns(schema)
        .map(|f| columns.iter().position(|c| c.name == *f.name()))
        .collect())
}

/// A column's text values in its Arrow type.
fn typed(field: &Field, values: Vec<Option<String>>) -> Result<ArrayRef> {
    if *field.data_type() == DataType::Binary {
        let mut b = BinaryBuilder::new();
        for v in values {
            match v {
                None => b.append_null(),
                Some(text) => b.append_value(bytea(&text).ok_or_else(|| {
                    SourceError::Protocol(format!(
                        "column {}: {text:?} is not bytea's hex form",
                        field.name()
                    ))
                })?),
            }
        }
        return Ok(Arc::new(b.finish()));
    }
    let text: ArrayRef = Arc::new(StringArray::from(values));
    if *field.data_type() == DataType::Utf8 {
        return Ok(text);
    }
    let text = match field.data_type() {
        // `+00` / `+05:30` offsets as RFC 3339 wants them.
        DataType::Timestamp(_, Some(_)) => with_full_offsets(&text),
        _ => text,
    };
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(&text, field.data_type(), &options).map_err(|e| {
        SourceError::Protocol(format!(
            "column {} ({}): {e}",
            field.name(),
            field.data_type()
        ))
    })
}

/// `2024-01-02 03:04:05.6+00` → `…+00:00`: PostgreSQL prints whole-hour
/// offsets without minutes.
fn with_full_offsets(text: &ArrayRef) -> ArrayRef {
    let strings = text
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("text values");
    let fixed: StringArray = strings
        .iter()
        .map(|v| {
            v.map(|s| {
                let b = s.as_bytes();
                let n = b.len();
                if n >= 3
                    && (b[n - 3] == b'+' || b[n - 3] == b'-')
                    && b[n - 2..].iter().all(u8::is_ascii_digit)
                {
                    format!("{s}:00")
                } else {
                    s.to_string()
                }
            })
        })
        .collect();
    Arc::new(fixed)
}

/// bytea's hex output (`\x0a0b`) as bytes.
fn bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A decoded row's values as text, in the order of `columns` (the
/// stream's table columns), matched by name to the relation's columns;
/// a TOASTed value the change left alone is taken from `old` when the
/// table sends whole old rows (`REPLICA IDENTITY FULL`), else NULL.
pub fn row_values(
    positions: &[Option<usize>],
    new: &[Value],
    old: Option<&[Value]>,
) -> Vec<Option<String>> {
    positions
        .iter()
        .map(|at| {
            let at = (*at)?;
            match new.get(at)? {
                Value::Text(t) => Some(t.clone()),
                Value::Null => None,
                Value::Unchanged => match old?.get(at)? {
                    Value::Text(t) => Some(t.clone()),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Which of a decoded row's values ([`row_values`]'s indexes) were left
/// out: TOASTed values the change did not touch, with no old row holding
/// them.
pub fn unavailable(
    positions: &[Option<usize>],
    new: &[Value],
    old: Option<&[Value]>,
) -> Vec<usize> {
    positions
        .iter()
        .enumerate()
        .filter(|(_, at)| {
            at.is_some_and(|at| {
                matches!(new.get(at), Some(Value::Unchanged))
                    && !matches!(
                        old.and_then(|o| o.get(at)),
                        Some(Value::Text(_)) | Some(Value::Null)
                    )
            })
        })
        .map(|(i, _)| i)
        .collect()
}

/// Fills `values[i]` for each `i` of `missing` (indexes of the stream's
/// table columns, [`table_columns`]) with the row's current value upstream,
/// found by its key among `values`; NULL when the row is gone. The value
/// may be newer than the change (a later transaction set it): that
/// transaction's own change follows, so the table ends as upstream has it.
pub async fn reselect(
    conn: &mut PgConnection,
    table: &Table,
    schema: &Schema,
    values: &mut [Option<String>],
    missing: &[usize],
) -> Result<()> {
    let names: Vec<&str> = table_columns(schema).map(|f| f.name().as_str()).collect();
    let mut filter = Vec::new();
    for c in table.columns.iter().filter(|c| c.key) {
        let at = names.iter().position(|n| *n == c.name);
        let Some(value) = at.and_then(|i| values[i].as_deref()) else {
            return Err(SourceError::Protocol(format!(
                "a change of {} without its key column {}",
                table.name, c.name
            )));
        };
        // A quoted literal takes the column's type, so the key's index
        // serves.
        filter.push(format!(
            "{} = '{}'",
            ident(&c.name),
            value.replace('\'', "''")
        ));
    }
    let columns: Vec<String> = missing
        .iter()
        .map(|&i| format!("{}::text", ident(names[i])))
        .collect();
    let (schema_name, name) = table
        .name
        .split_once('.')
        .unwrap_or(("public", &table.name));
    let query = format!(
        "SELECT {} FROM {}.{} WHERE {}",
        columns.join(", "),
        ident(schema_name),
        ident(name),
        filter.join(" AND ")
    );
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(query))
        .fetch_optional(&mut *conn)
        .await?;
    for (n, &i) in missing.iter().enumerate() {
        values[i] = match &row {
            Some(row) => row.try_get::<Option<String>, _>(n)?,
            None => None,
        };
    }
    Ok(())
}

/// Reads a table's rows in the open transaction of `conn`, `chunk` rows
/// at a time, into `out` (a batch per chunk, the stream's columns placed
/// by `positions`); errs past `max_bytes` of text.
pub async fn read_rows(
    conn: &mut PgConnection,
    table: &Table,
    schema: &SchemaRef,
    positions: &[Option<usize>],
    max_bytes: usize,
    chunk: usize,
    out: &mut Vec<RecordBatch>,
) -> Result<u64> {
    let query = table.select_text();
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query)).fetch(&mut *conn);
    let mut gathered = Rows::new(schema.clone());
    let mut total = 0usize;
    let mut n = 0u64;
    while let Some(row) = rows.try_next().await? {
        let mut upstream = Vec::with_capacity(table.columns.len());
        for i in 0..table.columns.len() {
            upstream.push(row.try_get::<Option<String>, _>(i)?);
        }
        let values = positions
            .iter()
            .map(|at| at.and_then(|i| upstream[i].take()))
            .collect();
        let before = gathered.bytes;
        gathered.push(values, "insert", 0);
        total += gathered.bytes - before;
        n += 1;
        if total > max_bytes {
            return Err(SourceError::Fatal(format!(
                "the snapshot of table {} passed {} MiB: a source copies a table's existing \
                 rows in one commit, and this one is too large",
                table.name,
                max_bytes >> 20
            )));
        }
        if gathered.len() >= chunk {
            out.push(gathered.finish()?);
        }
    }
    if !gathered.is_empty() {
        out.push(gathered.finish()?);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};

    use super::*;

    #[test]
    fn text_values_take_their_types() {
        let table = Table {
            name: "public.t".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    type_oid: 20,
                    type_modifier: -1,
                    key: true,
                },
                Column {
                    name: "ok".into(),
                    type_oid: 16,
                    type_modifier: -1,
                    key: false,
                },
                Column {
                    name: "price".into(),
                    type_oid: 1700,
                    type_modifier: (10 << 16) + 2 + 4,
                    key: false,
                },
                Column {
                    name: "at".into(),
                    type_oid: 1184,
                    type_modifier: -1,
                    key: false,
                },
                Column {
                    name: "raw".into(),
                    type_oid: 17,
                    type_modifier: -1,
                    key: false,
                },
                Column {
                    name: "doc".into(),
                    type_oid: 3802,
                    type_modifier: -1,
                    key: false,
                },
            ],
        };
        assert_eq!(table.key(), ["id"]);
        let schema = table.schema();
        assert_eq!(schema.field(2).data_type(), &DataType::Decimal128(10, 2));
        let mut rows = Rows::new(schema);
        rows.push(
            [
                "7",
                "t",
                "3.50",
                "2026-12-06 13:34:52.406808+00",
                "\\x0aff",
                "{\"a\": 1}",
            ]
            .map(|s| Some(s.to_string()))
            .to_vec(),
            "insert",
            0,
        );
        rows.push(vec![Some("8".into())], "delete", 0x0152_9BB0);
        let batch = rows.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[7, 8]);
        assert!(batch.column(1).as_boolean().value(0));
        assert_eq!(
            batch.column(2).as_primitive::<Decimal128Type>().value(0),
            350
        );
        assert_eq!(
            batch
                .column(3)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_796_564_092_406_808
        );
        assert_eq!(batch.column(4).as_binary::<i32>().value(0), [0x0a, 0xff]);
        assert!(batch.column(5).is_null(1));
        assert_eq!(batch.column(6).as_string::<i32>().value(1), "delete");
        assert_eq!(
            batch
                .column(7)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(1),
            0x0152_9BB0
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let table = Table {
            name: "public.t".into(),
            columns: vec![Column {
                name: "n".into(),
                type_oid: 23,
                type_modifier: -1,
                key: false,
            }],
        };
        let mut rows = Rows::new(table.schema());
        rows.push(vec![Some("nope".into())], "insert", 0);
        assert!(rows.finish().is_err());
        assert_eq!(bytea("\\x0"), None);
        assert_eq!(bytea("0a"), None);
    }

    #[test]
    fn unchanged_values_come_from_the_old_row() {
        let new = [Value::Text("1".into()), Value::Unchanged];
        let old = [Value::Text("1".into()), Value::Text("big".into())];
        assert_eq!(
            row_values(&[Some(0), Some(1), None], &new, Some(&old)),
            [Some("1".into()), Some("big".into()), None]
        );
        assert_eq!(row_values(&[Some(1)], &new, None), [None]);
        // Left out without the old row: to be read again.
        assert_eq!(unavailable(&[Some(0), Some(1)], &new, None), [1]);
        assert!(unavailable(&[Some(0), Some(1)], &new, Some(&old)).is_empty());
    }

    #[test]
    fn a_table_log_marks_deletes() {
        let mut fields = vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
        ];
        fields.push(Field::new(TABLE_DELETED_COLUMN, DataType::Boolean, false));
        let mut rows = Rows::new(Arc::new(Schema::new(fields)));
        rows.push(vec![Some("1".into()), Some("a".into())], "insert", 0);
        rows.push(vec![Some("1".into()), Some("b".into())], "update", 9);
        rows.push(vec![Some("1".into())], "delete", 10);
        let batch = rows.finish().unwrap();
        let deleted = batch.column(2).as_boolean();
        assert_eq!(
            deleted.iter().collect::<Vec<_>>(),
            [Some(false), Some(false), Some(true)]
        );
        assert!(batch.column(1).is_null(2));
        // The gathering starts again empty, with the same columns.
        assert!(rows.is_empty());
        rows.push(vec![Some("2".into()), None], "insert", 11);
        assert_eq!(rows.finish().unwrap().num_rows(), 1);
    }
}
