"""Streams that follow a registered Avro subject: columns taken from the
schema, Confluent-framed Avro records produced through the Kafka door read
as columns with psycopg, the stream evolving with a compatible new version
while producers write (old and new rows in one query), an incompatible
version refused with 409, consumers reading every row as a record of the
latest version, and values that do not decode refused whole."""

import json
import threading
import time

import psycopg
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
V2 = {**V1, "fields": V1["fields"] + [{"name": "qty", "type": "int", "default": 1}]}
BAD = {**V2, "fields": [{"name": "id", "type": "string"}] + V2["fields"][1:]}
OTHER = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}


def avro(schema):
    return Schema(json.dumps(schema), "AVRO")


def columns(conn, stream):
    return conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s AND column_name NOT LIKE '\\_%%' ORDER BY ordinal_position",
        (stream,)).fetchall()


class Acks:
    """Counts acknowledged and failed deliveries."""

    def __init__(self):
        self.ok, self.errors = [], []

    def __call__(self, err, msg):
        (self.errors if err else self.ok).append(err or msg.offset())


def test_a_stream_follows_its_subject_as_it_evolves(server):
    url = f"http://{server.http}"
    sr = SchemaRegistryClient({"url": url})
    id1 = sr.register_schema("orders-value", avro(V1))
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM orders WITH (format = 'avro', subject = 'orders-value', "
                     "partitions = 2)")
        # A listed subset keeps to its columns when the subject grows.
        conn.execute("CREATE STREAM slim (id BIGINT, amount DOUBLE PRECISION) "
                     "WITH (format = 'avro', subject = 'orders-value')")
        assert columns(conn, "orders") == [
            ("id", "bigint"), ("customer", "text"), ("amount", "double precision"),
            ("note", "text")]

    ctx = SerializationContext("orders", MessageField.VALUE)
    ser1 = AvroSerializer(sr, json.dumps(V1), conf={"auto.register.schemas": False,
                                                    "use.latest.version": False})
    ser2 = AvroSerializer(sr, json.dumps(V2))
    p = Producer({"bootstrap.servers": server.kafka, "acks": "all", "linger.ms": 5})
    acks = Acks()
    stop = threading.Event()
    old = []

    def produce_v1():
        i = 0
        while not stop.is_set() or i < 200:
            rec = {"id": i, "customer": f"c{i}", "amount": i / 4, "note": None if i % 2 else "n"}
            p.produce("orders", value=ser1(rec, ctx), on_delivery=acks)
            old.append(rec)
            p.poll(0)
            i += 1
            time.sleep(0.002)

    writer = threading.Thread(target=produce_v1)
    writer.start()
    time.sleep(0.3)
    # A compatible version while the old producer writes: the stream takes
    # a column with the field's default.
    id2 = sr.register_schema("orders-value", avro(V2))
    assert id2 != id1
    new = [{"id": 100_000 + i, "customer": f"d{i}", "amount": 1.5, "note": None, "qty": i % 7}
           for i in range(300)]
    for rec in new:
        p.produce("orders", value=ser2(rec, ctx), on_delivery=acks)
    stop.set()
    writer.join()
    assert p.flush(60) == 0
    assert acks.errors == []
    assert len(acks.ok) == len(old) + len(new)

    # An incompatible version: 409, and the stream keeps its columns.
    try:
        sr.register_schema("orders-value", avro(BAD))
        raise AssertionError("an incompatible schema was registered")
    except SchemaRegistryError as e:
        assert e.http_status_code == 409, e

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert columns(conn, "orders") == [
            ("id", "bigint"), ("customer", "text"), ("amount", "double precision"),
            ("note", "text"), ("qty", "integer")]
        assert columns(conn, "slim") == [("id", "bigint"), ("amount", "double precision")]
        rows = conn.execute("SELECT id, customer, amount, note, qty FROM orders").fetchall()
        want = {(r["id"], r["customer"], r["amount"], r["note"], r.get("qty", 1))
                for r in old + new}
        assert len(rows) == len(old) + len(new)
        assert set(rows) == want
        # Old and new rows in one query.
        by_qty = dict(conn.execute(
            "SELECT id >= 100000, sum(qty) FROM orders GROUP BY 1").fetchall())
        assert by_qty == {False: len(old), True: sum(r["qty"] for r in new)}
        # SQL writes are records of the stream too.
        conn.execute("INSERT INTO orders (id, customer, amount) VALUES (-1, 'sql', 2.5)")

    # Consumers read every row as a record of the latest version, under its id.
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": url}))
    c = Consumer({"bootstrap.servers": server.kafka, "group.id": "typed-readers",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["orders"])
    got, ids = [], set()
    deadline = time.time() + 60
    while len(got) < len(old) + len(new) + 1 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            ids.add(int.from_bytes(m.value()[1:5], "big"))
            got.append(deserialize(m.value(), ctx))
    c.close()
    assert ids == {id2}
    want = [{**r, "qty": r.get("qty", 1)} for r in old + new]
    want.append({"id": -1, "customer": "sql", "amount": 2.5, "note": None, "qty": 1})
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)


