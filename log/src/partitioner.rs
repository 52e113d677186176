//! Choosing a partition for each row from the stream's key columns.
//!
//! The hash is XXH3-64 over a canonical little-endian encoding of each key
//! value, chained column by column, so the mapping from key to partition is
//! stable across processes, versions and machines (it must be: any agent may
//! accept a write for any key). NULL hashes as a fixed marker.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{LogError, Result};

const NULL_MARKER: &[u8] = b"\x00streamhouse-null\x00";

/// Whether a column of this type may be part of a stream key.
pub fn is_hashable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

fn hash_primitive<T: ArrowPrimitiveType>(col: &ArrayRef, hashes: &mut [u64]) {
    let arr = col.as_primitive::<T>();
    // The values buffer, viewed as bytes (native order: every supported
    // target is little-endian).
    let bytes = arr.values().inner().as_slice();
    let width = std::mem::size_of::<T::Native>();
    for (i, h) in hashes.iter_mut().enumerate() {
        *h = if arr.is_null(i) {
            xxh3_64_with_seed(NULL_MARKER, *h)
        } else {
            xxh3_64_with_seed(&bytes[i * width..(i + 1) * width], *h)
        };
    }
}

fn hash_bytes<'a>(values: impl Iterator<Item = Option<&'a [u8]>>, hashes: &mut [u64]) {
    for (v, h) in values.zip(hashes.iter_mut()) {
        *h = xxh3_64_with_seed(v.unwrap_or(NULL_MARKER), *h);
    }
}

/// One hash per row over the given key columns.
pub fn hash_rows(batch: &RecordBatch, key: &[usize]) -> Result<Vec<u64>> {
    let mut hashes = vec![0u64; batch.num_rows()];
    for &k in key {
        let col = batch.column(k);
        match col.data_type() {
            DataType::Boolean => {
                let a = col.as_boolean();
                let vals = (0..a.len()).map(|i| {
                    a.is_valid(i)
                        .then(|| if a.value(i) { &[1u8][..] } else { &[0u8][..] })
                });
                hash_bytes(vals, &mut hashes)
            }
            DataType::Int8 => hash_primitive::<Int8Type>(col, &mut hashes),
            DataType::Int16 => hash_primitive::<Int16Type>(col, &mut hashes),
            DataType::Int32 | DataType::Date32 => {
                let c = arrow::compute::cast(col, &DataType::Int32)?;
                hash_primitive::<Int32Type>(&c, &mut hashes)
            }
            DataType::Int64 | DataType::Date64 | DataType::Timestamp(_, _) => {
                let c = arrow::compute::cast(col, &DataType::Int64)?;
                hash_primitive::<Int64Type>(&c, &mut hashes)
            }
            DataType::UInt8 => hash_primitive::<UInt8Type>(col, &mut hashes),
            DataType::UInt16 => hash_primitive::<UInt16Type>(col, &mut hashes),
            DataType::UInt32 => hash_primitive::<UInt32Type>(col, &mut hashes),
            DataType::UInt64 => hash_primitive::<UInt64Type>(col, &mut hashes),
            DataType::Decimal128(_, _) => hash_primitive::<Decimal128Type>(col, &mut hashes),
            DataType::Utf8 => hash_bytes(
                col.as_string::<i32>().iter().map(|v| v.map(str::as_bytes)),
                &mut hashes,
            ),
            DataType::LargeUtf8 => hash_bytes(
                col.as_string::<i64>().iter().map(|v| v.map(str::as_bytes)),
                &mut hashes,
            ),
            DataType::Utf8View => hash_bytes(
                col.as_string_view().iter().map(|v| v.map(str::as_bytes)),
                &mut hashes,
            ),
            DataType::Binary => hash_bytes(col.as_binary::<i32>().iter(), &mut hashes),
            DataType::LargeBinary => hash_bytes(col.as_binary::<i64>().iter(), &mut hashes),
            DataType::BinaryView => hash_bytes(col.as_binary_view().iter(), &mut hashes),
            other => {
                return Err(LogError::InvalidArgument(format!(
                    "cannot hash key column of type {other}"
                )));
            }
        }
    }
    Ok(hashes)
}

/// Splits `batch` by key hash into at most `partitions` batches, returned as
/// `(partition, rows)` in partition order. Row order within a partition is
/// the order of the input.
pub fn split_by_key(
    batch: &RecordBatch,
    key: &[usize],
    partitions: u32,
) -> Result<Vec<(u32, RecordBatch)>> {
    let hashes = hash_rows(batch, key)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); partitions as usize];
    for (i, h) in hashes.iter().enumerate() {
        rows[(h % partitions as u64) as usize].push(i as u32);
    }
    let non_empty = rows.iter().filter(|r| !r.is_empty()).count();
    if non_empty <= 1 {
        let p = rows.iter().position(|r| !r.is_empty()).unwrap_or(0) as u32;
        return Ok(vec![(p, batch.clone())]);
    }
    let mut out = Vec::with_capacity(non_empty);
    for (p, idx) in rows.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let taken = take_record_batch(batch, &UInt32Array::from(idx))?;
        out.push((p as u32, taken));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(users: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("user", DataType::Utf8, true),
        ]));
        let ids = Int64Array::from_iter_values(0..users.len() as i64);
        RecordBatch::try_new(
            schema,
            vec![Arc::new(ids), Arc::new(StringArray::from(users.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn same_key_same_partition_and_order_kept() {
        let b = batch(&[
            Some("a"),
            Some("b"),
            Some("a"),
            None,
            Some("c"),
            Some("a"),
            None,
        ]);
        let parts = split_by_key(&b, &[1], 8).unwrap();
        let total: usize = parts.iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(total, 7);
        for (i, (_, part)) in parts.iter().enumerate() {
            let users = part.column(1).as_string::<i32>();
            let ids = part.column(0).as_primitive::<Int64Type>();
            // Ids ascend within each partition: input order is kept.
            assert!(ids.values().windows(2).all(|w| w[0] < w[1]));
            // Each user lands in exactly one partition.
            for (j, (_, other)) in parts.iter().enumerate() {
                if i == j {
                    continue;
                }
                let o = other.column(1).as_string::<i32>();
                for u in users.iter() {
                    assert!(!o.iter().any(|x| x == u), "{u:?} split over partitions");
                }
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        // The partition of a key must never change between releases.
        let h = hash_rows(&batch(&[Some("user-42")]), &[1]).unwrap();
        assert_eq!(h[0], xxh3_64_with_seed(b"user-42", 0));
    }
}
