//! JSON Schema documents: checked against their draft's meta-schema with
//! the jsonschema crate (draft 4 to 2020-12; nothing is fetched), and
//! compared structurally to decide whether data valid under one schema is
//! valid under another.
//!
//! A reader reads a writer's data when, wherever both describe a value:
//! the reader's types cover the writer's (an integer is a number); the
//! reader requires no property the writer may leave out; a property the
//! writer allows is not forbidden by a closed reader
//! (`additionalProperties: false`); an enum keeps the writer's values;
//! array items read alike. A property added to the reader and not required
//! is compatible (the data may lack it), which is laxer than Confluent's
//! rule for open content models, where an added property could clash with
//! data the open writer allowed.

use serde_json::{Map, Value};

use crate::error::RegistryError;

/// Checks `text` is a JSON Schema document.
pub fn parse(text: &str) -> Result<Value, RegistryError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| RegistryError::InvalidSchema(format!("not JSON: {e}")))?;
    if !(value.is_object() || value.is_boolean()) {
        return Err(RegistryError::InvalidSchema(
            "a JSON Schema is an object or a boolean".into(),
        ));
    }
    jsonschema::meta::validate(&value)
        .map_err(|e| RegistryError::InvalidSchema(format!("not a valid JSON Schema: {e}")))?;
    Ok(value)
}

/// The types a schema allows (`None`: any).
fn types(s: &Map<String, Value>) -> Option<Vec<String>> {
    match s.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
        ),
        _ => None,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Why `reader` cannot read data valid under `writer` (empty: it can).
pub fn cannot_read(writer: &Value, reader: &Value) -> Vec<String> {
    let mut out = Vec::new();
    compare(writer, reader, "#", &mut out);
    out
}

fn compare(writer: &Value, reader: &Value, at: &str, out: &mut Vec<String>) {
    let (Some(w), Some(r)) = (writer.as_object(), reader.as_object()) else {
        if reader == &Value::Bool(false) && writer != &Value::Bool(false) {
            out.push(format!("{at}: the reader allows nothing"));
        }
        return;
    };
    match (types(w), types(r)) {
        (_, None) => {}
        (None, Some(rt)) => out.push(format!(
            "{at}: the reader takes only {} where the writer takes any type",
            rt.join(", ")
        )),
        (Some(wt), Some(rt)) => {
            for t in &wt {
                let covered =
                    rt.contains(t) || (t == "integer" && rt.iter().any(|r| r == "number"));
                if !covered {
                    out.push(format!(
                        "{at}: type {t} of the writer is not one the reader takes"
                    ));
                }
            }
        }
    }
    if let Some(re) = r.get("enum").and_then(Value::as_array) {
        match w.get("enum").and_then(Value::as_array) {
            Some(we) => {
                for v in we {
                    if !re.contains(v) {
                        out.push(format!("{at}: enum value {v} is gone"));
                    }
                }
            }
            None => out.push(format!("{at}: the reader limits values to an enum")),
        }
    }
    let (wp, rp) = (
        w.get("properties").and_then(Value::as_object),
        r.get("properties").and_then(Value::as_object),
    );
    let empty = Map::new();
    let (wp, rp) = (wp.unwrap_or(&empty), rp.unwrap_or(&empty));
    let writer_required = strings(w.get("required"));
    for name in strings(r.get("required")) {
        if !writer_required.contains(&name) {
            out.push(format!(
                "{at}: property {name} is required by the reader but not by the writer"
            ));
        }
    }
    let closed = r.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, ws) in wp {
        let path = format!("{at}/properties/{name}");
        match rp.get(name) {
            Some(rs) => compare(ws, rs, &path, out),
            None if closed => out.push(format!("{path}: the reader does not allow it")),
            None => {}
        }
    }
    if let (Some(wi), Some(ri)) = (w.get("items"), r.get("items")) {
        compare(wi, ri, &format!("{at}/items"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Value {
        parse(text).unwrap()
    }

    #[test]
    fn documents_are_checked_against_their_draft() {
        assert!(parse(r#"{"type":"object","properties":{"id":{"type":"integer"}}}"#).is_ok());
        for bad in [
            r#"{"type":"nope"}"#,
            "[1]",
            "{",
            r#"{"$schema":"http://example.com/x"}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code(), 42201, "{bad}");
        }
    }

    #[test]
    fn compatibility_of_properties_types_and_enums() {
        let v1 = schema(
            r#"{"type":"object","properties":{"id":{"type":"integer"},"c":{"type":"string"}},"required":["id"]}"#,
        );
        let added = schema(
            r#"{"type":"object","properties":{"id":{"type":"integer"},"c":{"type":"string"},"q":{"type":"integer"}},"required":["id"]}"#,
        );
        let required = schema(
            r#"{"type":"object","properties":{"id":{"type":"integer"},"q":{"type":"integer"}},"required":["id","q"]}"#,
        );
        let widened = schema(
            r#"{"type":"object","properties":{"id":{"type":"number"},"c":{"type":"string"}},"required":["id"]}"#,
        );
        let closed = schema(
            r#"{"type":"object","properties":{"id":{"type":"integer"}},"additionalProperties":false}"#,
        );
        assert!(cannot_read(&v1, &added).is_empty());
        assert!(cannot_read(&v1, &widened).is_empty());
        assert!(
            !cannot_read(&widened, &v1).is_empty(),
            "a number is not an integer"
        );
        assert!(cannot_read(&v1, &required)[0].contains("property q is required"));
        assert!(cannot_read(&v1, &closed)[0].contains("/properties/c"));
    }
}
