//! Avro decoding: 2,000,000 order records in Confluent's wire format, from
//! two writer versions of the schema (the second adds a field with a
//! default), decoded into Arrow in calls of 10,000 values (a produce
//! request's worth) as the newer version, on one thread. Each call's values
//! come from one writer (one producer's request); the calls alternate.

use std::time::Instant;

use streamhouse_registry::decode::AvroValues;

use crate::Row;

const RECORDS: usize = 2_000_000;
const PER_CALL: usize = 10_000;

const V1: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
    {"name":"id","type":"long"},
    {"name":"customer","type":"string"},
    {"name":"amount","type":"double"},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
    {"name":"id","type":"long"},
    {"name":"customer","type":"string"},
    {"name":"amount","type":"double"},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"qty","type":"int","default":1}]}"#;

fn values() -> Vec<Vec<u8>> {
    let v1 = apache_avro::Schema::parse_str(V1).expect("v1");
    let v2 = apache_avro::Schema::parse_str(V2).expect("v2");
    (0..RECORDS as i64)
        .map(|i| {
            let newer = (i as usize / PER_CALL) % 2 == 1;
            let (id, schema) = if newer { (2u32, &v2) } else { (1u32, &v1) };
            let mut r = apache_avro::types::Record::new(schema).expect("record");
            r.put("id", i);
            r.put("customer", format!("customer-{}", i % 10_000));
            r.put("amount", i as f64 * 0.25);
            r.put(
                "at",
                apache_avro::types::Value::TimestampMicros(1_700_000_000_000_000 + i),
            );
            if newer {
                r.put("qty", (i % 7) as i32);
            }
            let mut out = vec![0];
            out.extend(id.to_be_bytes());
            out.extend(apache_avro::to_avro_datum(schema, r).expect("encode"));
            out
        })
        .collect()
}

pub fn scenarios() -> Vec<Row> {
    let values = values();
    let bytes: usize = values.iter().map(Vec::len).sum();
    let mut decoder =
        AvroValues::new(V2, &[(1, V1.to_string()), (2, V2.to_string())]).expect("decoder");
    let started = Instant::now();
    let mut rows = 0usize;
    for call in values.chunks(PER_CALL) {
        let batches = decoder
            .decode(call.iter().map(Vec::as_slice))
            .expect("decode");
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(rows, RECORDS, "every record decoded");
    eprintln!("avro decode: {:.0} records/s", rows as f64 / seconds);
    vec![Row {
        scenario: "avro decode (Confluent wire format → Arrow), 2 writer versions".into(),
        rows: rows as u64,
        seconds,
        bytes: bytes as u64,
        note: Some("one thread; MB/s of framed Avro values".into()),
        ..Default::default()
    }]
}
