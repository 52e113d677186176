"""The Kafka door through real Kafka clients: confluent-kafka (librdkafka)
for admin calls, producers with each codec and idempotence, consumers and
consumer groups in separate processes; kcat; raw sockets for bad input;
psql-side reads of the same rows; SIGKILL during acks=all production."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import Server, _binary, wait_for

HERE = os.path.dirname(__file__)


def admin(server):
    return AdminClient({"bootstrap.servers": server.kafka})


def create_topic(server, name, partitions=1, config=None):
    a = admin(server)
    fs = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})])
    fs[name].result(30)


def produce(server, topic, records, **conf):
    """Produces (key, value, headers, partition) tuples; returns the
    delivered messages, failing on any delivery error."""
    p = Producer({"bootstrap.servers": server.kafka, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5, **conf})
    delivered, errors = [], []

    def report(err, msg):
        (errors if err else delivered).append(err or msg)

    for key, value, headers, partition in records:
        kwargs = {"key": key, "value": value, "headers": headers, "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        p.produce(topic, **kwargs)
    assert p.flush(60) == 0, "every message delivered within a minute"
    assert not errors, errors
    return delivered


def consume(server, topic, expect, **conf):
    c = Consumer({"bootstrap.servers": server.kafka, "group.id": f"read-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **conf})
    c.subscribe([topic])
    out = []
    deadline = time.time() + 60
    while len(out) < expect and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        out.append(m)
    # Nothing more than expected arrives.
    extra = c.poll(1.0)
    c.close()
    assert extra is None or extra.error(), f"unexpected record {extra.value()!r}"
    assert len(out) == expect, f"consumed {len(out)} of {expect}"
    return out


def dense(messages):
    by_partition = {}
    for m in messages:
        by_partition.setdefault(m.partition(), []).append(m.offset())
    for p, offsets in by_partition.items():
        assert sorted(offsets) == list(range(len(offsets))), (p, sorted(offsets))
    return by_partition


def test_topic_admin_calls(server):
    a = admin(server)
    create_topic(server, "admin_t", 3, {"retention.ms": "86400000"})
    md = a.list_topics(timeout=10)
    assert "admin_t" in md.topics
    assert len(md.topics["admin_t"].partitions) == 3
    assert len(md.brokers) == 1
    broker = next(iter(md.brokers.values()))
    assert f"{broker.host}:{broker.port}" == server.kafka

    dup = a.create_topics([NewTopic("admin_t", num_partitions=1, replication_factor=1)])
    with pytest.raises(Exception) as e:
        dup["admin_t"].result(30)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    bad = a.create_topics([NewTopic("no spaces", num_partitions=1, replication_factor=1)])
    with pytest.raises(Exception) as e:
        bad["no spaces"].result(30)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION

    compact = a.create_topics([NewTopic("compacted", num_partitions=1, replication_factor=1,
                                        config={"cleanup.policy": "compact"})])
    with pytest.raises(Exception) as e:
        compact["compacted"].result(30)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG

    res = ConfigResource(ConfigResource.Type.TOPIC, "admin_t")
    configs = a.describe_configs([res])[res].result(30)
    assert configs["retention.ms"].value == "86400000"
    assert configs["cleanup.policy"].value == "delete"

    # The topic is a stream: SQL sees its record shape.
    with psycopg.connect(server.dsn, autocommit=True) as c:
        cols = [r[0] for r in c.execute("DESCRIBE admin_t").fetchall()]
        assert cols[:4] == ["key", "value", "headers", "timestamp"], cols

    a.delete_topics(["admin_t"])["admin_t"].result(30)
    assert "admin_t" not in a.list_topics(timeout=10).topics
    with psycopg.connect(server.dsn, autocommit=True) as c:
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM admin_t")


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_with_each_codec_and_consume(server, codec):
    topic = f"codec_{codec}"
    create_topic(server, topic, 3)
    records = [(f"k{i}".encode(), f"v{i}".encode(), [("n", str(i).encode())], None)
               for i in range(300)]
    records += [
        (None, b"null key", None, 0),
        (b"", b"empty key", None, 0),
        (b"dead", None, None, 0),
        (b"h", b"headers", [("a", b"1"), ("b", None)], 0),
    ]
    delivered = produce(server, topic, records, **{"compression.type": codec})
    assert len(delivered) == len(records)
    got = consume(server, topic, len(records))
    dense(got)
    by_value = {m.value(): m for m in got if m.value() is not None}
    assert by_value[b"null key"].key() is None
    assert by_value[b"empty key"].key() == b""
    tomb = [m for m in got if m.value() is None]
    assert len(tomb) == 1 and tomb[0].key() == b"dead"
    assert by_value[b"headers"].headers() == [("a", b"1"), ("b", None)]
    assert by_value[b"v7"].key() == b"k7"
    # Records with the same key land in one partition, in order.
    sent = {m.value(): (m.partition(), m.offset()) for m in delivered if m.value()}
    assert all(sent[v] == (m.partition(), m.offset()) for v, m in by_value.items())
    ts_type, ts = by_value[b"v1"].timestamp()
    assert ts_type == 1 and abs(ts / 1000 - time.time()) < 300

    with psycopg.connect(server.dsn, autocommit=True) as c:
        assert c.execute(f"SELECT count(*) FROM {topic}").fetchone()[0] == len(records)
        assert c.execute(
            f"SELECT count(*) FROM {topic} WHERE key IS NULL").fetchone()[0] == 1
        assert c.execute(
            f"SELECT value::text FROM {topic} WHERE key = 'k5'::bytea").fetchone()[0] == "v5"
        assert c.execute(
            f"SELECT count(*) FROM {topic} WHERE value IS NULL").fetchone()[0] == 1


def test_sql_rows_reach_kafka_consumers_and_kafka_rows_reach_views(server):
    create_topic(server, "mixed", 1)
    produce(server, "mixed", [(b"a", b"1", None, None), (b"b", b"2", None, None)])
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("INSERT INTO mixed (key, value, timestamp) "
                  "VALUES ('a'::bytea, 'from sql'::bytea, now())")
        c.execute("CREATE MATERIALIZED VIEW mixed_counts AS "
                  "SELECT key::text AS k, count(*) AS n FROM mixed GROUP BY key::text")
    got = consume(server, "mixed", 3)
    assert [(m.offset(), m.value()) for m in got] == [(0, b"1"), (1, b"2"), (2, b"from sql")]
    assert got[2].headers() is None
    produce(server, "mixed", [(b"b", b"3", None, None)])
    with psycopg.connect(server.dsn, autocommit=True) as c:
        deadline = time.time() + 60
        rows = None
        while time.time() < deadline:
            rows = dict(c.execute("SELECT k, n FROM mixed_counts").fetchall())
            if rows == {"a": 2, "b": 2}:
                break
            time.sleep(0.2)
        assert rows == {"a": 2, "b": 2}


def test_offsets_by_time_latest_and_earliest(server):
    create_topic(server, "times", 1)
    base = 1_700_000_000_000
    p = Producer({"bootstrap.servers": server.kafka, "acks": "all"})
    for i in range(10):
        p.produce("times", value=str(i).encode(), timestamp=base + i * 1000)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": server.kafka, "group.id": "times-g"})
    found = c.offsets_for_times([TopicPartition("times", 0, base + 4500)], timeout=10)
    assert found[0].offset == 5
    low, high = c.get_watermark_offsets(TopicPartition("times", 0), timeout=10)
    assert (low, high) == (0, 10)
    # From the latest offset, only what comes next.
    c.assign([TopicPartition("times", 0, high)])
    p.produce("times", value=b"new", timestamp=base + 99_000)
    assert p.flush(30) == 0
    m = None
    deadline = time.time() + 30
    while m is None and time.time() < deadline:
        m = c.poll(0.5)
    assert m is not None and not m.error() and (m.offset(), m.value()) == (10, b"new")
    assert m.timestamp() == (1, base + 99_000)
    c.close()


def _member(server, group, topic):
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "kafka_consumer.py"), server.kafka, group, topic],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


class Events:
    """A member process's JSON lines, read on a thread."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(json.loads(line))

    def assigned(self):
        with self.lock:
            a = [e["assigned"] for e in self.lines if "assigned" in e]
        return a[-1] if a else None

    def records(self):
        with self.lock:
            return [tuple(e["record"]) for e in self.lines if "record" in e]


