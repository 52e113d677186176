//! Protobuf schemas: `.proto` source compiled in process with protox, or a
//! base64-encoded `FileDescriptorProto` (what Confluent's Python and Go
//! serialisers register); references are the files it imports, by their
//! import names, and Google's well-known types are always there.
//!
//! Whether a reader reads a writer's messages follows the wire format, as
//! Confluent's rules do: fields are matched by number; a field's type may
//! change only within a group that encodes alike (int32, uint32, int64,
//! uint64, bool and enums; sint32 and sint64; fixed32 and sfixed32; fixed64
//! and sfixed64; string and bytes) and a message field must stay the same
//! message; repeated stays repeated; a message of the writer's file must
//! still be there; a required field (proto2) may be neither added nor
//! removed. A field removed, or added as optional, is compatible.

use std::collections::HashMap;

use base64::Engine;
use prost::Message;
use prost_reflect::{Cardinality, DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::error::RegistryError;

/// The name the schema's own file gets when its source does not say.
const MAIN: &str = "schema.proto";

/// A compiled Protobuf schema: its file and everything it imports.
#[derive(Debug, Clone)]
pub struct Proto {
    pub pool: DescriptorPool,
    /// The schema's own file, in `pool`.
    pub file: String,
}

impl Proto {
    /// The messages of the schema's own file, top-level first then nested,
    /// in declaration order.
    pub fn messages(&self) -> Vec<MessageDescriptor> {
        let Some(file) = self.pool.get_file_by_name(&self.file) else {
            return Vec::new();
        };
        let mut out: Vec<MessageDescriptor> = file.messages().collect();
        let mut i = 0;
        while i < out.len() {
            let nested: Vec<_> = out[i].child_messages().collect();
            out.extend(nested);
            i += 1;
        }
        out
    }

    /// The message at `indexes` (Confluent's message indexes: the position
    /// among the file's top-level messages, then among each one's nested).
    pub fn message_at(&self, indexes: &[usize]) -> Option<MessageDescriptor> {
        let file = self.pool.get_file_by_name(&self.file)?;
        let (first, rest) = indexes.split_first().unwrap_or((&0, &[]));
        let mut m = file.messages().nth(*first)?;
        for i in rest {
            let next = m.child_messages().nth(*i)?;
            m = next;
        }
        Some(m)
    }
}

/// Files by import name: the references.
struct Named(HashMap<String, File>);

impl FileResolver for Named {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

/// A schema text as a file: base64 of a descriptor, or `.proto` source.
fn file_of(name: &str, text: &str) -> Result<File, RegistryError> {
    let invalid = |m: String| RegistryError::InvalidSchema(m);
    let trimmed = text.trim();
    let looks_encoded = !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_encoded && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed) {
        let mut descriptor = prost_types::FileDescriptorProto::decode(bytes.as_slice())
            .map_err(|e| invalid(format!("not a FileDescriptorProto: {e}")))?;
        if descriptor.name.as_deref().is_none_or(str::is_empty) {
            descriptor.name = Some(name.to_string());
        }
        return Ok(File::from_file_descriptor_proto(descriptor));
    }
    File::from_source(name, text).map_err(|e| invalid(format!("{e}")))
}

/// Compiles `text` with `references` (import name, text).
pub fn parse(text: &str, references: &[(String, String)]) -> Result<Proto, RegistryError> {
    let mut files = HashMap::new();
    for (name, reference) in references {
        files.insert(name.clone(), file_of(name, reference)?);
    }
    let main = file_of(MAIN, text)?;
    let file = main.name().to_string();
    files.insert(file.clone(), main);
    let mut resolver = ChainFileResolver::new();
    resolver.add(Named(files));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler
        .open_file(&file)
        .map_err(|e| RegistryError::InvalidSchema(format!("{e}")))?;
    let proto = Proto {
        pool: compiler.descriptor_pool(),
        file,
    };
    if proto.messages().is_empty() {
        return Err(RegistryError::InvalidSchema(
            "the schema declares no message".into(),
        ));
    }
    Ok(proto)
}

/// How a field's values are encoded on the wire: types of one group read
/// each other's values.
fn wire_group(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            "varint".into()
        }
        Kind::Sint32 | Kind::Sint64 => "zigzag varint".into(),
        Kind::Fixed32 | Kind::Sfixed32 => "fixed32".into(),
        Kind::Fixed64 | Kind::Sfixed64 => "fixed64".into(),
        Kind::String | Kind::Bytes => "length-delimited bytes".into(),
        Kind::Float => "float".into(),
        Kind::Double => "double".into(),
        Kind::Message(m) => format!("message {}", m.full_name()),
    }
}

