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
//! - [`decode`]: Avro values in Confluent's wire format into Arrow batches.
//! - [`error`]: errors with Confluent's error codes.

pub mod decode;
pub mod error;
pub mod formats;
pub mod levels;
pub mod registry;

pub use error::RegistryError;
pub use levels::{Compatibility, Mode};
pub use registry::{Registry, SchemaRequest, VersionRef};
