//! `COPY … FROM STDIN` and `COPY … TO STDOUT`, in PostgreSQL's text, CSV
//! and binary ([`crate::copy_binary`]) formats.
//!
//! Copy-in decodes bytes into Arrow batches as they arrive (arrow-csv's
//! incremental decoder, straight into the stream's column types), keeps the
//! batches, and appends them all in one atomic append when the client says
//! it is done: a COPY is acknowledged only when every row is durable, and a
//! failed COPY writes nothing. Copy-out encodes result batches as they are
//! produced.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::csv::ReaderBuilder;
use arrow::csv::reader::Decoder;
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::MemoryReservation;
use futures::{Stream, StreamExt};
use sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};

use crate::copy_binary::{self, BinaryIn};
use crate::error::{Result, SqlError};

/// A COPY data format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub csv: bool,
    /// PostgreSQL's binary format ([`crate::copy_binary`]).
    pub binary: bool,
    pub header: bool,
    pub delimiter: u8,
    pub quote: u8,
    /// The string that means NULL (text: `\N`; CSV: empty).
    pub null: String,
}

impl CopyFormat {
    /// PostgreSQL's defaults, then the statement's options.
    pub fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self> {
        let (mut csv, mut binary) = (false, false);
        let (mut header, mut delimiter, mut quote, mut null) = (false, None, b'"', None);
        let byte = |c: char, what: &str| -> Result<u8> {
            u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
                SqlError::InvalidInput(format!("COPY {what} must be one ASCII character"))
            })
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_lowercase().as_str() {
                    "csv" => (csv, binary) = (true, false),
                    "text" => (csv, binary) = (false, false),
                    "binary" => (csv, binary) = (false, true),
                    other => {
                        return Err(SqlError::NotSupported(format!("COPY format {other}")));
                    }
                },
                CopyOption::Header(h) => header = *h,
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyOption::Quote(c) => quote = byte(*c, "quote")?,
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Freeze(_) | CopyOption::Encoding(_) => {}
                other => return Err(SqlError::NotSupported(format!("COPY option {other}"))),
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = byte(*q, "quote")?,
                            other => {
                                return Err(SqlError::NotSupported(format!("COPY option {other}")));
                            }
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Binary => binary = true,
                other => return Err(SqlError::NotSupported(format!("COPY option {other}"))),
            }
        }
        if binary && (header || delimiter.is_some() || null.is_some()) {
            return Err(SqlError::Syntax(
                "cannot specify HEADER, DELIMITER or NULL in BINARY mode".into(),
            ));
        }
        Ok(CopyFormat {
            csv,
            binary,
            header,
            delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
            quote,
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
        })
    }
}

/// What a finished copy-in decoded, ready to append.
pub(crate) struct Decoded {
    pub stream: String,
    pub declared: SchemaRef,
    pub targets: Vec<usize>,
    pub batches: Vec<RecordBatch>,
}

/// A copy-in in progress.
pub struct CopyIn {
    pub(crate) stream: String,
    /// Declared-column indices the data's columns go to.
    pub(crate) targets: Vec<usize>,
    pub(crate) declared: SchemaRef,
    format: CopyFormat,
    decoder: Decoder,
    /// The binary-format decoder, for `FORMAT binary`.
    binary: Option<BinaryIn>,
    batches: Vec<RecordBatch>,
    /// Bytes of an unfinished line (held back until its newline arrives).
    partial: Vec<u8>,
    /// The `\.` end-of-data line was seen: later data is ignored.
    ended: bool,
    /// CSV: the data so far ends inside a quoted field.
    in_quotes: bool,
    rows: u64,
    /// What the copy holds until its one append (decoded batches and
    /// undecoded bytes), reserved from the session's query memory: past
    /// it the COPY fails with 53200 instead of exhausting the machine.
    memory: MemoryReservation,
    /// Bytes of the decoded batches so far, and how many of them.
    held: usize,
    counted: usize,
}

impl std::fmt::Debug for CopyIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyIn")
            .field("stream", &self.stream)
            .field("rows", &self.rows)
            .finish()
    }
}

