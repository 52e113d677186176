//! Schemas of each type: parsing, identity and compatibility. AVRO is
//! parsed and checked with apache-avro (the Avro specification's schema
//! resolution decides whether one schema reads data written with
//! another); JSON Schema in [`json`], Protobuf in [`protobuf`].

use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::error::RegistryError;

pub mod json;
pub mod protobuf;

/// The types `/schemas/types` lists: the ones registered here.
pub const SUPPORTED: &[&str] = &["AVRO", "JSON", "PROTOBUF"];

/// A schema's type, by its REST name (`schemaType`, AVRO when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaType {
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub fn parse(name: Option<&str>) -> Result<SchemaType, RegistryError> {
        Ok(match name.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => SchemaType::Avro,
            Some("JSON") => SchemaType::Json,
            Some("PROTOBUF") => SchemaType::Protobuf,
            Some(other) => {
                return Err(RegistryError::InvalidSchema(format!(
                    "unknown schema type {other}"
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

/// A parsed schema.
#[derive(Debug, Clone)]
pub enum Parsed {
    Avro(apache_avro::Schema),
    Json(serde_json::Value),
    Protobuf(protobuf::Proto),
}

/// Parses `text` of type `schema_type`; `references` are the schemas it
/// names, as (name, text): an Avro record defined in another subject, a
/// file a Protobuf schema imports.
pub fn parse(
    schema_type: SchemaType,
    text: &str,
    references: &[(String, String)],
) -> Result<Parsed, RegistryError> {
    match schema_type {
        SchemaType::Avro => {
            let texts: Vec<String> = references.iter().map(|(_, t)| t.clone()).collect();
            let (schema, _) = apache_avro::Schema::parse_str_with_list(text, &texts)
                .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
            Ok(Parsed::Avro(schema))
        }
        SchemaType::Json => Ok(Parsed::Json(json::parse(text)?)),
        SchemaType::Protobuf => Ok(Parsed::Protobuf(protobuf::parse(text, references)?)),
    }
}

/// What identifies a schema: the same type, the same document (for Avro
/// and JSON Schema the same JSON, whitespace and key order aside; for
/// Protobuf the same text, surrounding whitespace aside) and the same
/// references give the same fingerprint, so registering a schema again
/// finds its id.
pub fn fingerprint(
    schema_type: SchemaType,
    text: &str,
    references: &str,
) -> Result<String, RegistryError> {
    let document = match schema_type {
        SchemaType::Avro | SchemaType::Json => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| RegistryError::InvalidSchema(format!("not JSON: {e}")))?;
            value.to_string()
        }
        SchemaType::Protobuf => text.trim().replace("\r\n", "\n"),
    };
    let identity = format!("{}\n{document}\n{references}", schema_type.name());
    let digest = ring::digest::digest(&ring::digest::SHA256, identity.as_bytes());
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Why `reader` cannot read data written with `writer` (empty: it can).
pub fn cannot_read(writer: &Parsed, reader: &Parsed) -> Vec<String> {
    match (writer, reader) {
        (Parsed::Avro(w), Parsed::Avro(r)) => match SchemaCompatibility::can_read(w, r) {
            Ok(()) => Vec::new(),
            Err(e) => vec![e.to_string()],
        },
        (Parsed::Json(w), Parsed::Json(r)) => json::cannot_read(w, r),
        (Parsed::Protobuf(w), Parsed::Protobuf(r)) => protobuf::cannot_read(w, r),
        _ => vec!["the schemas are of different types".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> Parsed {
        parse(SchemaType::Avro, text, &[]).unwrap()
    }

    const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
    const V2_DEFAULT: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int","default":1}]}"#;
    const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int"}]}"#;

    #[test]
    fn a_field_with_a_default_reads_old_data_one_without_does_not() {
        assert!(cannot_read(&avro(V1), &avro(V2_DEFAULT)).is_empty());
        assert!(!cannot_read(&avro(V1), &avro(V2_NO_DEFAULT)).is_empty());
        // The old schema ignores the new field.
        assert!(cannot_read(&avro(V2_NO_DEFAULT), &avro(V1)).is_empty());
    }

    #[test]
    fn fingerprints_ignore_layout_not_content() {
        let spaced = V1.replace(',', ", ").replace(':', ": ");
        let f = |t: &str| fingerprint(SchemaType::Avro, t, "[]").unwrap();
        assert_eq!(f(V1), f(&spaced));
        assert_ne!(f(V1), f(V2_DEFAULT));
        assert_ne!(
            f(V1),
            fingerprint(SchemaType::Json, V1, "[]").unwrap(),
            "the type is part of a schema's identity"
        );
    }

    #[test]
    fn bad_schemas_are_invalid() {
        for bad in ["{", r#"{"type":"record","name":"X"}"#, r#""nope""#] {
            let e = parse(SchemaType::Avro, bad, &[]).unwrap_err();
            assert_eq!(e.code(), 42201, "{bad}: {e}");
        }
        assert!(parse(SchemaType::Json, "{}", &[]).is_ok());
        let e = parse(SchemaType::Protobuf, "{}", &[]).unwrap_err();
        assert_eq!(e.code(), 42201, "{e}");
    }
}
