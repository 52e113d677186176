//! PostgreSQL's binary COPY format (`COPY … (FORMAT binary)`): a signature
//! header, then per row a 16-bit field count and each field as a 32-bit
//! length (-1 for NULL) and its value in the type's binary send format,
//! then a -1 trailer. asyncpg's `copy_records_to_table` and psycopg's
//! binary copy speak it.
//!
//! Values are kept as raw bytes per column while rows arrive and turned
//! into typed Arrow arrays a batch at a time.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, Date32Array,
    Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};

use crate::error::{Result, SqlError};

/// The 11-byte signature every binary COPY stream starts with.
pub const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

fn bad(msg: impl Into<String>) -> SqlError {
    SqlError::InvalidBinary(format!("invalid binary COPY data: {}", msg.into()))
}

/// The longest header extension taken: PostgreSQL writes none, and a
/// length is a client's number.
const MAX_HEADER_EXTENSION: usize = 1 << 20;

/// Decodes a binary COPY stream into batches of `schema`.
pub struct BinaryIn {
    schema: SchemaRef,
    buf: Vec<u8>,
    header_done: bool,
    ended: bool,
    columns: Vec<BinaryBuilder>,
    rows: usize,
    pub(crate) batches: Vec<RecordBatch>,
}

impl BinaryIn {
    pub fn new(schema: SchemaRef) -> Result<Self> {
        for f in schema.fields() {
            if !supported(f.data_type()) {
                return Err(SqlError::NotSupported(format!(
                    "binary COPY of a {} column ({})",
                    f.data_type(),
                    f.name()
                )));
            }
        }
        let columns = schema
            .fields()
            .iter()
            .map(|_| BinaryBuilder::new())
            .collect();
        Ok(BinaryIn {
            schema,
            buf: Vec::new(),
            header_done: false,
            ended: false,
            columns,
            rows: 0,
            batches: Vec::new(),
        })
    }