def test_values_that_do_not_decode_are_refused_whole(server):
    sr = SchemaRegistryClient({"url": f"http://{server.http}"})
    sr.register_schema("strict-value", avro(V1))
    other_id = sr.register_schema("other-value", avro(OTHER))
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM strict WITH (format = 'avro', subject = 'strict-value')")
    ctx = SerializationContext("strict", MessageField.VALUE)
    good = AvroSerializer(sr, json.dumps(V1))(
        {"id": 1, "customer": "a", "amount": 1.0, "note": None}, ctx)
    other = b"\x00" + other_id.to_bytes(4, "big") + b"\x02"
    acked = 0
    for bad in [b"not avro", other, good[:-3], good + b"\x00"]:
        p = Producer({"bootstrap.servers": server.kafka, "acks": "all", "linger.ms": 2000,
                      "batch.num.messages": 3, "retries": 0})
        outcome = {}

        def report(err, msg):
            outcome[msg.value()] = outcome.get(msg.value(), []) + [err]

        # A bad value among good ones: the request holding it writes
        # nothing (the client may send the first good one on its own).
        p.produce("strict", value=good, on_delivery=report)
        p.produce("strict", value=bad, on_delivery=report)
        p.produce("strict", value=good, on_delivery=report)
        p.flush(30)
        errors = [e for es in outcome.values() for e in es if e is not None]
        assert [e.code() for e in outcome[bad]] == [KafkaError.INVALID_RECORD], outcome
        assert {e.code() for e in errors} == {KafkaError.INVALID_RECORD}, errors
        assert len(outcome[good]) == 2, outcome
        acked += sum(1 for e in outcome[good] if e is None)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        # Exactly the acknowledged values were written.
        assert conn.execute("SELECT count(*) FROM strict").fetchone() == (acked,)
        # A stream cannot follow a subject that does not exist, nor without one.
        for sql, state in [
            ("CREATE STREAM s1 WITH (format = 'avro', subject = 'missing-value')", "42704"),
            ("CREATE STREAM s2 WITH (format = 'avro')", "42P16"),
            ("CREATE STREAM s3 WITH (format = 'protobuf', subject = 'strict-value')", "42P16"),
        ]:
            try:
                conn.execute(sql)
                raise AssertionError(f"{sql} succeeded")
            except psycopg.Error as e:
                assert e.sqlstate == state, (sql, e.sqlstate, e)


READING_V1 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Reading",
    "type": "object",
    "properties": {"sensor": {"type": "string"}, "value": {"type": "number"},
                   "seq": {"type": "integer"}},
    "required": ["sensor", "value", "seq"],
}
READING_V2 = {**READING_V1, "properties": {**READING_V1["properties"],
                                            "unit": {"type": "string", "default": "C"}}}


