//! Record values of a stream that follows a subject, in Confluent's wire
//! format (magic byte 0, the schema id as 4 big-endian bytes, then the
//! body), both ways, for each schema type:
//!
//! - AVRO: bodies resolved from any version of the subject to the followed
//!   one ([`AvroValues`], [`AvroEncoder`]).
//! - JSON: the body is a JSON object; properties are matched to columns by
//!   name (unknown ones ignored, missing ones the column's default or
//!   NULL).
//! - PROTOBUF: message indexes, then the body, read with the followed
//!   version's message (Protobuf is read across versions by field number,
//!   so any version's bytes decode); a field without presence reads as its
//!   default value, as Protobuf defines.
//!
//! [`columns`] gives the stream's columns for a schema of each type.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanBuilder, Float32Builder,
    Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, new_null_array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use streamhouse_log::stream::{DEFAULT_KEY, default_array};

use crate::columns::{avro_columns, conform};
use crate::decode::AvroValues;
use crate::encode::AvroEncoder;
use crate::error::RegistryError;
use crate::formats::protobuf::{self, Proto};
use crate::formats::{SchemaType, json};

fn bad(m: String) -> RegistryError {
    RegistryError::InvalidSchema(m)
}

/// The stream columns of a schema of `schema_type` (`references` as
/// (name, text), for Protobuf imports).
pub fn columns(
    schema_type: SchemaType,
    text: &str,
    references: &[(String, String)],
) -> Result<Schema, RegistryError> {
    match schema_type {
        SchemaType::Avro => avro_columns(text),
        SchemaType::Json => json_columns(&json::parse(text)?),
        SchemaType::Protobuf => {
            let proto = protobuf::parse(text, references)?;
            let message = proto
                .message_at(&[0])
                .ok_or_else(|| bad("the schema declares no message".into()))?;
            protobuf_columns(&message)
        }
    }
}

/// One column per property of a JSON Schema object, in name order.
fn json_columns(schema: &serde_json::Value) -> Result<Schema, RegistryError> {
    let properties = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("a stream follows a JSON Schema of an object with properties".into()))?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let mut fields = Vec::with_capacity(properties.len());
    for (name, p) in properties {
        let types: Vec<&str> = match p.get("type") {
            Some(serde_json::Value::String(t)) => vec![t.as_str()],
            Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).collect(),
            _ => Vec::new(),
        };
        let nullable = types.contains(&"null") || !required.contains(&name.as_str());
        let format = p.get("format").and_then(|f| f.as_str());
        let data_type = match (types.iter().find(|t| **t != "null"), format) {
            (Some(&"integer"), _) => DataType::Int64,
            (Some(&"number"), _) => DataType::Float64,
            (Some(&"boolean"), _) => DataType::Boolean,
            (Some(&"string"), Some("date-time")) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            (Some(&"string"), Some("date")) => DataType::Date32,
            (Some(&"string"), _) => DataType::Utf8,
            _ => {
                return Err(bad(format!(
                    "property \"{name}\" is not an integer, number, boolean or string, which a \
                     stream column cannot hold yet"
                )));
            }
        };
        let mut field = Field::new(name, data_type, nullable);
        if let Some(d) = p.get("default").filter(|d| !d.is_null()) {
            let text = d
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| d.to_string());
            field = field.with_metadata([(DEFAULT_KEY.to_string(), text)].into());
        }
        fields.push(field);
    }
    Ok(Schema::new(fields))
}

/// One column per field of a Protobuf message, in number order.
fn protobuf_columns(message: &MessageDescriptor) -> Result<Schema, RegistryError> {
    let mut fields = Vec::new();
    for f in message.fields() {
        let data_type = proto_type(&f)?;
        let mut field = Field::new(f.name(), data_type, f.supports_presence());
        // A field without presence reads as its type's default when a
        // message lacks it, and so do rows written before it existed.
        if !f.supports_presence() {
            let default = match f.kind() {
                Kind::Bool => "false".to_string(),
                Kind::String | Kind::Bytes => String::new(),
                Kind::Enum(e) => e.default_value().name().to_string(),
                _ => "0".to_string(),
            };
            field = field.with_metadata([(DEFAULT_KEY.to_string(), default)].into());
        }
        fields.push(field);
    }
    Ok(Schema::new(fields))
}

