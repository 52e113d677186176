use std::sync::Arc;

use streamhouse_log::SqliteMetadata;

use super::*;

const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int","default":1}]}"#;
const BAD: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#;

async fn registry() -> Registry {
    Registry::new(Arc::new(SqliteMetadata::open_in_memory().await.unwrap()))
}

fn avro(text: &str) -> SchemaRequest {
    SchemaRequest {
        schema: text.to_string(),
        ..SchemaRequest::default()
    }
}

#[tokio::test]
async fn ids_are_global_and_stable_versions_count_per_subject() {
    let r = registry().await;
    let id1 = r.register("orders-value", &avro(V1)).await.unwrap();
    assert_eq!(id1, r.register("orders-value", &avro(V1)).await.unwrap());
    // The same schema under another subject: the same id, its version 1.
    assert_eq!(id1, r.register("audit-value", &avro(V1)).await.unwrap());
    let id2 = r.register("orders-value", &avro(V2)).await.unwrap();
    assert_ne!(id1, id2);
    assert_eq!(r.versions("orders-value", false).await.unwrap(), [1, 2]);
    let latest = r
        .version("orders-value", VersionRef::Latest, false)
        .await
        .unwrap();
    assert_eq!((latest.version, latest.id), (2, id2));
    assert_eq!(r.schema(id1).await.unwrap().schema, V1);
    assert_eq!(
        r.versions_of(id1, false).await.unwrap(),
        [
            ("audit-value".to_string(), 1),
            ("orders-value".to_string(), 1)
        ]
    );
    let found = r.lookup("orders-value", &avro(V1), false).await.unwrap();
    assert_eq!(found.version, 1);
    assert_eq!(
        r.subjects(false).await.unwrap(),
        ["audit-value", "orders-value"]
    );
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_at_the_subjects_level() {
    let r = registry().await;
    r.register("s", &avro(V1)).await.unwrap();
    let e = r.register("s", &avro(BAD)).await.unwrap_err();
    assert_eq!(e.code(), 409, "{e}");
    assert!(!r.check("s", None, &avro(BAD)).await.unwrap().is_empty());
    assert!(r.check("s", None, &avro(V2)).await.unwrap().is_empty());
    r.set_compatibility(Some("s"), Some(Compatibility::None))
        .await
        .unwrap();
    r.register("s", &avro(BAD)).await.unwrap();
    assert_eq!(
        r.compatibility(Some("s"), false).await.unwrap(),
        Compatibility::None
    );
    assert_eq!(
        r.compatibility(Some("other"), true).await.unwrap(),
        Compatibility::Backward
    );
    assert_eq!(
        r.compatibility(Some("other"), false)
            .await
            .unwrap_err()
            .code(),
        40408
    );
    r.set_mode(None, Some(Mode::ReadOnly)).await.unwrap();
    assert_eq!(r.register("t", &avro(V1)).await.unwrap_err().code(), 42205);
}

#[tokio::test]
async fn deletes_are_soft_first_then_permanent() {
    let r = registry().await;
    let id = r.register("s", &avro(V1)).await.unwrap();
    r.register("s", &avro(V2)).await.unwrap();
    assert_eq!(r.delete_subject("s", true).await.unwrap_err().code(), 40405);
    assert_eq!(r.delete_subject("s", false).await.unwrap(), [1, 2]);
    assert_eq!(r.versions("s", false).await.unwrap_err().code(), 40401);
    assert_eq!(r.versions("s", true).await.unwrap(), [1, 2]);
    assert!(r.subjects(false).await.unwrap().is_empty());
    assert_eq!(r.subjects(true).await.unwrap(), ["s"]);
    // The schema stays readable by id (deserialisers of old records).
    assert_eq!(r.schema(id).await.unwrap().schema, V1);
    assert_eq!(r.delete_subject("s", true).await.unwrap(), [1, 2]);
    assert!(r.subjects(true).await.unwrap().is_empty());
    assert_eq!(r.schema(999).await.unwrap_err().code(), 40403);
    assert_eq!(
        r.version("s", VersionRef::Number(1), true)
            .await
            .unwrap_err()
            .code(),
        40401
    );
    // Numbers start again once every version is gone.
    r.register("s", &avro(V2)).await.unwrap();
    assert_eq!(r.versions("s", false).await.unwrap(), [1]);
    assert_eq!(VersionRef::parse("0").unwrap_err().code(), 42202);
}

#[tokio::test]
async fn a_referenced_version_is_not_deleted_while_referenced() {
    let r = registry().await;
    let customer =
        r#"{"type":"record","name":"Customer","fields":[{"name":"name","type":"string"}]}"#;
    r.register("customer-value", &avro(customer)).await.unwrap();
    let order = SchemaRequest {
        schema: r#"{"type":"record","name":"Order","fields":[{"name":"who","type":"Customer"}]}"#
            .into(),
        references: vec![Reference {
            name: "Customer".into(),
            subject: "customer-value".into(),
            version: 1,
        }],
        ..SchemaRequest::default()
    };
    let id = r.register("order-value", &order).await.unwrap();
    assert_eq!(
        r.referenced_by("customer-value", VersionRef::Number(1))
            .await
            .unwrap(),
        [id]
    );
    let e = r
        .delete_version("customer-value", VersionRef::Number(1), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), 42206, "{e}");
    let e = r.delete_subject("customer-value", false).await.unwrap_err();
    assert_eq!(e.code(), 42206, "{e}");
    // Once the referencing subject is deleted, the reference is gone.
    r.delete_subject("order-value", false).await.unwrap();
    assert!(
        r.referenced_by("customer-value", VersionRef::Latest)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        r.delete_subject("customer-value", false).await.unwrap(),
        [1]
    );
}