    /// Takes the next chunk of copy data; complete rows are decoded, a
    /// partial one waits for the rest.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        if !self.header_done {
            // Signature, flags, header extension length, extension.
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(());
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad("missing PGCOPY signature"));
            }
            let ext = usize::try_from(i32_at(&self.buf, SIGNATURE.len() + 4))
                .ok()
                .filter(|n| *n <= MAX_HEADER_EXTENSION)
                .ok_or_else(|| bad("header extension length out of range"))?;
            let end = SIGNATURE.len() + 8 + ext;
            if self.buf.len() < end {
                return Ok(());
            }
            at = end;
            self.header_done = true;
        }
        while let Some(used) = self.row(at)? {
            at = used;
            if self.ended {
                break;
            }
        }
        self.buf.drain(..at);
        if self.rows >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Decodes the row starting at `at`; where it ends, or `None` when the
    /// buffer holds only part of it.
    fn row(&mut self, at: usize) -> Result<Option<usize>> {
        if self.buf.len() < at + 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([self.buf[at], self.buf[at + 1]]);
        if count == -1 {
            self.ended = true;
            return Ok(Some(at + 2));
        }
        if count as usize != self.columns.len() {
            return Err(bad(format!(
                "row has {count} fields, the COPY names {}",
                self.columns.len()
            )));
        }
        // Check the whole row is here before taking any of it.
        let mut p = at + 2;
        let mut fields = Vec::with_capacity(self.columns.len());
        for _ in 0..count {
            if self.buf.len() < p + 4 {
                return Ok(None);
            }
            let len = i32_at(&self.buf, p);
            p += 4;
            if len < 0 {
                fields.push(None);
                continue;
            }
            let len = len as usize;
            if self.buf.len() < p + len {
                return Ok(None);
            }
            fields.push(Some(p..p + len));
            p += len;
        }
        for (b, f) in self.columns.iter_mut().zip(fields) {
            match f {
                Some(r) => b.append_value(&self.buf[r]),
                None => b.append_null(),
            }
        }
        self.rows += 1;
        Ok(Some(p))
    }

    /// Bytes received and not decoded into a batch yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Turns the rows so far into a batch.
    pub fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays = self
            .columns
            .iter_mut()
            .zip(self.schema.fields())
            .map(|(b, f)| {
                decode(&b.finish(), f.data_type()).map_err(|e| match e {
                    SqlError::InvalidInput(m) | SqlError::InvalidBinary(m) => {
                        bad(format!("column {}: {m}", f.name()))
                    }
                    SqlError::DatetimeOverflow(m) => {
                        SqlError::DatetimeOverflow(format!("column {}: {m}", f.name()))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.batches
            .push(RecordBatch::try_new(self.schema.clone(), arrays)?);
        self.rows = 0;
        Ok(())
    }

    /// Ends the stream: anything left over is an error.
    pub fn finish(&mut self) -> Result<()> {
        if !self.header_done && !self.buf.is_empty() {
            return Err(bad("truncated header"));
        }
        if !self.ended && !self.buf.is_empty() {
            return Err(bad("truncated row"));
        }
        self.flush()
    }
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn supported(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Binary
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Microsecond, _)
            | DataType::Decimal128(_, _)
    )
}

/// Fixed-width values: exactly `N` bytes each.
fn fixed<const N: usize>(raw: &BinaryArray) -> Result<Vec<Option<[u8; N]>>> {
    raw.iter()
        .map(|v| {
            v.map(|b| {
                <[u8; N]>::try_from(b).map_err(|_| {
                    SqlError::InvalidInput(format!("a {}-byte value, expected {N}", b.len()))
                })
            })
            .transpose()
        })
        .collect()
}

/// Raw binary-format values as an array of type `t`.
fn decode(raw: &BinaryArray, t: &DataType) -> Result<ArrayRef> {
    Ok(match t {
        DataType::Boolean => Arc::new(
            fixed::<1>(raw)?
                .into_iter()
                .map(|v| v.map(|b| b[0] != 0))
                .collect::<BooleanArray>(),
        ),
        DataType::Int16 => Arc::new(
            fixed::<2>(raw)?
                .into_iter()
                .map(|v| v.map(i16::from_be_bytes))
                .collect::<Int16Array>(),
        ),
        DataType::Int32 => Arc::new(
            fixed::<4>(raw)?
                .into_iter()
                .map(|v| v.map(i32::from_be_bytes))
                .collect::<Int32Array>(),
        ),
        DataType::Int64 => Arc::new(
            fixed::<8>(raw)?
                .into_iter()
                .map(|v| v.map(i64::from_be_bytes))
                .collect::<Int64Array>(),
        ),
        DataType::Float32 => Arc::new(
            fixed::<4>(raw)?
                .into_iter()
                .map(|v| v.map(f32::from_be_bytes))
                .collect::<Float32Array>(),
        ),
        DataType::Float64 => Arc::new(
            fixed::<8>(raw)?
                .into_iter()
                .map(|v| v.map(f64::from_be_bytes))
                .collect::<Float64Array>(),
        ),
        DataType::Date32 => Arc::new(
            fixed::<4>(raw)?
                .into_iter()
                .map(|v| v.map(|b| date_from_pg(i32::from_be_bytes(b))).transpose())
                .collect::<Result<Date32Array>>()?,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(
            fixed::<8>(raw)?
                .into_iter()
                .map(|v| {
                    v.map(|b| timestamp_from_pg(i64::from_be_bytes(b)))
                        .transpose()
                })
                .collect::<Result<TimestampMicrosecondArray>>()?
                .with_timezone_opt(tz.clone()),
        ),
        DataType::Utf8 => {
            let values = raw
                .iter()
                .map(|v| {
                    v.map(|b| {
                        std::str::from_utf8(b)
                            .map_err(|_| SqlError::InvalidInput("text is not valid UTF-8".into()))
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(StringArray::from(values))
        }
        DataType::Binary => Arc::new(raw.clone()),
        DataType::Decimal128(p, s) => Arc::new(
            raw.iter()
                .map(|v| v.map(|b| numeric_from_pg(b, *s)).transpose())
                .collect::<Result<Decimal128Array>>()?
                .with_precision_and_scale(*p, *s)?,
        ),
        other => return Err(SqlError::NotSupported(format!("binary COPY of {other}"))),
    })
}

/// A binary `date` (days since 2000-01-01) as days since 1970-01-01.
/// PostgreSQL sends `infinity` and `-infinity` as the extreme `i32`s; a
/// date column here has no infinities, so they are refused, as is any day
/// whose shift would not fit.
fn date_from_pg(days: i32) -> Result<i32> {
    if days == i32::MAX || days == i32::MIN {
        return Err(SqlError::DatetimeOverflow(
            "date out of range: infinite dates are not supported".into(),
        ));
    }
    days.checked_add(PG_EPOCH_DAYS)
        .ok_or_else(|| SqlError::DatetimeOverflow("date out of range".into()))
}

/// A binary `timestamp` (microseconds since 2000-01-01) as microseconds
/// since 1970-01-01; infinities and shifts that would not fit are refused.
fn timestamp_from_pg(micros: i64) -> Result<i64> {
    if micros == i64::MAX || micros == i64::MIN {
        return Err(SqlError::DatetimeOverflow(
            "timestamp out of range: infinite timestamps are not supported".into(),
        ));
    }
    micros
        .checked_add(PG_EPOCH_MICROS)
        .ok_or_else(|| SqlError::DatetimeOverflow("timestamp out of range".into()))
}

/// PostgreSQL's binary `numeric` (base-10000 digits with a weight) as an
/// integer scaled by 10^`scale`.
fn numeric_from_pg(b: &[u8], scale: i8) -> Result<i128> {
    let bad = |why: &str| SqlError::InvalidBinary(format!("malformed numeric: {why}"));
    if b.len() < 8 {
        return Err(bad("shorter than its header"));
    }
    let word = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
    let ndigits = usize::try_from(word(0)).map_err(|_| bad("negative digit count"))?;
    let weight = word(2) as i32;
    let sign = u16::from_be_bytes([b[4], b[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => {
            return Err(SqlError::InvalidInput(
                "NaN does not fit a numeric column".into(),
            ));
        }
        0xD000 | 0xF000 => {
            return Err(SqlError::InvalidInput(
                "infinity does not fit a numeric column".into(),
            ));
        }
        _ => return Err(bad("invalid sign")),
    }
    if b.len() != 8 + 2 * ndigits {
        return Err(bad("length does not match its digit count"));
    }
    if (0..ndigits).any(|i| !(0..10_000).contains(&word(8 + 2 * i))) {
        return Err(bad("a digit outside 0..9999"));
    }
    // value = Σ digit_i · 10000^(weight − i); scaled by 10^scale.
    let mut out: i128 = 0;
    let overflow = || SqlError::InvalidInput("numeric value out of range".into());
    for i in 0..ndigits {
        let d = word(8 + 2 * i) as i128;
        let exp = 4 * (weight - i as i32) + scale as i32;
        let term = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|m| d.checked_mul(m))
                .ok_or_else(overflow)?
        } else {
            // Digits below the column's scale are rounded away.
            let div = 10i128.checked_pow((-exp) as u32).unwrap_or(i128::MAX);
            (d + div / 2) / div
        };
        out = out.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if sign == 0x4000 { -out } else { out })
}

/// Encodes batches in the binary COPY format: `header` is the signature
/// block, each row one chunk, then [`trailer`].
pub fn header() -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.extend_from_slice(&0i32.to_be_bytes()); // flags
    h.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    h
}

/// The end-of-data marker.
pub fn trailer() -> Vec<u8> {
    (-1i16).to_be_bytes().to_vec()
}

/// Every row of `batch`, in one buffer; returns it and where each row ends.
pub fn encode_rows(batch: &RecordBatch) -> Result<(Vec<u8>, Vec<usize>)> {
    let schema: &Schema = &batch.schema();
    for f in schema.fields() {
        if !supported(f.data_type())
            && !matches!(f.data_type(), DataType::LargeUtf8 | DataType::Utf8View)
        {
            return Err(SqlError::NotSupported(format!(
                "binary COPY of a {} column ({}); use the text or CSV format",
                f.data_type(),
                f.name()
            )));
        }
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::LargeUtf8 | DataType::Utf8View => {
                arrow::compute::cast(c, &DataType::Utf8).map_err(SqlError::from)
            }
            _ => Ok(c.clone()),
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 64);
    let mut ends = Vec::with_capacity(batch.num_rows());
    let n = columns.len() as i16;
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&n.to_be_bytes());
        for c in &columns {
            if c.is_null(row) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let mut value = |bytes: &[u8]| {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            };
            match c.data_type() {
                DataType::Boolean => value(&[c.as_boolean().value(row) as u8]),
                DataType::Int16 => value(
                    &c.as_primitive::<arrow::datatypes::Int16Type>()
                        .value(row)
                        .to_be_bytes(),
                ),
                DataType::Int32 => value(
                    &c.as_primitive::<arrow::datatypes::Int32Type>()
                        .value(row)
                        .to_be_bytes(),
                ),
                DataType::Int64 => value(
                    &c.as_primitive::<arrow::datatypes::Int64Type>()
                        .value(row)
                        .to_be_bytes(),
                ),
                DataType::Float32 => value(
                    &c.as_primitive::<arrow::datatypes::Float32Type>()
                        .value(row)
                        .to_be_bytes(),
                ),
                DataType::Float64 => value(
                    &c.as_primitive::<arrow::datatypes::Float64Type>()
                        .value(row)
                        .to_be_bytes(),
                ),
                DataType::Date32 => value(
                    &c.as_primitive::<arrow::datatypes::Date32Type>()
                        .value(row)
                        .checked_sub(PG_EPOCH_DAYS)
                        .ok_or_else(|| SqlError::DatetimeOverflow("date out of range".into()))?
                        .to_be_bytes(),
                ),
                DataType::Timestamp(TimeUnit::Microsecond, _) => value(
                    &c.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                        .value(row)
                        .checked_sub(PG_EPOCH_MICROS)
                        .ok_or_else(|| SqlError::DatetimeOverflow("timestamp out of range".into()))?
                        .to_be_bytes(),
                ),
                DataType::Utf8 => value(c.as_string::<i32>().value(row).as_bytes()),
                DataType::Binary => value(c.as_binary::<i32>().value(row)),
                DataType::Decimal128(_, s) => value(&numeric_to_pg(
                    c.as_primitive::<arrow::datatypes::Decimal128Type>()
                        .value(row),
                    *s,
                )),
                other => {
                    return Err(SqlError::NotSupported(format!("binary COPY of {other}")));
                }
            }
        }
        ends.push(out.len());
    }
    Ok((out, ends))
}

/// An integer scaled by 10^`scale` in PostgreSQL's binary `numeric`.
fn numeric_to_pg(v: i128, scale: i8) -> Vec<u8> {
    let scale = scale.max(0) as usize;
    let digits = v.unsigned_abs().to_string();
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    // Whole groups of four decimal digits, counted from the decimal point.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let all = format!(
        "{}{int_part}{frac_part}{}",
        "0".repeat(int_pad),
        "0".repeat(frac_pad)
    );
    let mut groups: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + (d - b'0') as i16))
        .collect();
    let mut weight = ((int_pad + int_part.len()) / 4) as i16 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&(if v < 0 { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn numeric_round_trips_through_the_wire_format() {
        for (v, s) in [
            (12_345_678i128, 3i8),
            (-5, 2),
            (0, 2),
            (1, 4),
            (100_000_000, 0),
            (123_456_789_012_345, 6),
        ] {
            let wire = numeric_to_pg(v, s);
            assert_eq!(numeric_from_pg(&wire, s).unwrap(), v, "{v} scale {s}");
        }
        // 12345.678 as PostgreSQL sends it: digits [1, 2345, 6780], weight 1.
        let pg = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 9, 41, 26, 124];
        assert_eq!(numeric_from_pg(&pg, 3).unwrap(), 12_345_678);
    }

    /// Hostile values get typed errors, never a panic or a wrapped value.
    #[test]
    fn malformed_values_are_refused_with_their_sqlstate() {
        // A negative digit count (it sized a loop by `usize::MAX`).
        let neg = [0xff, 0xff, 0, 0, 0, 0, 0, 0];
        assert_eq!(numeric_from_pg(&neg, 2).unwrap_err().sqlstate(), "22P03");
        // A digit count past the bytes, a digit past 9999, a bad sign.
        let short = [0, 2, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(numeric_from_pg(&short, 0).unwrap_err().sqlstate(), "22P03");
        let big_digit = [0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10];
        assert_eq!(
            numeric_from_pg(&big_digit, 0).unwrap_err().sqlstate(),
            "22P03"
        );
        let sign = [0, 0, 0, 0, 0x12, 0x34, 0, 0];
        assert_eq!(numeric_from_pg(&sign, 0).unwrap_err().sqlstate(), "22P03");
        let inf = [0, 0, 0, 0, 0xD0, 0, 0, 0];
        assert_eq!(numeric_from_pg(&inf, 0).unwrap_err().sqlstate(), "22P02");
        // A huge weight overflows into an error.
        let huge = [0, 1, 0x7f, 0xff, 0, 0, 0, 0, 0, 1];
        assert_eq!(numeric_from_pg(&huge, 0).unwrap_err().sqlstate(), "22P02");
        // Infinite dates and timestamps, and shifts past the range.
        for d in [i32::MAX, i32::MIN, i32::MAX - 1] {
            assert_eq!(date_from_pg(d).unwrap_err().sqlstate(), "22008", "{d}");
        }
        for t in [i64::MAX, i64::MIN, i64::MAX - 1] {
            assert_eq!(timestamp_from_pg(t).unwrap_err().sqlstate(), "22008", "{t}");
        }
        assert_eq!(date_from_pg(0).unwrap(), PG_EPOCH_DAYS);
    }

    /// A whole COPY stream with an infinite timestamp, a negative header
    /// extension, or a huge one: an error, and nothing decoded.
    #[test]
    fn hostile_streams_are_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]));
        let mut stream = header();
        stream.extend(1i16.to_be_bytes());
        stream.extend(8i32.to_be_bytes());
        stream.extend(i64::MAX.to_be_bytes());
        stream.extend(trailer());
        let mut d = BinaryIn::new(schema.clone()).unwrap();
        d.feed(&stream).unwrap();
        let e = d.finish().unwrap_err();
        assert_eq!(e.sqlstate(), "22008", "{e}");
        assert!(e.to_string().contains("column ts"), "{e}");
        for ext in [-1i32, i32::MAX] {
            let mut h = SIGNATURE.to_vec();
            h.extend(0i32.to_be_bytes());
            h.extend(ext.to_be_bytes());
            let mut d = BinaryIn::new(schema.clone()).unwrap();
            let e = d.feed(&h).unwrap_err();
            assert_eq!(e.sqlstate(), "22P03", "{ext}: {e}");
        }
        // A timestamp stored near the end of the range cannot be sent.
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMicrosecondArray::from(vec![i64::MIN]))],
        )
        .unwrap();
        assert_eq!(encode_rows(&batch).unwrap_err().sqlstate(), "22008");
    }

    #[test]
    fn rows_round_trip_and_partial_chunks_wait() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("héllo"), Some("")])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_764_000_000_000_000), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let (rows, _) = encode_rows(&batch).unwrap();
        let mut stream = header();
        stream.extend(rows);
        stream.extend(trailer());
        let mut d = BinaryIn::new(schema).unwrap();
        // One byte at a time: every split point must work.
        for b in &stream {
            d.feed(std::slice::from_ref(b)).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(d.batches, vec![batch]);
    }

    #[test]
    fn malformed_streams_are_rejected() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut d = BinaryIn::new(schema.clone()).unwrap();
        assert!(d.feed(b"not a copy stream at all").is_err());
        let mut d = BinaryIn::new(schema.clone()).unwrap();
        let mut s = header();
        s.extend(2i16.to_be_bytes()); // two fields for a one-column COPY
        assert!(d.feed(&s).is_err());
        let mut d = BinaryIn::new(schema).unwrap();
        let mut s = header();
        s.extend(1i16.to_be_bytes());
        s.extend(4i32.to_be_bytes()); // an int8 sent as 4 bytes
        s.extend(7i32.to_be_bytes());
        s.extend(trailer());
        d.feed(&s).unwrap();
        assert!(d.finish().is_err());
    }
}