fn is_timestamp(m: &MessageDescriptor) -> bool {
    m.full_name() == "google.protobuf.Timestamp"
}

fn proto_type(f: &FieldDescriptor) -> Result<DataType, RegistryError> {
    if f.is_list() || f.is_map() {
        return Err(bad(format!(
            "field {} is repeated, which a stream column cannot hold yet",
            f.name()
        )));
    }
    Ok(match f.kind() {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => {
            DataType::Int64
        }
        Kind::Uint64 | Kind::Fixed64 => DataType::Decimal128(20, 0),
        Kind::Float => DataType::Float32,
        Kind::Double => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        Kind::String | Kind::Enum(_) => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
        Kind::Message(m) if is_timestamp(&m) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        Kind::Message(m) => {
            return Err(bad(format!(
                "field {} is a message ({}), which a stream column cannot hold yet",
                f.name(),
                m.full_name()
            )));
        }
    })
}

/// How the values of one stream decode and encode: the schema type, the
/// followed version (id and schema) and the ids of every version of the
/// subject.
pub enum ValueCodec {
    Avro {
        reader: String,
        writers: Vec<(u32, String)>,
        encoder: AvroEncoder,
    },
    Json {
        id: u32,
        ids: Vec<u32>,
    },
    Protobuf {
        id: u32,
        ids: Vec<u32>,
        message: MessageDescriptor,
    },
}

impl ValueCodec {
    /// A codec for the followed version `(id, text)` of `schema_type`;
    /// `versions` are every version's (id, text) (Avro resolves values of
    /// each), `references` the followed version's.
    pub fn new(
        schema_type: SchemaType,
        (id, text): (u32, &str),
        versions: Vec<(u32, String)>,
        references: &[(String, String)],
    ) -> Result<ValueCodec, RegistryError> {
        Ok(match schema_type {
            SchemaType::Avro => ValueCodec::Avro {
                encoder: AvroEncoder::new(id, text)?,
                reader: text.to_string(),
                writers: versions,
            },
            SchemaType::Json => ValueCodec::Json {
                id,
                ids: versions.into_iter().map(|(i, _)| i).collect(),
            },
            SchemaType::Protobuf => {
                let proto: Proto = protobuf::parse(text, references)?;
                ValueCodec::Protobuf {
                    id,
                    ids: versions.into_iter().map(|(i, _)| i).collect(),
                    message: proto
                        .message_at(&[0])
                        .ok_or_else(|| bad("the schema declares no message".into()))?,
                }
            }
        })
    }

    /// Whether values written with schema `id` are read.
    pub fn knows(&self, id: u32) -> bool {
        match self {
            ValueCodec::Avro { writers, .. } => writers.iter().any(|(w, _)| *w == id),
            ValueCodec::Json { ids, .. } | ValueCodec::Protobuf { ids, .. } => ids.contains(&id),
        }
    }

    /// `values`, one record each, as rows of `to`; the first that does
    /// not decode is named in the error.
    pub fn decode(
        &self,
        values: &BinaryArray,
        to: &SchemaRef,
    ) -> Result<RecordBatch, RegistryError> {
        match self {
            ValueCodec::Avro {
                reader, writers, ..
            } => {
                let mut decoder = AvroValues::new(reader, writers)?;
                let batches = decoder.decode(values.iter().flatten())?;
                let rows = batches
                    .iter()
                    .map(|b| conform(b, to))
                    .collect::<Result<Vec<_>, _>>()?;
                arrow::compute::concat_batches(to, &rows).map_err(|e| bad(e.to_string()))
            }
            ValueCodec::Json { .. } => decode_json(values, to),
            ValueCodec::Protobuf { message, .. } => decode_protobuf(message, values, to),
        }
    }

    /// One value per row of `rows`, framed with the followed version's id.
    pub fn encode(&self, rows: &RecordBatch) -> Result<BinaryArray, RegistryError> {
        match self {
            ValueCodec::Avro { encoder, .. } => encoder.encode(rows),
            ValueCodec::Json { id, .. } => encode_json(*id, rows),
            ValueCodec::Protobuf { id, message, .. } => encode_protobuf(*id, message, rows),
        }
    }
}