impl CopyIn {
    pub(crate) fn new(
        stream: String,
        declared: SchemaRef,
        targets: Vec<usize>,
        format: CopyFormat,
        memory: MemoryReservation,
    ) -> Result<Self> {
        // Parse straight into the target columns' types.
        let fields: Vec<Field> = targets
            .iter()
            .map(|&i| declared.field(i).as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let binary = format
            .binary
            .then(|| BinaryIn::new(schema.clone()))
            .transpose()?;
        let mut builder = ReaderBuilder::new(schema)
            .with_batch_size(64 * 1024)
            .with_header(format.header && format.csv);
        if format.csv {
            builder = builder
                .with_delimiter(format.delimiter)
                .with_quote(format.quote);
        }
        // NULLs reach the decoder as a marker (see `mark_csv_nulls`), so an
        // empty string stays an empty string.
        builder = builder.with_null_regex(null_regex()?);
        // Text format is re-encoded as CSV line by line (see `feed_text`).
        Ok(CopyIn {
            stream,
            targets,
            declared,
            decoder: builder.build_decoder(),
            binary,
            format,
            batches: Vec::new(),
            partial: Vec::new(),
            ended: false,
            in_quotes: false,
            rows: 0,
            memory,
            held: 0,
            counted: 0,
        })
    }

    /// Columns the client sends.
    pub fn columns(&self) -> usize {
        self.targets.len()
    }

    /// Whether the data is in the binary format.
    pub fn binary(&self) -> bool {
        self.format.binary
    }

    /// Decodes a chunk of copy data. Complete lines are decoded at once; an
    /// unfinished last line waits for the next chunk.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.feed_data(data)?;
        self.reserve()
    }

    /// Reserves what the copy holds now: the batches decoded so far (each
    /// counted once) and the bytes waiting to be decoded.
    fn reserve(&mut self) -> Result<()> {
        let (batches, waiting) = match &self.binary {
            Some(b) => (&b.batches, b.buffered()),
            None => (&self.batches, self.partial.len()),
        };
        self.held += batches[self.counted..]
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>();
        self.counted = batches.len();
        self.memory.try_resize(self.held.saturating_add(waiting))?;
        Ok(())
    }

    fn feed_data(&mut self, data: &[u8]) -> Result<()> {
        if let Some(b) = self.binary.as_mut() {
            return b.feed(data);
        }
        if self.ended {
            return Ok(());
        }
        self.partial.extend_from_slice(data);
        let Some(last_nl) = memchr::memrchr(b'\n', &self.partial) else {
            return Ok(());
        };
        let rest = self.partial.split_off(last_nl + 1);
        let mut complete = std::mem::replace(&mut self.partial, rest);
        if let Some(end) = end_marker(&complete) {
            complete.truncate(end);
            self.partial.clear();
            self.ended = true;
        }
        self.decode_lines(&complete)
    }

    fn decode_lines(&mut self, lines: &[u8]) -> Result<()> {
        if self.format.csv {
            let marked = mark_csv_nulls(lines, &self.format, &mut self.in_quotes);
            self.decode(&marked)
        } else {
            let csv = text_to_csv(lines, self.format.delimiter, &self.format.null)?;
            self.decode(&csv)
        }
    }