fn kind_name(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Why `reader` cannot read messages written with `writer` (empty: it can).
pub fn cannot_read(writer: &Proto, reader: &Proto) -> Vec<String> {
    let mut out = Vec::new();
    for w in writer.messages() {
        let Some(r) = reader.pool.get_message_by_name(w.full_name()) else {
            out.push(format!("message {} is gone", w.full_name()));
            continue;
        };
        for wf in w.fields() {
            match r.get_field(wf.number()) {
                None if wf.cardinality() == Cardinality::Required => out.push(format!(
                    "required field {} (#{}) of {} is gone",
                    wf.name(),
                    wf.number(),
                    w.full_name()
                )),
                None => {}
                Some(rf) => {
                    if wire_group(&wf) != wire_group(&rf) {
                        out.push(format!(
                            "field #{} of {} changes from {} ({}) to {} ({})",
                            wf.number(),
                            w.full_name(),
                            kind_name(&wf),
                            wf.name(),
                            kind_name(&rf),
                            rf.name()
                        ));
                    }
                    if wf.is_list() != rf.is_list() || wf.is_map() != rf.is_map() {
                        out.push(format!(
                            "field {} (#{}) of {} changes between repeated and single",
                            rf.name(),
                            wf.number(),
                            w.full_name()
                        ));
                    }
                }
            }
        }
        for rf in r.fields() {
            if rf.cardinality() == Cardinality::Required && w.get_field(rf.number()).is_none() {
                out.push(format!(
                    "required field {} (#{}) of {} is new",
                    rf.name(),
                    rf.number(),
                    w.full_name()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"syntax = "proto3"; package shop;
        import "google/protobuf/timestamp.proto";
        message Order { int64 id = 1; string customer = 2; google.protobuf.Timestamp at = 3; }"#;

    fn proto(text: &str) -> Proto {
        parse(text, &[]).unwrap()
    }

    #[test]
    fn source_and_descriptors_compile_with_imports() {
        let p = proto(V1);
        let order = p.message_at(&[0]).unwrap();
        assert_eq!(order.full_name(), "shop.Order");
        assert_eq!(order.fields().count(), 3);
        // The same file as a base64 FileDescriptorProto.
        let file = p.pool.get_file_by_name(&p.file).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(file.file_descriptor_proto().encode_to_vec());
        let again = parse(&encoded, &[]).unwrap();
        assert_eq!(again.message_at(&[0]).unwrap().full_name(), "shop.Order");
        // An import of a referenced file.
        let user = r#"syntax = "proto3"; package shop; message Customer { string name = 1; }"#;
        let refs = [("customer.proto".to_string(), user.to_string())];
        let with = parse(
            r#"syntax = "proto3"; package shop; import "customer.proto";
               message Order { int64 id = 1; Customer customer = 2; }"#,
            &refs,
        )
        .unwrap();
        assert_eq!(with.messages().len(), 1);
        let e = parse(
            r#"syntax = "proto3"; import "missing.proto"; message A {}"#,
            &[],
        );
        assert_eq!(e.unwrap_err().code(), 42201);
        assert_eq!(parse("message {", &[]).unwrap_err().code(), 42201);
    }

    #[test]
    fn compatibility_follows_the_wire_format() {
        let v1 = proto(V1);
        let added = proto(&V1.replace("at = 3;", "at = 3; int32 qty = 4;"));
        let widened = proto(&V1.replace("int64 id", "uint64 id"));
        let retyped = proto(&V1.replace("string customer", "double customer"));
        let renamed = proto(&V1.replace("Order", "Purchase"));
        assert!(cannot_read(&v1, &added).is_empty());
        assert!(
            cannot_read(&added, &v1).is_empty(),
            "an unknown field is skipped"
        );
        assert!(cannot_read(&v1, &widened).is_empty());
        let why = cannot_read(&v1, &retyped);
        assert!(why[0].contains("#2"), "{why:?}");
        let why = cannot_read(&v1, &renamed);
        assert!(why[0].contains("shop.Order is gone"), "{why:?}");
    }
}
