use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};

use super::*;

const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"customer","type":"string"},{"name":"qty","type":"int","default":1}]}"#;

/// A Confluent-framed record of `schema` (registered as `id`).
fn framed(id: u32, schema: &str, id_value: i64, qty: Option<i32>) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let mut r = apache_avro::types::Record::new(&schema).unwrap();
    r.put("id", id_value);
    r.put("customer", format!("c{id_value}"));
    if let Some(q) = qty {
        r.put("qty", q);
    }
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(apache_avro::to_avro_datum(&schema, r).unwrap());
    out
}

fn decoder() -> AvroValues {
    AvroValues::new(V2, &[(1, V1.to_string()), (2, V2.to_string())]).unwrap()
}

fn column<T: arrow::datatypes::ArrowPrimitiveType>(
    batches: &[RecordBatch],
    name: &str,
) -> Vec<T::Native> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<T>()
                .values()
                .to_vec()
        })
        .collect()
}

#[test]
fn records_of_every_writer_version_land_in_the_readers_columns_in_order() {
    let values = [
        framed(1, V1, 1, None),
        framed(1, V1, 2, None),
        framed(2, V2, 3, Some(30)),
        framed(1, V1, 4, None),
        framed(2, V2, 5, Some(50)),
    ];
    let mut d = decoder();
    let batches = d.decode(values.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(column::<Int64Type>(&batches, "id"), [1, 2, 3, 4, 5]);
    // A field the old writer lacks reads as the reader's default.
    assert_eq!(column::<Int32Type>(&batches, "qty"), [1, 1, 30, 1, 50]);
    let customers: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("customer").unwrap().as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(customers, ["c1", "c2", "c3", "c4", "c5"]);
    // The decoder is ready for the next call.
    let again = d.decode([framed(2, V2, 6, Some(60)).as_slice()]).unwrap();
    assert_eq!(column::<Int64Type>(&again, "id"), [6]);
}

#[test]
fn more_records_than_a_batch_holds() {
    let values: Vec<Vec<u8>> = (0..20_000).map(|i| framed(1, V1, i, None)).collect();
    let batches = decoder().decode(values.iter().map(Vec::as_slice)).unwrap();
    assert!(batches.len() > 1);
    assert_eq!(
        column::<Int64Type>(&batches, "id"),
        (0..20_000).collect::<Vec<_>>()
    );
}

#[test]
fn values_that_are_not_one_record_are_refused() {
    let good = framed(1, V1, 1, None);
    let mut unknown = good.clone();
    unknown[4] = 9;
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    let mut not_framed = good.clone();
    not_framed[0] = 1;
    let mut trailing = good.clone();
    trailing.extend(framed(1, V1, 2, None));
    for (what, value) in [
        ("unknown id", unknown),
        ("truncated", truncated),
        ("no magic byte", not_framed),
        ("two records in one value", trailing),
        ("empty", vec![0, 0, 0, 0, 1]),
    ] {
        let e = decoder()
            .decode([good.as_slice(), value.as_slice()])
            .unwrap_err();
        assert_eq!(e.code(), 42201, "{what}: {e}");
    }
}