    fn decode(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let n = self.decoder.decode(buf).map_err(bad_data)?;
            if n == 0 {
                self.flush()?;
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(b) = self.decoder.flush().map_err(bad_data)? {
            self.rows += b.num_rows() as u64;
            self.batches.push(b);
        }
        Ok(())
    }

    /// Finishes decoding; the batches to append, in the declared schema.
    pub(crate) fn finish(mut self: Box<Self>) -> Result<Decoded> {
        if let Some(mut b) = self.binary.take() {
            b.finish()?;
            self.batches = std::mem::take(&mut b.batches);
        }
        if !self.partial.is_empty() {
            let mut last = std::mem::take(&mut self.partial);
            if end_marker(&last) != Some(0) {
                last.push(b'\n');
                self.decode_lines(&last)?;
            }
        }
        self.flush()?;
        let this = *self;
        Ok(Decoded {
            stream: this.stream,
            declared: this.declared,
            targets: this.targets,
            batches: this.batches,
        })
    }
}

/// Where a `\.` end-of-data line starts in `lines`, if there is one.
fn end_marker(lines: &[u8]) -> Option<usize> {
    let is_marker = |at: usize| {
        let line = &lines[at..];
        let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
        line.strip_suffix(b"\r").unwrap_or(line) == b"\\."
    };
    if lines.starts_with(b"\\.") && is_marker(0) {
        return Some(0);
    }
    memchr::memmem::find_iter(lines, b"\n\\.")
        .map(|i| i + 1)
        .find(|&at| is_marker(at))
}

fn bad_data(e: arrow::error::ArrowError) -> SqlError {
    SqlError::InvalidInput(format!("invalid COPY data: {e}"))
}

/// What a NULL field becomes before the CSV decoder sees it: a NUL byte
/// cannot occur in PostgreSQL text, so no real value looks like it.
const NULL_MARK: &[u8] = b"\0N";

fn null_regex() -> Result<regex::Regex> {
    regex::Regex::new("^\\x00N$").map_err(|e| SqlError::Internal(format!("COPY NULL marker: {e}")))
}

/// PostgreSQL's CSV rule: a field is NULL when it is unquoted and equals
/// the NULL string (empty by default); a quoted field never is, so `""` is
/// an empty string. Rewrites NULL fields as [`NULL_MARK`]; `in_quotes`
/// carries the quoting state from one chunk to the next.
fn mark_csv_nulls(data: &[u8], format: &CopyFormat, in_quotes: &mut bool) -> Vec<u8> {
    let null = format.null.as_bytes();
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    let mut field_start = 0;
    let mut quoted = false;
    let end_field = |out: &mut Vec<u8>, start: usize, quoted: bool| {
        let field = &out[start..];
        let field = field.strip_suffix(b"\r").unwrap_or(field);
        if !quoted && field == null {
            let cr = out[start..].ends_with(b"\r");
            out.truncate(start);
            out.extend_from_slice(NULL_MARK);
            if cr {
                out.push(b'\r');
            }
        }
    };
    let mut i = 0;
    while i < data.len() {
        let rest = &data[i..];
        if *in_quotes {
            // Inside quotes only the quote matters (`""` reopens them).
            match memchr::memchr(format.quote, rest) {
                Some(j) => {
                    out.extend_from_slice(&rest[..=j]);
                    i += j + 1;
                    *in_quotes = false;
                }
                None => {
                    out.extend_from_slice(rest);
                    break;
                }
            }
            continue;
        }
        let Some(j) = memchr::memchr3(format.quote, format.delimiter, b'\n', rest) else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(&rest[..j]);
        let b = rest[j];
        i += j + 1;
        if b == format.quote {
            *in_quotes = true;
            quoted = true;
        } else {
            end_field(&mut out, field_start, quoted);
            field_start = out.len() + 1;
            quoted = false;
        }
        out.push(b);
    }
    out
}

/// Rewrites text-format lines as CSV records: NULLs become [`NULL_MARK`],
/// every other value is unescaped and quoted.
fn text_to_csv(lines: &[u8], delimiter: u8, null: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(lines.len() + lines.len() / 4);
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line == b"\\." {
            continue;
        }
        for (i, field) in line.split(|&b| b == delimiter).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if field == null.as_bytes() {
                out.extend_from_slice(NULL_MARK);
                continue;
            }
            out.push(b'"');
            let mut it = field.iter();
            while let Some(&b) = it.next() {
                let c = if b == b'\\' {
                    match it.next() {
                        Some(b't') => b'\t',
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b'b') => 8,
                        Some(b'f') => 12,
                        Some(b'v') => 11,
                        Some(&o) => o,
                        None => b'\\',
                    }
                } else {
                    b
                };
                if c == b'"' {
                    out.push(b'"');
                }
                out.push(c);
            }
            out.push(b'"');
        }
        out.push(b'\n');
    }
    Ok(out)
}

/// Encodes result batches in a COPY format: one chunk per row, as
/// PostgreSQL sends them (clients parse a row per CopyData message). Rows of
/// a batch are written into one buffer and sliced out without copying.
pub fn copy_out(
    stream: SendableRecordBatchStream,
    format: CopyFormat,
) -> futures::stream::BoxStream<'static, Result<Bytes>> {
    if format.binary {
        return copy_out_binary(stream).boxed();
    }
    let header = format.csv && format.header;
    let names: Vec<String> = stream
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let head = header.then(|| {
        let mut line = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                line.push(format.delimiter);
            }
            write_csv_value(&mut line, n, &format);
        }
        line.push(b'\n');
        Ok(Bytes::from(line))
    });
    let rows = row_chunks(stream, move |b| encode_rows(b, &format));
    futures::stream::iter(head).chain(rows).boxed()
}

/// Batches encoded by `encode` (one buffer per batch and where each row
/// ends), as one chunk per row sliced out of that buffer without copying.
fn row_chunks(
    stream: SendableRecordBatchStream,
    encode: impl Fn(&RecordBatch) -> Result<(Vec<u8>, Vec<usize>)> + Send + 'static,
) -> impl Stream<Item = Result<Bytes>> + Send {
    stream
        .map(move |batch| -> Result<Vec<Result<Bytes>>> {
            let (buf, ends) = encode(&batch?)?;
            let buf = Bytes::from(buf);
            let mut start = 0;
            Ok(ends
                .into_iter()
                .map(|end| {
                    let row = buf.slice(start..end);
                    start = end;
                    Ok(row)
                })
                .collect())
        })
        .flat_map(|r| match r {
            Ok(rows) => futures::stream::iter(rows),
            Err(e) => futures::stream::iter(vec![Err(e)]),
        })
}