def test_a_group_of_two_processes_splits_partitions_and_rebalances(server):
    create_topic(server, "grouped", 4)
    produce(server, "grouped", [(None, f"a{i}".encode(), None, i % 4) for i in range(40)])
    one, two = Events(_member(server, "g2", "grouped")), Events(_member(server, "g2", "grouped"))
    try:
        wait_for(lambda: one.assigned() and two.assigned()
                 and sorted(one.assigned() + two.assigned()) == [0, 1, 2, 3],
                 "both members to share the four partitions")
        assert not set(one.assigned()) & set(two.assigned())
        wait_for(lambda: len(one.records()) + len(two.records()) >= 40, "the first 40 records")
        # Kill one: its partitions move to the other after its session.
        one.proc.send_signal(signal.SIGKILL)
        one.proc.wait()
        wait_for(lambda: two.assigned() == [0, 1, 2, 3], "the survivor to take every partition")
        produce(server, "grouped", [(None, f"b{i}".encode(), None, i % 4) for i in range(20)])
        wait_for(lambda: sum(v.startswith("b") for _, _, v in two.records()) == 20,
                 "the survivor to read the next 20")
        seen = one.records() + two.records()
        values = {v for _, _, v in seen}
        assert values == {f"a{i}" for i in range(40)} | {f"b{i}" for i in range(20)}
        # The committed offsets are the ones `streamhouse groups` sees.
        env = {**os.environ, "STREAMHOUSE_SERVER": server.flight}
        out = subprocess.run([_binary(), "groups", "describe", "g2"], capture_output=True,
                             text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "grouped" in out.stdout and "total lag: 0 rows" in out.stdout, out.stdout
        # A clean leave: the group empties.
        two.proc.stdin.close()
        two.proc.wait(timeout=30)
        a = admin(server)
        groups = a.list_consumer_groups().result(30)
        states = {g.group_id: g.state for g in groups.valid}
        assert states.get("g2") is not None and "EMPTY" in str(states["g2"]), states
    finally:
        for m in (one, two):
            if m.proc.poll() is None:
                m.proc.kill()


def test_kcat_lists_produces_and_consumes(server):
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed: run the suite with ./scripts/test")
    create_topic(server, "kc", 1)
    listing = subprocess.run([kcat, "-b", server.kafka, "-L"], capture_output=True, text=True,
                             timeout=60)
    assert listing.returncode == 0 and 'topic "kc"' in listing.stdout, listing.stdout
    subprocess.run([kcat, "-b", server.kafka, "-P", "-t", "kc", "-K", ":"],
                   input="k1:one\nk2:two\n", text=True, check=True, timeout=60)
    out = subprocess.run([kcat, "-b", server.kafka, "-C", "-t", "kc", "-o", "beginning", "-e",
                          "-f", "%k=%s@%o\n"], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["k1=one@0", "k2=two@1"], out.stdout


# Raw wire: requests built by hand.

def frame(api_key, version, correlation, body=b""):
    header = struct.pack(">hhih", api_key, version, correlation, 4) + b"test"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_frame(sock):
    size = struct.unpack(">i", recv_exactly(sock, 4))[0]
    return recv_exactly(sock, size)


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def connect(server):
    host, port = server.kafka.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def closed(sock):
    try:
        return sock.recv(1) == b""
    except (ConnectionError, socket.timeout):
        return True


def api_versions_ok(server):
    with connect(server) as s:
        s.sendall(frame(18, 0, 7))
        body = read_frame(s)
        correlation, error = struct.unpack(">ih", body[:6])
        return correlation == 7 and error == 0


def produce_v3(topic, records, partition=0):
    name = topic.encode()
    body = struct.pack(">hhi", -1, -1, 10_000)
    body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(records)) + records
    return body


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def varint(n):
    z = (n << 1) ^ (n >> 63)
    out = b""
    while True:
        if z < 0x80:
            return out + bytes([z])
        out += bytes([(z & 0x7F) | 0x80])
        z >>= 7


def record_batch(values):
    """A v2 record batch of `values` (null keys, no headers), CRC right."""
    records = b""
    for i, v in enumerate(values):
        r = bytes([0]) + varint(0) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        records += varint(len(r)) + r
    now = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, now, now, -1, -1, -1,
                            len(values)) + records
    body = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(body)) + body


