"""The Schema Registry on the HTTP admin port, through confluent-kafka's
SchemaRegistryClient and Avro serialisers: subjects and versions, global
ids, compatibility (409 for an incompatible schema), settings, deletes,
Confluent error codes, Avro records through the Kafka door read back by
the AvroDeserializer, and credentials and privileges on a password
server."""

import json
import tempfile
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import Server

ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [{"name": "id", "type": "long"}, {"name": "customer", "type": "string"}],
}
ORDER_V2 = {
    **ORDER_V1,
    "fields": ORDER_V1["fields"] + [{"name": "qty", "type": "int", "default": 1}],
}
ORDER_BAD = {**ORDER_V1, "fields": [{"name": "id", "type": "string"}]}


def avro(schema):
    return Schema(json.dumps(schema), "AVRO")


def http(server, method, path, body=None, auth=None):
    """A raw call: (status, JSON answer, content type)."""
    req = urllib.request.Request(
        f"http://{server.http}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json",
                 **({"Authorization": auth} if auth else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers["Content-Type"]


def test_subjects_versions_ids_and_compatibility(server):
    sr = SchemaRegistryClient({"url": f"http://{server.http}"})
    id1 = sr.register_schema("orders-value", avro(ORDER_V1))
    # The same schema again, with other whitespace: the same id, no new version.
    assert sr.register_schema("orders-value", Schema(json.dumps(ORDER_V1, indent=2), "AVRO")) == id1
    assert sr.get_versions("orders-value") == [1]
    # Ids are global: another subject registering it gets the same id.
    assert sr.register_schema("archive-value", avro(ORDER_V1)) == id1

    # A field with a default is a BACKWARD-compatible change.
    assert sr.test_compatibility("orders-value", avro(ORDER_V2)) is True
    id2 = sr.register_schema("orders-value", avro(ORDER_V2))
    assert id2 != id1
    latest = sr.get_latest_version("orders-value")
    assert (latest.version, latest.schema_id) == (2, id2)
    assert json.loads(latest.schema.schema_str)["fields"][-1]["name"] == "qty"
    assert json.loads(sr.get_schema(id1).schema_str) == ORDER_V1
    found = sr.lookup_schema("orders-value", avro(ORDER_V1))
    assert (found.version, found.schema_id) == (1, id1)
    assert sorted(sr.get_subjects()) == ["archive-value", "orders-value"]

    # An incompatible change: refused with 409, nothing registered.
    assert sr.test_compatibility("orders-value", avro(ORDER_BAD)) is False
    with pytest.raises(SchemaRegistryError) as e:
        sr.register_schema("orders-value", avro(ORDER_BAD))
    assert e.value.http_status_code == 409 and e.value.error_code == 409, e.value
    assert sr.get_versions("orders-value") == [1, 2]
    # Unless the subject's level says NONE.
    sr.set_compatibility("archive-value", "NONE")
    assert sr.get_compatibility("archive-value") == "NONE"
    assert sr.get_compatibility() == "BACKWARD"
    sr.register_schema("archive-value", avro(ORDER_BAD))

    # Confluent's error codes and content type.
    status, body, ctype = http(server, "GET", "/subjects/nope/versions/latest")
    assert (status, body["error_code"]) == (404, 40401), body
    assert ctype == "application/vnd.schemaregistry.v1+json"
    status, body, _ = http(server, "GET", "/subjects/orders-value/versions/7")
    assert (status, body["error_code"]) == (404, 40402), body
    status, body, _ = http(server, "GET", "/schemas/ids/99999")
    assert (status, body["error_code"]) == (404, 40403), body
    status, body, _ = http(server, "POST", "/subjects/x/versions", {"schema": "{"})
    assert (status, body["error_code"]) == (422, 42201), body
    status, body, _ = http(server, "PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42203), body
    status, body, _ = http(server, "GET", "/schemas/types")
    assert (status, body) == (200, ["AVRO", "JSON", "PROTOBUF"])
    # An incompatible JSON Schema version (a new required property) and a
    # Protobuf one (a field's wire type changed) are refused like Avro's.
    js = {"type": "object", "properties": {"id": {"type": "integer"}}}
    assert sr.register_schema("js-value", Schema(json.dumps(js), "JSON")) > 0
    js2 = {**js, "properties": {"id": {"type": "integer"}, "q": {"type": "integer"}},
           "required": ["q"]}
    with pytest.raises(SchemaRegistryError) as e:
        sr.register_schema("js-value", Schema(json.dumps(js2), "JSON"))
    assert e.value.http_status_code == 409
    pb = 'syntax = "proto3"; message M { int64 id = 1; }'
    assert sr.register_schema("pb-value", Schema(pb, "PROTOBUF")) > 0
    with pytest.raises(SchemaRegistryError) as e:
        sr.register_schema("pb-value", Schema(pb.replace("int64", "string"), "PROTOBUF"))
    assert e.value.http_status_code == 409
    status, body, _ = http(server, "POST", "/subjects/pb-value/versions",
                           {"schema": "message {", "schemaType": "PROTOBUF"})
    assert (status, body["error_code"]) == (422, 42201), body
    status, body, _ = http(server, "GET", f"/schemas/ids/{id1}/versions")
    assert sorted((v["subject"], v["version"]) for v in body) == [
        ("archive-value", 1), ("orders-value", 1)]

    # Deletes: soft first (hidden, ids still resolve), then permanent.
    assert sr.delete_subject("archive-value") == [1, 2]
    assert "archive-value" not in sr.get_subjects()
    assert json.loads(sr.get_schema(id1).schema_str) == ORDER_V1
    status, body, _ = http(server, "DELETE", "/subjects/orders-value?permanent=true")
    assert (status, body["error_code"]) == (404, 40405), body
    assert sr.delete_subject("archive-value", permanent=True) == [1, 2]
    status, body, _ = http(server, "GET", "/subjects?deleted=true")
    assert sorted(body) == ["js-value", "orders-value", "pb-value"]


def test_referenced_versions_stay_while_referenced(server):
    customer = {"type": "record", "name": "Customer", "fields": [{"name": "n", "type": "string"}]}
    status, body, _ = http(server, "POST", "/subjects/customer-value/versions",
                           {"schema": json.dumps(customer)})
    assert status == 200, body
    order = {"type": "record", "name": "Order", "fields": [{"name": "who", "type": "Customer"}]}
    status, body, _ = http(server, "POST", "/subjects/order-value/versions", {
        "schema": json.dumps(order),
        "references": [{"name": "Customer", "subject": "customer-value", "version": 1}]})
    assert status == 200, body
    order_id = body["id"]
    status, body, _ = http(server, "GET", "/subjects/customer-value/versions/1/referencedby")
    assert (status, body) == (200, [order_id])
    status, body, _ = http(server, "DELETE", "/subjects/customer-value/versions/1")
    assert (status, body["error_code"]) == (422, 42206), body
    status, body, _ = http(server, "DELETE", "/subjects/customer-value")
    assert (status, body["error_code"]) == (422, 42206), body
    assert http(server, "DELETE", "/subjects/order-value")[0] == 200
    assert http(server, "DELETE", "/subjects/customer-value")[:2] == (200, [1])


def test_avro_records_through_the_kafka_door(server):
    url = f"http://{server.http}"
    sr = SchemaRegistryClient({"url": url})
    admin = AdminClient({"bootstrap.servers": server.kafka})
    admin.create_topics([NewTopic("payments", 1, 1)])["payments"].result(30)
    serialize = AvroSerializer(sr, json.dumps(ORDER_V2))
    p = Producer({"bootstrap.servers": server.kafka, "acks": "all"})
    sent = [{"id": i, "customer": f"c{i}", "qty": i % 3} for i in range(20)]
    for rec in sent:
        p.produce("payments", value=serialize(rec, SerializationContext("payments", MessageField.VALUE)))
    assert p.flush(30) == 0
    # The serialiser registered the schema under the topic's value subject.
    latest = sr.get_latest_version("payments-value")
    assert latest.version == 1

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": url}))
    c = Consumer({"bootstrap.servers": server.kafka, "group.id": "avro-readers",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["payments"])
    got = []
    deadline = time.time() + 60
    while len(got) < len(sent) and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(deserialize(m.value(), SerializationContext("payments", MessageField.VALUE)))
    c.close()
    assert got == sent
    # The Confluent wire format, as SQL sees the bytes: magic byte 0, the
    # schema id, then the Avro body.
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        values = [bytes(v) for (v,) in conn.execute("SELECT value FROM payments").fetchall()]
    assert len(values) == len(sent)
    assert {(v[0], int.from_bytes(v[1:5], "big")) for v in values} == {(0, latest.schema_id)}


def test_credentials_and_privileges_on_a_password_server():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d, ["--auth", "password"], env={"STREAMHOUSE_PASSWORD": "admin-pass"})
        try:
            pg = dict(host=s.host, port=s.port, dbname="streamhouse", autocommit=True)
            with psycopg.connect(user="streamhouse", password="admin-pass", **pg) as c:
                c.execute("CREATE USER reader WITH PASSWORD 'r-pass'")
                c.execute("CREATE USER maker WITH PASSWORD 'm-pass'")
                c.execute("GRANT CREATE ON SCHEMA public TO maker")
            url = f"http://{s.http}"
            anonymous = SchemaRegistryClient({"url": url})
            with pytest.raises(SchemaRegistryError) as e:
                anonymous.get_subjects()
            assert e.value.http_status_code == 401, e.value
            wrong = SchemaRegistryClient({"url": url, "basic.auth.user.info": "maker:nope"})
            with pytest.raises(SchemaRegistryError) as e:
                wrong.get_subjects()
            assert e.value.http_status_code == 401, e.value

            maker = SchemaRegistryClient({"url": url, "basic.auth.user.info": "maker:m-pass"})
            sid = maker.register_schema("secured-value", avro(ORDER_V1))
            reader = SchemaRegistryClient({"url": url, "basic.auth.user.info": "reader:r-pass"})
            assert json.loads(reader.get_schema(sid).schema_str) == ORDER_V1
            with pytest.raises(SchemaRegistryError) as e:
                reader.register_schema("secured-value", avro(ORDER_V2))
            assert (e.value.http_status_code, e.value.error_code) == (403, 40301), e.value
            assert reader.get_versions("secured-value") == [1]
        finally:
            assert s.stop() == 0