/// [`copy_out`] in the binary format.
fn copy_out_binary(stream: SendableRecordBatchStream) -> impl Stream<Item = Result<Bytes>> + Send {
    let rows = row_chunks(stream, copy_binary::encode_rows);
    // As PostgreSQL does, the header goes out with the first row (or with
    // the trailer when there are none): clients expect a row after it.
    let mut header = Some(copy_binary::header());
    rows.chain(futures::stream::once(async {
        Ok(Bytes::from(copy_binary::trailer()))
    }))
    .map(move |chunk| match (header.take(), chunk) {
        (Some(mut h), Ok(c)) => {
            h.extend_from_slice(&c);
            Ok(Bytes::from(h))
        }
        (_, other) => other,
    })
}

const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

/// Writes every row of `batch`; returns the buffer and where each row ends.
/// Text: NULL as the null string, backslash escapes. CSV: fields quoted when
/// they hold the delimiter, the quote, a line break, or are empty (so an
/// empty string stays distinct from NULL).
fn encode_rows(batch: &RecordBatch, format: &CopyFormat) -> Result<(Vec<u8>, Vec<usize>)> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default()
        .with_null("")
        .with_timestamp_format(Some(TIMESTAMP_FORMAT))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%#z"));
    let cols = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2 + 64);
    let mut ends = Vec::with_capacity(batch.num_rows());
    let mut value = String::new();
    for row in 0..batch.num_rows() {
        for (i, (f, c)) in cols.iter().zip(batch.columns()).enumerate() {
            if i > 0 {
                out.push(format.delimiter);
            }
            if c.is_null(row) {
                out.extend_from_slice(format.null.as_bytes());
                continue;
            }
            value.clear();
            use std::fmt::Write;
            write!(value, "{}", f.value(row))
                .map_err(|e| SqlError::Internal(format!("format value: {e}")))?;
            if format.csv {
                write_csv_value(&mut out, &value, format);
            } else {
                write_text_value(&mut out, &value, format.delimiter);
            }
        }
        out.push(b'\n');
        ends.push(out.len());
    }
    Ok((out, ends))
}

fn write_text_value(out: &mut Vec<u8>, value: &str, delimiter: u8) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            b if b == delimiter => {
                out.push(b'\\');
                out.push(b);
            }
            b => out.push(b),
        }
    }
}

fn write_csv_value(out: &mut Vec<u8>, value: &str, format: &CopyFormat) {
    let needs_quotes = value.is_empty()
        || value == format.null
        || value
            .bytes()
            .any(|b| b == format.delimiter || b == format.quote || b == b'\n' || b == b'\r');
    if !needs_quotes {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(format.quote);
    for b in value.bytes() {
        if b == format.quote {
            out.push(format.quote);
        }
        out.push(b);
    }
    out.push(format.quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_out_escapes_and_round_trips() {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::DataType;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("a\tb\\c\nd"), Some("")])),
            ],
        )
        .unwrap();
        let f = CopyFormat::from_options(&[], &[]).unwrap();
        let (text, ends) = encode_rows(&b, &f).unwrap();
        assert_eq!(ends, [13, 17]);
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            "1\ta\\tb\\\\c\\nd\n\\N\t\n"
        );
        // And back through the text reader.
        let csv = text_to_csv(&text, b'\t', "\\N").unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "\"1\",\"a\tb\\c\nd\"\n\0N,\"\"\n"
        );
    }

    #[test]
    fn csv_nulls_are_unquoted_null_strings() {
        let f = CopyFormat::from_options(
            &[CopyOption::Format(sqlparser::ast::Ident::new("csv"))],
            &[],
        )
        .unwrap();
        let mut q = false;
        let out = mark_csv_nulls(b"1,,\"\"\r\n2,\"a,\n", &f, &mut q);
        assert_eq!(out, b"1,\0N,\"\"\r\n2,\"a,\n".to_vec());
        assert!(q, "a quoted field continues into the next chunk");
        let out = mark_csv_nulls(b"b\",\n", &f, &mut q);
        assert_eq!(out, b"b\",\0N\n".to_vec());
        assert!(!q);
    }

    #[test]
    fn end_marker_only_on_its_own_line() {
        assert_eq!(end_marker(b"1,a\n\\.\n"), Some(4));
        assert_eq!(end_marker(b"\\.\r\n"), Some(0));
        assert_eq!(end_marker(b"1,\\.x\n"), None);
        assert_eq!(end_marker(b"1,a\n\\.x\n"), None);
    }

    #[test]
    fn text_lines_become_csv() {
        let csv = text_to_csv(b"1\tann\t\\N\n2\ta\\tb \"q\"\t3.5\n\\.\n", b'\t', "\\N").unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "\"1\",\"ann\",\0N\n\"2\",\"a\tb \"\"q\"\"\",\"3.5\"\n"
        );
    }
}