/// Value `i`'s body, after its framing (and `skip` more bytes).
fn body(i: usize, value: &[u8]) -> Result<&[u8], RegistryError> {
    if value.len() < 5 || value[0] != 0 {
        return Err(bad(format!(
            "record {i}: its value is not in the Confluent wire format"
        )));
    }
    Ok(&value[5..])
}

fn decode_json(values: &BinaryArray, to: &SchemaRef) -> Result<RecordBatch, RegistryError> {
    let n = values.len();
    // Every column may be missing from a value: NULL first, then its
    // default, and only then is a NULL refused.
    let open = Arc::new(Schema::new(
        to.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let mut decoder = arrow_json::ReaderBuilder::new(open)
        .with_batch_size(n.max(1))
        .build_decoder()
        .map_err(|e| bad(e.to_string()))?;
    for (i, value) in values.iter().enumerate() {
        let json = body(i, value.unwrap_or_default())?;
        let object: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| bad(format!("record {i}: not JSON: {e}")))?;
        if !object.is_object() {
            return Err(bad(format!("record {i}: not a JSON object")));
        }
        decoder
            .serialize(&[object])
            .map_err(|e| bad(format!("record {i}: {e}")))?;
    }
    let rows = decoder
        .flush()
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no records".into()))?;
    let mut columns = Vec::with_capacity(to.fields().len());
    for (field, column) in to.fields().iter().zip(rows.columns()) {
        columns.push(fill_defaults(field, column.clone())?);
    }
    RecordBatch::try_new(to.clone(), columns).map_err(|e| bad(e.to_string()))
}

/// `column` with its NULLs replaced by `field`'s default where it has one;
/// a NULL left in a column that may not hold one is an error.
fn fill_defaults(field: &Field, column: ArrayRef) -> Result<ArrayRef, RegistryError> {
    if column.null_count() == 0 {
        return Ok(column);
    }
    let column = match default_array(field, column.len()).map_err(|e| bad(e.to_string()))? {
        Some(default) => {
            let present = arrow::compute::is_not_null(&column).map_err(|e| bad(e.to_string()))?;
            arrow::compute::kernels::zip::zip(&present, &column, &default)
                .map_err(|e| bad(e.to_string()))?
        }
        None => column,
    };
    if column.null_count() > 0 && !field.is_nullable() {
        return Err(bad(format!(
            "property \"{}\" is missing or null",
            field.name()
        )));
    }
    Ok(column)
}

fn encode_json(id: u32, rows: &RecordBatch) -> Result<BinaryArray, RegistryError> {
    let n = rows.num_rows();
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write(rows).map_err(|e| bad(e.to_string()))?;
    writer.finish().map_err(|e| bad(e.to_string()))?;
    let json = writer.into_inner();
    let mut values = BinaryBuilder::with_capacity(n, json.len() + 5 * n);
    let mut value = Vec::new();
    for line in json.split(|b| *b == b'\n').take(n) {
        value.clear();
        value.push(0);
        value.extend_from_slice(&id.to_be_bytes());
        value.extend_from_slice(line);
        values.append_value(&value);
    }
    Ok(values.finish())
}

/// Reads a zigzag varint of Confluent's message indexes.
fn zigzag(bytes: &mut &[u8]) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// The message indexes before a Protobuf body, and the body.
fn message_indexes(i: usize, mut bytes: &[u8]) -> Result<(Vec<i64>, &[u8]), RegistryError> {
    let short = || bad(format!("record {i}: its message indexes are cut short"));
    let count = zigzag(&mut bytes).ok_or_else(short)?;
    if count == 0 {
        return Ok((vec![0], bytes));
    }
    if !(1..=64).contains(&count) {
        return Err(bad(format!("record {i}: {count} message indexes")));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        indexes.push(zigzag(&mut bytes).ok_or_else(short)?);
    }
    Ok((indexes, bytes))
}

/// A column builder for one Protobuf field.
enum Builder {
    I32(Int32Builder),
    I64(Int64Builder),
    U64(Vec<Option<i128>>),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl Builder {
    fn of(t: &DataType) -> Builder {
        match t {
            DataType::Int32 => Builder::I32(Int32Builder::new()),
            DataType::Int64 => Builder::I64(Int64Builder::new()),
            DataType::Decimal128(..) => Builder::U64(Vec::new()),
            DataType::Float32 => Builder::F32(Float32Builder::new()),
            DataType::Float64 => Builder::F64(Float64Builder::new()),
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            DataType::Binary => Builder::Bytes(BinaryBuilder::new()),
            DataType::Timestamp(..) => {
                Builder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    fn append(&mut self, f: &FieldDescriptor, v: Option<&Value>) -> Result<(), String> {
        let wrong = || format!("field {} holds {v:?}", f.name());
        match (self, v) {
            (Builder::I32(b), Some(Value::I32(x))) => b.append_value(*x),
            (Builder::I64(b), Some(Value::I64(x))) => b.append_value(*x),
            (Builder::I64(b), Some(Value::U32(x))) => b.append_value(i64::from(*x)),
            (Builder::U64(b), Some(Value::U64(x))) => b.push(Some(i128::from(*x))),
            (Builder::F32(b), Some(Value::F32(x))) => b.append_value(*x),
            (Builder::F64(b), Some(Value::F64(x))) => b.append_value(*x),
            (Builder::Bool(b), Some(Value::Bool(x))) => b.append_value(*x),
            (Builder::Text(b), Some(Value::String(x))) => b.append_value(x),
            (Builder::Text(b), Some(Value::EnumNumber(n))) => match f.kind() {
                Kind::Enum(e) => match e.get_value(*n) {
                    Some(v) => b.append_value(v.name()),
                    None => b.append_value(n.to_string()),
                },
                _ => return Err(wrong()),
            },
            (Builder::Bytes(b), Some(Value::Bytes(x))) => b.append_value(x),
            (Builder::Time(b), Some(Value::Message(m))) => {
                let seconds = m.get_field_by_name("seconds");
                let nanos = m.get_field_by_name("nanos");
                let s = seconds.as_ref().and_then(|v| v.as_i64()).unwrap_or(0);
                let n = nanos.as_ref().and_then(|v| v.as_i32()).unwrap_or(0);
                let micros = s
                    .checked_mul(1_000_000)
                    .and_then(|m| m.checked_add(i64::from(n) / 1_000))
                    .ok_or_else(|| format!("field {} is out of range", f.name()))?;
                b.append_value(micros)
            }
            (Builder::I32(b), None) => b.append_null(),
            (Builder::I64(b), None) => b.append_null(),
            (Builder::U64(b), None) => b.push(None),
            (Builder::F32(b), None) => b.append_null(),
            (Builder::F64(b), None) => b.append_null(),
            (Builder::Bool(b), None) => b.append_null(),
            (Builder::Text(b), None) => b.append_null(),
            (Builder::Bytes(b), None) => b.append_null(),
            (Builder::Time(b), None) => b.append_null(),
            _ => return Err(wrong()),
        }
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef, RegistryError> {
        Ok(match self {
            Builder::I32(mut b) => Arc::new(b.finish()),
            Builder::I64(mut b) => Arc::new(b.finish()),
            Builder::U64(v) => Arc::new(
                arrow::array::Decimal128Array::from(v)
                    .with_precision_and_scale(20, 0)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            Builder::F32(mut b) => Arc::new(b.finish()),
            Builder::F64(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Text(mut b) => Arc::new(b.finish()),
            Builder::Bytes(mut b) => Arc::new(b.finish()),
            Builder::Time(mut b) => Arc::new(b.finish()),
        })
    }
}

fn decode_protobuf(
    message: &MessageDescriptor,
    values: &BinaryArray,
    to: &SchemaRef,
) -> Result<RecordBatch, RegistryError> {
    let fields: Vec<FieldDescriptor> = message.fields().collect();
    let mut builders: Vec<Builder> = fields
        .iter()
        .map(|f| proto_type(f).map(|t| Builder::of(&t)))
        .collect::<Result<_, _>>()?;
    for (i, value) in values.iter().enumerate() {
        let (indexes, bytes) = message_indexes(i, body(i, value.unwrap_or_default())?)?;
        if indexes != [0] {
            return Err(bad(format!(
                "record {i}: message indexes {indexes:?} name another message than {}",
                message.full_name()
            )));
        }
        let m = DynamicMessage::decode(message.clone(), bytes)
            .map_err(|e| bad(format!("record {i}: {e}")))?;
        for (f, b) in fields.iter().zip(builders.iter_mut()) {
            let present = !f.supports_presence() || m.has_field(f);
            let v = m.get_field(f);
            b.append(f, present.then_some(v.as_ref()))
                .map_err(|e| bad(format!("record {i}: {e}")))?;
        }
    }
    let mut decoded = Vec::with_capacity(fields.len());
    for (f, b) in fields.iter().zip(builders) {
        decoded.push((f.name().to_string(), b.finish()?));
    }
    let batch = RecordBatch::try_from_iter(decoded).map_err(|e| bad(e.to_string()))?;
    conform(&batch, to)
}

fn encode_protobuf(
    id: u32,
    message: &MessageDescriptor,
    rows: &RecordBatch,
) -> Result<BinaryArray, RegistryError> {
    let n = rows.num_rows();
    let mut columns: Vec<(FieldDescriptor, ArrayRef)> = Vec::new();
    for f in message.fields() {
        let t = proto_type(&f)?;
        let column = match rows.column_by_name(f.name()) {
            Some(c) => arrow::compute::cast(c, &t).map_err(|e| bad(e.to_string()))?,
            None => new_null_array(&t, n),
        };
        columns.push((f, column));
    }
    let mut values = BinaryBuilder::with_capacity(n, 0);
    let mut buf = Vec::new();
    for row in 0..n {
        let mut m = DynamicMessage::new(message.clone());
        for (f, c) in &columns {
            if c.is_null(row) {
                continue;
            }
            let v = match f.kind() {
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                    Value::I32(c.as_primitive::<arrow::datatypes::Int32Type>().value(row))
                }
                Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                    Value::I64(c.as_primitive::<arrow::datatypes::Int64Type>().value(row))
                }
                Kind::Uint32 | Kind::Fixed32 => {
                    let x = c.as_primitive::<arrow::datatypes::Int64Type>().value(row);
                    Value::U32(u32::try_from(x).map_err(|e| bad(e.to_string()))?)
                }
                Kind::Uint64 | Kind::Fixed64 => {
                    let x = c
                        .as_primitive::<arrow::datatypes::Decimal128Type>()
                        .value(row);
                    Value::U64(u64::try_from(x).map_err(|e| bad(e.to_string()))?)
                }
                Kind::Float => {
                    Value::F32(c.as_primitive::<arrow::datatypes::Float32Type>().value(row))
                }
                Kind::Double => {
                    Value::F64(c.as_primitive::<arrow::datatypes::Float64Type>().value(row))
                }
                Kind::Bool => Value::Bool(c.as_boolean().value(row)),
                Kind::String => Value::String(c.as_string::<i32>().value(row).to_string()),
                Kind::Bytes => Value::Bytes(bytes::Bytes::copy_from_slice(
                    c.as_binary::<i32>().value(row),
                )),
                Kind::Enum(e) => {
                    let name = c.as_string::<i32>().value(row);
                    let number = e
                        .get_value_by_name(name)
                        .map(|v| v.number())
                        .or_else(|| name.parse().ok())
                        .ok_or_else(|| bad(format!("{name} is not a value of {}", e.name())))?;
                    Value::EnumNumber(number)
                }
                Kind::Message(t) => {
                    let micros = c
                        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                        .value(row);
                    let mut ts = DynamicMessage::new(t);
                    ts.set_field_by_name("seconds", Value::I64(micros.div_euclid(1_000_000)));
                    ts.set_field_by_name(
                        "nanos",
                        Value::I32((micros.rem_euclid(1_000_000) * 1_000) as i32),
                    );
                    Value::Message(ts)
                }
            };
            m.set_field(f, v);
        }
        buf.clear();
        buf.push(0);
        buf.extend_from_slice(&id.to_be_bytes());
        // Message indexes [0]: the first message, written as one 0.
        buf.push(0);
        m.encode(&mut buf).map_err(|e| bad(e.to_string()))?;
        values.append_value(&buf);
    }
    Ok(values.finish())
}

#[cfg(test)]
mod tests;
