//! Rows on a terminal or in a pipe: a table for people, JSON lines or CSV
//! for programs.

use std::io::Write;

use arrow::array::RecordBatch;
use clap::ValueEnum;

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table
    Table,
    /// One JSON object per row
    Json,
    /// Comma-separated values with a header line
    Csv,
}

/// Prints batches; a header (table, CSV) only with the first non-empty one
/// unless `header` says otherwise.
pub struct Printer<W: Write> {
    format: Format,
    out: W,
    header: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(format: Format, out: W) -> Self {
        Printer {
            format,
            out,
            header: true,
        }
    }

    pub fn print(&mut self, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return Ok(());
        }
        match self.format {
            Format::Table => {
                let owned: Vec<RecordBatch> = batches.into_iter().cloned().collect();
                writeln!(
                    self.out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&owned)?
                )?;
            }
            Format::Json => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut self.out);
                w.write_batches(&batches)?;
                w.finish()?;
            }
            Format::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(self.header)
                    .build(&mut self.out);
                for b in batches {
                    w.write(b)?;
                }
                self.header = false;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}