def consume(server, topic, group, n, deserialize):
    c = Consumer({"bootstrap.servers": server.kafka, "group.id": group,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, ids = [], set()
    deadline = time.time() + 60
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            ids.add(int.from_bytes(m.value()[1:5], "big"))
            got.append(deserialize(m.value(), SerializationContext(topic, MessageField.VALUE)))
    c.close()
    return got, ids


def produce_all(server, topic, values):
    p = Producer({"bootstrap.servers": server.kafka, "acks": "all"})
    acks = Acks()
    for v in values:
        p.produce(topic, value=v, on_delivery=acks)
    assert p.flush(30) == 0
    assert acks.errors == [] and len(acks.ok) == len(values), acks.errors


def test_a_json_schema_stream_follows_its_subject(server):
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    sr = SchemaRegistryClient({"url": f"http://{server.http}"})
    sr.register_schema("readings-value", Schema(json.dumps(READING_V1), "JSON"))
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM readings WITH (format = 'json_schema', "
                     "subject = 'readings-value')")
        assert columns(conn, "readings") == [
            ("sensor", "text"), ("seq", "bigint"), ("value", "double precision")]
    ctx = SerializationContext("readings", MessageField.VALUE)
    ser1 = JSONSerializer(json.dumps(READING_V1), sr)
    old = [{"sensor": f"s{i % 3}", "value": i / 2, "seq": i} for i in range(50)]
    produce_all(server, "readings", [ser1(r, ctx) for r in old])
    # The serialiser registers the new version; the stream follows it.
    ser2 = JSONSerializer(json.dumps(READING_V2), sr)
    new = [{"sensor": "t", "value": 1.25, "seq": 1000 + i, "unit": "F"} for i in range(50)]
    produce_all(server, "readings", [ser2(r, ctx) for r in new])
    latest = sr.get_latest_version("readings-value")
    assert latest.version == 2
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert columns(conn, "readings")[-1] == ("unit", "text")
        got = conn.execute("SELECT unit, count(*), sum(seq) FROM readings "
                           "GROUP BY unit ORDER BY unit").fetchall()
        assert got == [("C", 50, sum(range(50))), ("F", 50, sum(1000 + i for i in range(50)))]
    deserialize = JSONDeserializer(json.dumps(READING_V2),
                                   schema_registry_client=SchemaRegistryClient(
                                       {"url": f"http://{server.http}"}))
    got, ids = consume(server, "readings", "json-readers", 100, deserialize)
    assert ids == {latest.schema_id}
    want = [{**r, "unit": r.get("unit", "C")} for r in old + new]
    assert sorted(got, key=lambda r: r["seq"]) == want


def reading_class(with_unit):
    """A generated Protobuf message class for plant.Reading (v1, or v2 with
    a unit), built from its descriptor as protoc would."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="plant/reading.proto", package="plant",
                                             syntax="proto3")
    m = fdp.message_type.add(name="Reading")
    m.field.add(name="sensor", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    m.field.add(name="value", number=2, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    m.field.add(name="seq", number=3, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    if with_unit:
        m.field.add(name="unit", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("plant.Reading")), fdp


def test_a_protobuf_stream_follows_its_subject(server):
    import base64
    from confluent_kafka.schema_registry.protobuf import (ProtobufDeserializer,
                                                          ProtobufSerializer)
    sr = SchemaRegistryClient({"url": f"http://{server.http}"})
    V1, fdp1 = reading_class(False)
    V2, _ = reading_class(True)
    sr.register_schema("gauges-value", Schema(
        base64.standard_b64encode(fdp1.SerializeToString()).decode(), "PROTOBUF"))
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM gauges WITH (format = 'protobuf', subject = 'gauges-value')")
        assert columns(conn, "gauges") == [
            ("sensor", "text"), ("value", "double precision"), ("seq", "bigint")]
    ctx = SerializationContext("gauges", MessageField.VALUE)
    ser1 = ProtobufSerializer(V1, sr, {"use.deprecated.format": False})
    old = [V1(sensor=f"s{i % 3}", value=i / 2, seq=i) for i in range(50)]
    produce_all(server, "gauges", [ser1(r, ctx) for r in old])
    ser2 = ProtobufSerializer(V2, sr, {"use.deprecated.format": False})
    new = [V2(sensor="t", value=1.25, seq=1000 + i, unit="F") for i in range(50)]
    produce_all(server, "gauges", [ser2(r, ctx) for r in new])
    latest = sr.get_latest_version("gauges-value")
    assert latest.version == 2
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert columns(conn, "gauges")[-1] == ("unit", "text")
        got = conn.execute("SELECT unit, count(*), sum(seq) FROM gauges "
                           "GROUP BY unit ORDER BY unit").fetchall()
        # Protobuf reads a missing string as "".
        assert got == [("", 50, sum(range(50))), ("F", 50, sum(1000 + i for i in range(50)))]
    deserialize = ProtobufDeserializer(V2, {"use.deprecated.format": False})
    got, ids = consume(server, "gauges", "pb-readers", 100, deserialize)
    assert ids == {latest.schema_id}
    assert sorted((m.seq, m.sensor, m.value, m.unit) for m in got) == sorted(
        [(m.seq, m.sensor, m.value, "") for m in old]
        + [(m.seq, m.sensor, m.value, m.unit) for m in new])


def test_a_following_stream_survives_sigkill_and_keeps_following():
    import signal
    import tempfile

    from conftest import Server
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            sr = SchemaRegistryClient({"url": f"http://{s.http}"})
            sr.register_schema("kept-value", avro(V1))
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM kept WITH (format = 'avro', subject = 'kept-value')")
            id2 = sr.register_schema("kept-value", avro(V2))
            ctx = SerializationContext("kept", MessageField.VALUE)
            ser = AvroSerializer(sr, json.dumps(V2))
            p = Producer({"bootstrap.servers": s.kafka, "acks": "all",
                          "enable.idempotence": True})
            acks = Acks()
            for i in range(500):
                p.produce("kept", value=ser({"id": i, "customer": "k", "amount": 1.0,
                                             "note": None, "qty": 2}, ctx), on_delivery=acks)
            assert p.flush(30) == 0 and acks.errors == []
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=30)
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
        s = Server(d)
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                assert conn.execute("SELECT count(*), count(DISTINCT id), sum(qty) FROM kept"
                                    ).fetchone() == (500, 500, 1000)
            # After the restart the stream still follows: a third version
            # adds a column, and its values decode.
            sr = SchemaRegistryClient({"url": f"http://{s.http}"})
            v3 = {**V2, "fields": V2["fields"] + [{"name": "tag", "type": "string",
                                                   "default": "none"}]}
            id3 = sr.register_schema("kept-value", avro(v3))
            assert id3 != id2
            p = Producer({"bootstrap.servers": s.kafka, "acks": "all"})
            acks = Acks()
            rec = {"id": 900, "customer": "k", "amount": 1.0, "note": None, "qty": 3, "tag": "t"}
            p.produce("kept", value=AvroSerializer(sr, json.dumps(v3))(rec, ctx),
                      on_delivery=acks)
            assert p.flush(30) == 0 and acks.errors == []
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                assert conn.execute("SELECT tag, count(*) FROM kept GROUP BY tag ORDER BY tag"
                                    ).fetchall() == [("none", 500), ("t", 1)]
        finally:
            assert s.stop() == 0


def test_agents_of_a_cluster_follow_the_same_subject():
    """Two agents over PostgreSQL and S3: a version registered through one
    evolves the stream for both, and values produced to either agent
    decode into the same columns."""
    import tempfile

    from conftest import Server, shared_store_args
    args = shared_store_args("typed_cluster")
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        a = Server(a_dir, args)
        b = Server(b_dir, args)
        try:
            sra = SchemaRegistryClient({"url": f"http://{a.http}"})
            srb = SchemaRegistryClient({"url": f"http://{b.http}"})
            sra.register_schema("shared-value", avro(V1))
            with psycopg.connect(a.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM shared WITH (format = 'avro', "
                             "subject = 'shared-value', partitions = 2)")
            ctx = SerializationContext("shared", MessageField.VALUE)
            rows = {}
            for server, sr, schema, base in [(a, sra, V1, 0), (b, srb, V1, 100)]:
                ser = AvroSerializer(sr, json.dumps(schema))
                vals = [{"id": base + i, "customer": "x", "amount": 0.5, "note": None}
                        for i in range(50)]
                produce_all(server, "shared", [ser(r, ctx) for r in vals])
                rows.update({r["id"]: 1 for r in vals})
            # The new version registered through agent b; produced through a.
            id2 = srb.register_schema("shared-value", avro(V2))
            ser = AvroSerializer(sra, json.dumps(V2))
            vals = [{"id": 1000 + i, "customer": "y", "amount": 0.5, "note": None, "qty": 5}
                    for i in range(50)]
            produce_all(a, "shared", [ser(r, ctx) for r in vals])
            rows.update({r["id"]: 5 for r in vals})
            for server in (a, b):
                with psycopg.connect(server.dsn, autocommit=True) as conn:
                    got = dict(conn.execute("SELECT id, qty FROM shared").fetchall())
                    assert got == rows
            got, ids = consume(b, "shared", "cluster-readers", len(rows),
                               AvroDeserializer(srb))
            assert ids == {id2}
            assert {r["id"]: r["qty"] for r in got} == rows
        finally:
            a.stop()
            b.stop()