def batch_with_bad_crc():
    # One record, value b"x": attributes 0, deltas 0, null key, no headers.
    record = bytes([0, 0, 0, 1]) + bytes([2]) + b"x" + bytes([0])
    record = bytes([len(record) * 2]) + record  # zigzag varint length
    after_crc = struct.pack(">hiqqqhii", 0, 0, 0, 0, -1, -1, -1, 1) + record
    body = struct.pack(">ib", -1, 2) + struct.pack(">I", 0xDEADBEEF) + after_crc
    return struct.pack(">qi", 0, len(body)) + body


def test_bad_input_gets_an_error_or_a_closed_connection_and_the_server_stays_up(server):
    create_topic(server, "wire", 1)
    produce(server, "wire", [(None, b"kept", None, None)])

    # A corrupt batch (bad CRC): CORRUPT_MESSAGE, nothing written.
    with connect(server) as s:
        s.sendall(frame(0, 3, 1, produce_v3("wire", batch_with_bad_crc())))
        body = read_frame(s)
        assert struct.unpack(">i", body[:4])[0] == 1
        # topics[1]: name, partitions[1]: index, error_code
        off = 4 + 4 + 2 + len(b"wire") + 4 + 4
        assert struct.unpack(">h", body[off:off + 2])[0] == 2, "CORRUPT_MESSAGE"

    # An unknown API, an unserved version, a garbage body: closed.
    garbage = frame(3, 1, 4, struct.pack(">i", 5) + b"\x00\x01")
    for bad in (frame(999, 0, 2), frame(0, 99, 3), garbage):
        with connect(server) as s:
            s.sendall(bad)
            assert closed(s)
    # An ApiVersions too new: answered with version 0 and UNSUPPORTED_VERSION.
    with connect(server) as s:
        s.sendall(frame(18, 99, 5))
        body = read_frame(s)
        correlation, error = struct.unpack(">ih", body[:6])
        assert (correlation, error) == (5, 35)
    # An oversized frame: closed before anything is allocated or read.
    with connect(server) as s:
        s.sendall(struct.pack(">i", 2**31 - 1) + b"\x00" * 16)
        assert closed(s)
    # A negative size, a frame shorter than a header: closed.
    for bad in (struct.pack(">i", -5), struct.pack(">i", 3) + b"abc"):
        with connect(server) as s:
            s.sendall(bad)
            assert closed(s)
    # A truncated frame, then the client vanishes mid-request.
    with connect(server) as s:
        s.sendall(struct.pack(">i", 1000) + b"\x00\x12\x00\x00")
    assert api_versions_ok(server)
    got = consume(server, "wire", 1)
    assert got[0].value() == b"kept"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_during_acks_all_production_loses_nothing_and_duplicates_nothing():
    port = _free_port()
    with tempfile.TemporaryDirectory() as d:
        args = ["--kafka-addr", f"127.0.0.1:{port}"]
        server = Server(d, extra_args=args)
        create_topic(server, "durable", 2)
        acked, errors = [], []
        p = Producer({"bootstrap.servers": server.kafka, "acks": "all",
                      "enable.idempotence": True, "linger.ms": 2,
                      "message.timeout.ms": 120_000, "retry.backoff.ms": 100,
                      "reconnect.backoff.max.ms": 500})

        def report(err, msg):
            (errors if err else acked).append(err or msg.value())

        stop = threading.Event()

        def keep_producing():
            i = 0
            while not stop.is_set():
                try:
                    p.produce("durable", key=str(i % 7).encode(), value=f"m{i}".encode(),
                              on_delivery=report)
                    i += 1
                except BufferError:
                    pass
                p.poll(0.001)

        t = threading.Thread(target=keep_producing)
        t.start()
        wait_for(lambda: len(acked) > 2000, "2000 acknowledged messages")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        acked_before_kill = len(acked)
        time.sleep(1)
        server = Server(d, extra_args=args)
        try:
            wait_for(lambda: len(acked) > acked_before_kill + 2000,
                     "production to resume on the restarted server", timeout=120)
            stop.set()
            t.join()
            assert p.flush(120) == 0
            assert not errors, errors[:5]
            c = Consumer({"bootstrap.servers": server.kafka, "group.id": "durable-check",
                          "auto.offset.reset": "earliest"})
            c.subscribe(["durable"])
            seen = []
            deadline = time.time() + 120
            total = None
            while time.time() < deadline:
                m = c.poll(0.5)
                if m is None:
                    lows_highs = [c.get_watermark_offsets(TopicPartition("durable", i))
                                  for i in range(2)]
                    total = sum(h for _, h in lows_highs)
                    if len(seen) >= total:
                        break
                    continue
                assert not m.error(), m.error()
                seen.append(m)
            c.close()
            dense(seen)
            values = [m.value().decode() for m in seen]
            assert len(values) == len(set(values)), "no message was written twice"
            missing = set(acked) - {v.encode() for v in values}
            assert not missing, f"{len(missing)} acknowledged messages lost"
        finally:
            stop.set()
            t.join()
            assert server.stop() == 0


