use arrow::array::{Int32Array, Int64Array, StringArray};
use arrow::datatypes::Int64Type;

use super::*;

fn framed(id: u32, body: &[u8], indexes: Option<&[u8]>) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    if let Some(i) = indexes {
        v.extend_from_slice(i);
    }
    v.extend_from_slice(body);
    v
}

#[test]
fn json_values_fill_columns_by_name_with_defaults() {
    let text = r#"{"type":"object","properties":{
        "id":{"type":"integer"},"who":{"type":"string"},
        "qty":{"type":"integer","default":1}},"required":["id","qty"]}"#;
    let schema = Arc::new(columns(SchemaType::Json, text, &[]).unwrap());
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "qty", "who"], "properties in name order");
    let codec = ValueCodec::new(SchemaType::Json, (5, text), vec![(5, text.into())], &[]).unwrap();
    let values = BinaryArray::from_iter_values([
        framed(5, br#"{"id":1,"who":"a","qty":4}"#, None),
        framed(5, br#"{"id":2,"extra":true}"#, None),
    ]);
    let rows = codec.decode(&values, &schema).unwrap();
    assert_eq!(rows.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
    assert_eq!(rows.column(1).as_primitive::<Int64Type>().values(), &[4, 1]);
    assert!(rows.column(2).is_null(1));
    let missing = BinaryArray::from_iter_values([framed(5, br#"{"who":"x"}"#, None)]);
    let e = codec.decode(&missing, &schema).unwrap_err();
    assert!(e.to_string().contains("\"id\""), "{e}");
    let encoded = codec.encode(&rows).unwrap();
    assert_eq!(&encoded.value(0)[..5], &[0, 0, 0, 0, 5]);
    let back: serde_json::Value = serde_json::from_slice(&encoded.value(1)[5..]).unwrap();
    assert_eq!(back, serde_json::json!({"id": 2, "qty": 1}));
}

#[test]
fn protobuf_values_of_old_and_new_versions_decode_by_field_number() {
    let v1 = r#"syntax = "proto3"; package shop;
        message Order { int64 id = 1; string who = 2; }"#;
    let v2 = r#"syntax = "proto3"; package shop;
        enum Kind { A = 0; B = 1; }
        message Order { int64 id = 1; string who = 2; optional int32 qty = 3; Kind kind = 4; }"#;
    let schema = Arc::new(columns(SchemaType::Protobuf, v2, &[]).unwrap());
    assert!(schema.field_with_name("qty").unwrap().is_nullable());
    assert!(!schema.field_with_name("id").unwrap().is_nullable());
    let codec = ValueCodec::new(
        SchemaType::Protobuf,
        (8, v2),
        vec![(7, v1.into()), (8, v2.into())],
        &[],
    )
    .unwrap();
    assert!(codec.knows(7) && codec.knows(8) && !codec.knows(9));
    let rows = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Int32Array::from(vec![Some(3), None])),
            Arc::new(StringArray::from(vec!["B", "A"])),
        ],
    )
    .unwrap();
    let values = codec.encode(&rows).unwrap();
    assert_eq!(&values.value(0)[..6], &[0, 0, 0, 0, 8, 0]);
    assert_eq!(codec.decode(&values, &schema).unwrap(), rows);
    // A version-1 value (id 1, who "old") under the longer index form [0].
    let old = framed(
        7,
        &[0x08, 0x01, 0x12, 0x03, b'o', b'l', b'd'],
        Some(&[0x02, 0x00]),
    );
    let decoded = codec
        .decode(&BinaryArray::from_iter_values([old]), &schema)
        .unwrap();
    assert_eq!(decoded.column(0).as_primitive::<Int64Type>().value(0), 1);
    assert!(
        decoded.column(2).is_null(0),
        "an absent optional field is NULL"
    );
    assert_eq!(decoded.column(3).as_string::<i32>().value(0), "A");
    for bad in [
        framed(8, &[0xff], Some(&[0])),
        framed(8, &[0x08, 0x01], Some(&[0x02, 0x02])),
        vec![0, 0, 0],
    ] {
        let e = codec
            .decode(&BinaryArray::from_iter_values([bad]), &schema)
            .unwrap_err();
        assert!(e.to_string().contains("record 0"), "{e}");
    }
}
