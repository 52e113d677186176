use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};

use super::*;
use crate::error::LogError;
use crate::stream::{DEFAULT_KEY, StreamSpec, chunk_schema};

fn spec() -> StreamSpec {
    StreamSpec::new(
        "s",
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", DataType::Int32, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("price", DataType::Float32, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ])),
    )
    .with_key(["id"])
    .with_event_time("at", Duration::from_secs(1))
}

fn evolve(spec: &StreamSpec, change: SchemaChange) -> StreamSpec {
    let schema = apply(spec, &change).unwrap();
    StreamSpec {
        schema: Arc::new(schema),
        ..spec.clone()
    }
}

fn ids(schema: &Schema) -> Vec<(String, u32)> {
    (0..schema.fields().len())
        .map(|i| (schema.field(i).name().clone(), field_id(schema, i)))
        .collect()
}

/// A chunk batch of `spec`'s version: two rows, then `_timestamp`.
fn chunk_of(spec: &StreamSpec) -> RecordBatch {
    let schema = chunk_schema(&spec.schema);
    let cols = schema
        .fields()
        .iter()
        .map(|f| -> Arc<dyn Array> {
            match (f.name().as_str(), f.data_type()) {
                ("_timestamp", _) => {
                    Arc::new(TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("UTC"))
                }
                (_, DataType::Int64) => Arc::new(Int64Array::from(vec![7, 8])),
                (_, DataType::Int32) => Arc::new(Int32Array::from(vec![70, 80])),
                (_, DataType::Float32) => {
                    Arc::new(arrow::array::Float32Array::from(vec![1.5, 2.5]))
                }
                (_, DataType::Float64) => Arc::new(Float64Array::from(vec![3.5, 4.5])),
                (name, DataType::Utf8) => Arc::new(StringArray::from(vec![
                    format!("{name}1"),
                    format!("{name}2"),
                ])),
                (_, DataType::Timestamp(_, None)) => {
                    Arc::new(TimestampMicrosecondArray::from(vec![10, 20]))
                }
                (_, other) => panic!("no test data for {other}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, cols).unwrap()
}

#[test]
fn ids_survive_renames_and_widening_and_are_never_reused() {
    let v1 = spec();
    assert_eq!(
        ids(&v1.schema),
        [
            ("id".into(), 1),
            ("qty".into(), 2),
            ("note".into(), 3),
            ("price".into(), 4),
            ("at".into(), 5)
        ]
    );
    let v2 = evolve(&v1, SchemaChange::DropColumn("note".into()));
    let v3 = evolve(
        &v2,
        SchemaChange::RenameColumn {
            from: "qty".into(),
            to: "quantity".into(),
        },
    );
    let v4 = evolve(
        &v3,
        SchemaChange::AlterType {
            column: "quantity".into(),
            to: Field::new("", DataType::Int64, true),
        },
    );
    let v5 = evolve(
        &v4,
        SchemaChange::AddColumn(Field::new("note", DataType::Utf8, true)),
    );
    assert_eq!(
        ids(&v5.schema),
        [
            ("id".into(), 1),
            ("quantity".into(), 2),
            ("price".into(), 4),
            ("at".into(), 5),
            ("note".into(), 6)
        ]
    );
    // Widening keeps nullability; the column stays NOT NULL.
    let q = v5.schema.field_with_name("quantity").unwrap();
    assert_eq!(q.data_type(), &DataType::Int64);
    assert!(!q.is_nullable());
    // Dropping the newest column does not hand its id out again.
    let v6 = evolve(&v5, SchemaChange::DropColumn("note".into()));
    let v7 = evolve(
        &v6,
        SchemaChange::AddColumn(Field::new("note", DataType::Utf8, true)),
    );
    assert_eq!(ids(&v7.schema).last().unwrap(), &("note".into(), 7));
}

#[test]
fn old_chunks_read_through_a_new_version_by_id() {
    let v1 = spec();
    let old = chunk_of(&v1);
    let v2 = evolve(&v1, SchemaChange::DropColumn("note".into()));
    let v3 = evolve(
        &v2,
        SchemaChange::RenameColumn {
            from: "qty".into(),
            to: "quantity".into(),
        },
    );
    let v4 = evolve(
        &v3,
        SchemaChange::AlterType {
            column: "price".into(),
            to: Field::new("", DataType::Float64, true),
        },
    );
    let added = Field::new("note", DataType::Utf8, false)
        .with_metadata([(DEFAULT_KEY.to_string(), "none".to_string())].into());
    let v5 = evolve(&v4, SchemaChange::AddColumn(added));
    // v5: id, quantity, price, at, note; `_timestamp` is index 5.
    let read = &v5.schema;
    let b = through(read, &[0, 1, 2, 4, 5], &old).unwrap();
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "quantity", "price", "note", "_timestamp"]);
    assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[7, 8]);
    // Renamed: the old `qty` values, under the new name.
    assert_eq!(
        b.column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .values(),
        &[70, 80]
    );
    // Widened: cast.
    assert_eq!(
        b.column(2).as_primitive::<Float64Type>(),
        &Float64Array::from(vec![1.5, 2.5])
    );
    // Dropped then added again: a new column, so the old values stay
    // hidden and the default shows.
    let note = b.column(3).as_string::<i32>();
    assert_eq!((note.value(0), note.value(1)), ("none", "none"));
    assert_eq!(b.column(4).len(), 2);

    // A chunk of the new version read through the old one (a plan made
    // before the changes): the dropped column is NULL there, the widened
    // one narrowed back while it fits.
    let new = chunk_of(&v5);
    let b = through(&v1.schema, &[1, 2, 3], &new).unwrap();
    assert_eq!(b.schema().field(0).name(), "qty");
    assert_eq!(
        b.column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .values(),
        &[70, 80]
    );
    assert_eq!(b.column(1).null_count(), 2);
    assert_eq!(b.column(2).data_type(), &DataType::Float32);
}

#[test]
fn a_value_that_does_not_fit_the_older_version_is_not_silently_wrong() {
    let v1 = spec();
    let v2 = evolve(
        &v1,
        SchemaChange::AlterType {
            column: "qty".into(),
            to: Field::new("", DataType::Int64, true),
        },
    );
    let schema = chunk_schema(&v2.schema);
    let mut cols: Vec<Arc<dyn Array>> = chunk_of(&v2).columns().to_vec();
    cols[1] = Arc::new(Int64Array::from(vec![1, i64::MAX]));
    let big = RecordBatch::try_new(schema, cols).unwrap();
    let e = through(&v1.schema, &[1], &big).unwrap_err();
    assert!(matches!(e, ThroughError::Narrower(_)), "{e:?}");
}

#[test]
fn refusals_name_the_rule() {
    let v1 = spec();
    let refused = |change: SchemaChange| apply(&v1, &change).unwrap_err();
    for change in [
        SchemaChange::DropColumn("id".into()),
        SchemaChange::DropColumn("at".into()),
        SchemaChange::RenameColumn {
            from: "id".into(),
            to: "ident".into(),
        },
        SchemaChange::AlterType {
            column: "id".into(),
            to: Field::new("", DataType::Float64, false),
        },
        SchemaChange::AlterType {
            column: "qty".into(),
            to: Field::new("", DataType::Int16, false),
        },
        SchemaChange::AlterType {
            column: "note".into(),
            to: Field::new("", DataType::Int64, true),
        },
        SchemaChange::AlterType {
            column: "price".into(),
            to: Field::new("", DataType::Int64, true),
        },
    ] {
        let e = refused(change.clone());
        assert!(matches!(e, LogError::Unsupported(_)), "{change:?}: {e}");
    }
    let e = refused(SchemaChange::AlterType {
        column: "qty".into(),
        to: Field::new("", DataType::Int16, false),
    });
    assert!(e.to_string().contains("only widening"), "{e}");
    let e = refused(SchemaChange::DropColumn("id".into()));
    assert!(e.to_string().contains("key column"), "{e}");
    for change in [
        SchemaChange::DropColumn("nope".into()),
        SchemaChange::RenameColumn {
            from: "qty".into(),
            to: "note".into(),
        },
        SchemaChange::RenameColumn {
            from: "qty".into(),
            to: "_offset".into(),
        },
        SchemaChange::AddColumn(Field::new("note", DataType::Utf8, true)),
        SchemaChange::AddColumn(Field::new("n", DataType::Utf8, false)),
    ] {
        let e = refused(change.clone());
        assert!(matches!(e, LogError::InvalidSpec(_)), "{change:?}: {e}");
    }
    let one = StreamSpec::new(
        "one",
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
    );
    let e = apply(&one, &SchemaChange::DropColumn("a".into())).unwrap_err();
    assert!(e.to_string().contains("only column"), "{e}");
}

#[test]
fn widening_rules() {
    use DataType as D;
    for (from, to) in [
        (D::Int16, D::Int32),
        (D::Int32, D::Int64),
        (D::Int32, D::Float64),
        (D::Float32, D::Float64),
        (D::Int64, D::Decimal128(19, 0)),
        (D::Int32, D::Decimal128(12, 2)),
        (D::Decimal128(10, 2), D::Decimal128(12, 4)),
        (D::Utf8, D::Utf8),
    ] {
        assert!(widens(&from, &to), "{from} → {to}");
    }
    for (from, to) in [
        (D::Int64, D::Int32),
        (D::Int64, D::Float64),
        (D::Float64, D::Float32),
        (D::Int64, D::Decimal128(18, 0)),
        (D::Decimal128(10, 2), D::Decimal128(10, 3)),
        (D::Utf8, D::Int64),
        (D::Int32, D::Utf8),
    ] {
        assert!(!widens(&from, &to), "{from} → {to}");
    }
}

#[test]
fn properties_are_set_under_their_prefix_only_and_keep_the_columns() {
    let s = spec();
    let key = format!("{PROPERTY_PREFIX}subject_version");
    let next = evolve(
        &s,
        SchemaChange::SetProperty {
            key: key.clone(),
            value: "2".into(),
        },
    );
    assert_eq!(
        next.schema.metadata().get(&key).map(String::as_str),
        Some("2")
    );
    assert_eq!(ids(&next.schema), ids(&s.schema), "no column changed");
    let e = apply(
        &s,
        &SchemaChange::SetProperty {
            key: NEXT_FIELD_ID_KEY.into(),
            value: "1".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(e, LogError::InvalidSpec(_)), "{e}");
}
