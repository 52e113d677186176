//! The Schema Registry: subjects, their versions, global schema ids and
//! compatibility rules, as Confluent's Schema Registry defines them, kept
//! in the metadata store so that every agent of a cluster serves the same
//! registry. The HTTP admin door serves it at its root
//! (`schema.registry.url = http://host:port`).
//!
//! - [`registry`]: [`Registry`], the operations the REST API calls.
//! - [`formats`]: parsing a schema of each type, its canonical form and
//!   fingerprint, and whether one schema can read data written with another.
//! - [`levels`]: compatibility levels and modes.
//! - [`decode`]: Avro values in Confluent's wire format into Arrow batches;
//!   [`encode`] the other way.
//! - [`columns`]: the columns of a stream that follows an Avro schema.
//! - [`values`]: record values of each schema type into a stream's rows
//!   and back.
//! - [`error`]: errors with Confluent's error codes.

pub mod columns;
pub mod decode;
pub mod encode;
pub mod error;
pub mod formats;
pub mod levels;
pub mod registry;
pub mod values;

pub use error::RegistryError;
pub use levels::{Compatibility, Mode};
pub use registry::{Registry, SchemaRequest, VersionRef};