# SASL and privileges.

ADMIN_PASSWORD = "admin-password"


def sasl(server, mechanism, user, password):
    return {"bootstrap.servers": server.kafka, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}


def test_sasl_logins_and_privileges_on_a_password_server():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d, ["--auth", "password"], env={"STREAMHOUSE_PASSWORD": ADMIN_PASSWORD})
        try:
            pg = dict(host=s.host, port=s.port, dbname="streamhouse", autocommit=True)
            with psycopg.connect(user="streamhouse", password=ADMIN_PASSWORD, **pg) as c:
                c.execute("CREATE USER writer WITH PASSWORD 'w-pass'")
                c.execute("CREATE USER reader WITH PASSWORD 'r-pass'")
            # The superuser creates a topic through Kafka with SCRAM.
            su = AdminClient(sasl(s, "SCRAM-SHA-256", "streamhouse", ADMIN_PASSWORD))
            su.create_topics([NewTopic("secured", 2, 1)])["secured"].result(30)
            with psycopg.connect(user="streamhouse", password=ADMIN_PASSWORD, **pg) as c:
                c.execute("GRANT INSERT ON secured TO writer")
                c.execute("GRANT SELECT ON secured TO reader")
                c.execute("GRANT CONSUME ON GROUP readers TO reader")

            # PLAIN and SCRAM both log in; each runs with its own rights.
            for mechanism in ("PLAIN", "SCRAM-SHA-256"):
                p = Producer({**sasl(s, mechanism, "writer", "w-pass"), "acks": "all"})
                results = []
                p.produce("secured", value=mechanism.encode(),
                          on_delivery=lambda e, m: results.append(e))
                assert p.flush(30) == 0 and results == [None], results
            c = Consumer({**sasl(s, "SCRAM-SHA-256", "reader", "r-pass"), "group.id": "readers",
                          "auto.offset.reset": "earliest"})
            c.subscribe(["secured"])
            got = []
            deadline = time.time() + 60
            while len(got) < 2 and time.time() < deadline:
                m = c.poll(0.5)
                if m is not None:
                    assert not m.error(), m.error()
                    got.append(m.value())
            c.close()
            assert sorted(got) == [b"PLAIN", b"SCRAM-SHA-256"]

            # The reader may not write; the writer may not read or join.
            p = Producer({**sasl(s, "PLAIN", "reader", "r-pass"), "acks": "all",
                          "message.timeout.ms": 10_000})
            errs = []
            p.produce("secured", value=b"no", on_delivery=lambda e, m: errs.append(e))
            p.flush(30)
            assert errs and errs[0] is not None
            assert errs[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errs[0]
            c = Consumer({**sasl(s, "PLAIN", "writer", "w-pass"), "group.id": "readers",
                          "auto.offset.reset": "earliest"})
            c.subscribe(["secured"])
            denied = None
            deadline = time.time() + 30
            while denied is None and time.time() < deadline:
                m = c.poll(0.5)
                if m is not None and m.error():
                    denied = m.error()
            c.close()
            assert denied is not None and denied.code() in (
                KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED), denied

            # kcat (Debian's librdkafka 2.0) logs in and reads. With PLAIN:
            # librdkafka before 2.6.1 sends a wrong nonce in SCRAM's final
            # message, which this door refuses as Apache Kafka 4 does.
            kcat = shutil.which("kcat")
            out = subprocess.run(
                [kcat, "-b", s.kafka, "-X", "security.protocol=sasl_plaintext",
                 "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=reader",
                 "-X", "sasl.password=r-pass", "-C", "-t", "secured", "-o", "beginning", "-e",
                 "-q"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert sorted(out.stdout.split()) == ["PLAIN", "SCRAM-SHA-256"]

            # A version-0 handshake: the PLAIN token goes bare and is
            # answered bare; then requests are served as that user. A wrong
            # password closes the connection.
            for password, ok in (("r-pass", True), ("wrong", False)):
                with connect(s) as raw:
                    raw.sendall(frame(17, 0, 1, struct.pack(">h", 5) + b"PLAIN"))
                    correlation, error = struct.unpack(">ih", read_frame(raw)[:6])
                    assert (correlation, error) == (1, 0)
                    token = b"\0reader\0" + password.encode()
                    raw.sendall(struct.pack(">i", len(token)) + token)
                    if not ok:
                        assert closed(raw)
                        continue
                    assert read_frame(raw) == b""
                    raw.sendall(frame(18, 0, 2))
                    correlation, error = struct.unpack(">ih", read_frame(raw)[:6])
                    assert (correlation, error) == (2, 0)

            # A wrong password, or no SASL at all, gets nothing.
            for conf in (sasl(s, "PLAIN", "writer", "wrong"),
                         sasl(s, "SCRAM-SHA-256", "writer", "wrong"),
                         sasl(s, "SCRAM-SHA-256", "nobody", "x"),
                         {"bootstrap.servers": s.kafka}):
                a = AdminClient(conf)
                with pytest.raises(Exception):
                    a.list_topics(timeout=5)
            with psycopg.connect(user="streamhouse", password=ADMIN_PASSWORD, **pg) as c:
                rows = c.execute(
                    "SELECT event, user_name, success FROM streamhouse.audit "
                    "WHERE door = 'kafka' ORDER BY at").fetchall()
            events = {(e, u, ok) for e, u, ok in rows}
            assert ("login", "writer", True) in events
            assert ("login_failed", "writer", False) in events
            assert ("denied", "reader", False) in events
        finally:
            assert s.stop() == 0


def test_typed_streams_take_and_give_json_values(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("CREATE STREAM typed_orders (id bigint NOT NULL, item text, amount double) "
                  "WITH (partitions = 2)")
        c.execute("INSERT INTO typed_orders VALUES (1, 'pen', 1.5)")
    delivered = produce(server, "typed_orders", [
        (b"k", b'{"id": 2, "item": "ink", "amount": 2.25}', None, 0),
        (None, b'{"id": 3}', None, 0),
    ])
    assert [m.partition() for m in delivered] == [0, 0]
    assert delivered[1].offset() == delivered[0].offset() + 1
    # A batch with one value that does not fit is refused whole: the good
    # value beside it is not written either. (The batch is built by hand, so
    # that both values are surely in one batch.)
    for bad in (b'{"item": "no id"}', b'{"id": 4, "colour": "red"}', b"not json", b"[1]"):
        batch = record_batch([b'{"id": 99}', bad])
        with connect(server) as sock:
            sock.sendall(frame(0, 3, 9, produce_v3("typed_orders", batch, partition=1)))
            body = read_frame(sock)
        off = 4 + 4 + 2 + len(b"typed_orders") + 4 + 4
        assert struct.unpack(">h", body[off:off + 2])[0] == 87, (bad, "INVALID_RECORD")
    # The same hand-built batch with good values only is written.
    with connect(server) as sock:
        sock.sendall(frame(0, 3, 10, produce_v3("typed_orders", record_batch([b'{"id": 5}']), 1)))
        body = read_frame(sock)
    off = 4 + 4 + 2 + len(b"typed_orders") + 4 + 4
    assert struct.unpack(">h", body[off:off + 2])[0] == 0
    with psycopg.connect(server.dsn, autocommit=True) as c:
        rows = c.execute("SELECT id, item, amount FROM typed_orders ORDER BY id").fetchall()
        assert rows == [(1, "pen", 1.5), (2, "ink", 2.25), (3, None, None), (5, None, None)]
    got = consume(server, "typed_orders", 4)
    values = sorted((json.loads(m.value()) for m in got), key=lambda v: v["id"])
    assert values == [{"id": 1, "item": "pen", "amount": 1.5},
                      {"id": 2, "item": "ink", "amount": 2.25}, {"id": 3}, {"id": 5}], values
    assert all(m.key() is None for m in got)


def test_a_cluster_serves_kafka_from_every_agent_and_clients_survive_a_sigkill():
    from conftest import shared_store_args

    args = shared_store_args("kafka_cluster")
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        a = Server(a_dir, args)
        b = Server(b_dir, args)
        try:
            both = f"{a.kafka},{b.kafka}"
            ac = AdminClient({"bootstrap.servers": b.kafka})
            ac.create_topics([NewTopic("spread", 4, 1)])["spread"].result(30)
            md = ac.list_topics(timeout=10)
            assert len(md.brokers) == 2, md.brokers
            leaders = {p.leader for p in md.topics["spread"].partitions.values()}
            assert leaders == set(md.brokers), (leaders, md.brokers)

            conf = {"bootstrap.servers": both, "acks": "all", "enable.idempotence": True,
                    "linger.ms": 5, "message.timeout.ms": 120_000,
                    "topic.metadata.refresh.interval.ms": 1000}
            p = Producer(conf)
            acked, errors = [], []

            def report(err, msg):
                (errors if err else acked).append(err or msg.value())

            for i in range(300):
                p.produce("spread", key=str(i).encode(), value=f"before{i}".encode(),
                          on_delivery=report)
            assert p.flush(60) == 0 and not errors, errors[:3]

            # A group read through either agent, then one agent is killed.
            c = Consumer({"bootstrap.servers": both, "group.id": "spread-readers",
                          "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                          "topic.metadata.refresh.interval.ms": 1000})
            c.subscribe(["spread"])
            seen = []
            deadline = time.time() + 60
            while len(seen) < 300 and time.time() < deadline:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    seen.append(m)
            assert len(seen) == 300
            c.commit(asynchronous=False)

            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            for i in range(300):
                p.produce("spread", key=str(i).encode(), value=f"after{i}".encode(),
                          on_delivery=report)
            assert p.flush(150) == 0, "every message delivered through the surviving agent"
            assert not errors, errors[:3]
            deadline = time.time() + 120
            while len(seen) < 600 and time.time() < deadline:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    seen.append(m)
            c.close()
            dense(seen)
            values = [m.value() for m in seen]
            assert len(values) == len(set(values)) == 600
            assert set(values) == set(acked)
        finally:
            if a.proc.poll() is None:
                a.proc.kill()
            assert b.stop() == 0


def test_kafka_python_produces_and_consumes_in_a_group(server):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic as KpNewTopic

    admin_client = KafkaAdminClient(bootstrap_servers=server.kafka)
    admin_client.create_topics([KpNewTopic("kp", num_partitions=2, replication_factor=1)])
    assert "kp" in admin_client.list_topics()
    producer = KafkaProducer(bootstrap_servers=server.kafka, acks="all",
                             compression_type="gzip", enable_idempotence=True)
    futures = [producer.send("kp", key=f"k{i}".encode(), value=f"v{i}".encode(),
                             headers=[("h", b"x")]) for i in range(100)]
    metas = [f.get(timeout=30) for f in futures]
    producer.close()
    assert len({(m.partition, m.offset) for m in metas}) == 100
    consumer = KafkaConsumer("kp", bootstrap_servers=server.kafka, group_id="kp-group",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    got = []
    for m in consumer:
        got.append(m)
        if len(got) == 100:
            break
    consumer.commit()
    from kafka import TopicPartition as KpTopicPartition
    committed = [consumer.committed(KpTopicPartition("kp", p)) for p in (0, 1)]
    consumer.close()
    assert sorted(m.value for m in got) == sorted(f"v{i}".encode() for i in range(100))
    assert all(m.headers == [("h", b"x")] for m in got)
    assert sum(committed) == 100, committed
    admin_client.close()
