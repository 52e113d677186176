"""Kafka sources and sinks, against another Kafka-protocol endpoint — here a
second StreamHouse server's Kafka door, read and written by confluent-kafka
clients. `CREATE SOURCE … FROM KAFKA … INTO stream` copies a topic into a
stream and `CREATE SINK … INTO KAFKA` a stream into a topic, each record
exactly once across a SIGKILL of the server that runs the connector (and,
for the sink, past an earlier run still writing, which its transactional
producer fences); bad
definitions are refused with their SQLSTATE; the endpoint going away shows
as `retrying` (for a source and for a sink) and the connector catches up,
each record once, when it returns."""
import json
import os
import signal
import socket
import tempfile
import threading
import time

import psycopg
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Server, refused, wait_for
from test_sinks import writer


def create_topic(server, name, partitions):
    a = AdminClient({"bootstrap.servers": server.kafka})
    a.create_topics([NewTopic(name, num_partitions=partitions,
                              replication_factor=1)])[name].result(30)


def producer_loop(bootstrap, topic, start, stop, acked):
    """JSON records of ids from `start` (with a field the stream lacks, and
    a tombstone now and then) until `stop`; `acked` gets each id the
    endpoint acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5})

    def report(err, msg):
        if err is None and msg.value() is not None:
            acked.append(json.loads(msg.value())["id"])

    i = start
    while not stop.is_set():
        for _ in range(200):
            value = json.dumps({"id": i, "name": f"n{i}", "amount": i / 4, "extra": [i]})
            p.produce(topic, key=str(i % 17).encode(), value=value, on_delivery=report)
            if i % 97 == 0:
                p.produce(topic, key=b"gone", value=None, on_delivery=report)
            i += 1
        p.poll(0)
        time.sleep(0.02)
    assert p.flush(60) == 0


def ids(conn, stream):
    return [r[0] for r in conn.execute(f"SELECT id FROM {stream}").fetchall()]


def test_a_kafka_source_copies_each_record_once_across_sigkill():
    with tempfile.TemporaryDirectory() as d:
        upstream = Server(os.path.join(d, "upstream"))
        try:
            create_topic(upstream, "events", 3)
            s = Server(os.path.join(d, "data"))
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM ev (id BIGINT NOT NULL, name TEXT, "
                             "amount DOUBLE PRECISION) WITH (partitions = 2)")
                conn.execute(f"CREATE SOURCE kin FROM KAFKA WITH (bootstrap = "
                             f"'{upstream.kafka}', topic = 'events', max_wait = '100ms') INTO ev")
            stop, acked = threading.Event(), []
            t = threading.Thread(target=producer_loop,
                                 args=(upstream.kafka, "events", 0, stop, acked))
            t.start()
            try:
                with psycopg.connect(s.dsn, autocommit=True) as conn:
                    wait_for(lambda: len(ids(conn, "ev")) > 5_000, "records copied", timeout=60)
                s.proc.send_signal(signal.SIGKILL)
                s.proc.wait(timeout=10)
                time.sleep(1)  # records keep coming while the source is down
            finally:
                stop.set()
                t.join()
            s = Server(os.path.join(d, "data"))
            try:
                with psycopg.connect(s.dsn, autocommit=True) as conn:
                    wait_for(lambda: len(ids(conn, "ev")) >= len(acked), "catching up",
                             timeout=120)
                    time.sleep(1)
                    got = ids(conn, "ev")
                    assert len(got) == len(set(got)), "a record was copied twice"
                    assert sorted(got) == sorted(acked)
                    row = conn.execute("SELECT name, amount FROM ev WHERE id = 1234").fetchone()
                    assert row == ("n1234", 1234 / 4)
                    shown = conn.execute(
                        "SELECT kind, url, streams, status, cause, lag_bytes, lag_records "
                        "FROM streamhouse.sources WHERE name = 'kin'").fetchone()
                    assert shown == ("KAFKA", f"kafka://{upstream.kafka}/events", "ev",
                                     "running", None, None, 0), shown
            finally:
                assert s.stop() == 0
        finally:
            assert upstream.stop() == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kafka_source_refusals_bad_records_and_an_endpoint_that_goes_away():
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        up_dir = os.path.join(d, "upstream")
        upstream = Server(up_dir, ["--kafka-addr", f"127.0.0.1:{port}"])
        s = Server(os.path.join(d, "data"))
        try:
            create_topic(upstream, "ticks", 2)
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM t (id BIGINT NOT NULL, label TEXT)")
                conn.execute("CREATE STREAM lenient (id BIGINT NOT NULL, label TEXT)")
                ok = f"bootstrap = '{upstream.kafka}', topic = 'ticks'"
                refused(conn, f"CREATE SOURCE k FROM KAFKA WITH ({ok})", "42P16", "INTO")
                refused(conn, "CREATE SOURCE k FROM KAFKA WITH (topic = 'ticks') INTO t",
                        "42P16", "bootstrap")
                refused(conn, "CREATE SOURCE k FROM KAFKA WITH (bootstrap = 'nohost', "
                        "topic = 'ticks') INTO t", "42P16", "host:port")
                refused(conn, f"CREATE SOURCE k FROM KAFKA WITH ({ok}, format = 'avro') INTO t",
                        "42P16", "'json'")
                refused(conn, f"CREATE SOURCE k FROM KAFKA WITH ({ok}, start = 'middle') "
                        "INTO t", "42P16", "earliest")
                refused(conn, f"CREATE SOURCE k FROM KAFKA WITH (bootstrap = "
                        f"'{upstream.kafka}', topic = 'nope') INTO t", "42P16", "nope")
                refused(conn, f"CREATE SOURCE k FROM KAFKA WITH (bootstrap = "
                        f"'127.0.0.1:{free_port()}', topic = 'ticks') INTO t", "08001", "Kafka")
                refused(conn, f"CREATE SOURCE k FROM KAFKA WITH ({ok}) INTO missing", "42P01",
                        "missing")
                p = Producer({"bootstrap.servers": upstream.kafka})
                for i in range(10):
                    p.produce("ticks", value=json.dumps({"id": i, "label": f"l{i}"}),
                              partition=i % 2)
                p.produce("ticks", value=b"{not json", partition=0)
                p.produce("ticks", value=json.dumps({"label": "no id"}), partition=1)
                for i in range(10, 20):
                    p.produce("ticks", value=json.dumps({"id": i, "label": f"l{i}"}),
                              partition=i % 2)
                assert p.flush(30) == 0
                del p
                conn.execute(f"CREATE SOURCE strict FROM KAFKA WITH ({ok}, max_wait = '50ms') "
                             "INTO t")
                conn.execute(f"CREATE SOURCE lenient FROM KAFKA WITH ({ok}, max_wait = '50ms', "
                             "on_error = 'skip') INTO lenient")
                status = "SELECT status, cause FROM streamhouse.sources WHERE name = %s"
                row = wait_for(lambda: (r := conn.execute(status, ("strict",)).fetchone())[0]
                               == "retrying" and r, "the strict source stopping at a bad record")
                assert "offset" in row[1], row
                assert ids(conn, "t") == []  # the round with the bad record is not appended
                wait_for(lambda: len(ids(conn, "lenient")) == 20, "the lenient source")
                assert sorted(ids(conn, "lenient")) == list(range(20))
                conn.execute("DROP SOURCE strict")
                # The endpoint goes away and comes back on the same address.
                assert upstream.stop() == 0
                row = wait_for(lambda: (r := conn.execute(status, ("lenient",)).fetchone())[0]
                               == "retrying" and r, "status retrying", timeout=60)
                assert "Kafka" in row[1], row
                upstream = Server(up_dir, ["--kafka-addr", f"127.0.0.1:{port}"])
                p = Producer({"bootstrap.servers": upstream.kafka})
                for i in range(20, 30):
                    p.produce("ticks", value=json.dumps({"id": i, "label": f"l{i}"}))
                assert p.flush(30) == 0
                del p
                wait_for(lambda: len(ids(conn, "lenient")) == 30, "recovery", timeout=60)
                assert sorted(ids(conn, "lenient")) == list(range(30))
                assert conn.execute(status, ("lenient",)).fetchone() == ("running", None)
                conn.execute("DROP SOURCE lenient")
        finally:
            assert s.stop() == 0
            assert upstream.stop() == 0


def topic_records(bootstrap, topic, partitions):
    """Every record of `topic`: (partition, value as JSON, headers dict)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                  "enable.auto.commit": False})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got, at = [], {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + 60
        while any(at[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, (at, ends)
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            at[m.partition()] = m.offset() + 1
            got.append((m.partition(), json.loads(m.value()),
                        {k: v.decode() for k, v in (m.headers() or [])}))
        return got
    finally:
        c.close()


def test_a_kafka_sink_writes_each_row_once_across_sigkill():
    with tempfile.TemporaryDirectory() as d:
        downstream = Server(os.path.join(d, "downstream"))
        try:
            create_topic(downstream, "orders_out", 2)
            s = Server(os.path.join(d, "data"))
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM orders (id BIGINT, amount BIGINT) "
                             "WITH (partitions = 3)")
                refused(conn, "CREATE SINK k FROM orders INTO KAFKA WITH (topic = 'x')",
                        "42P16", "bootstrap")
                refused(conn, f"CREATE SINK k FROM orders INTO KAFKA WITH (bootstrap = "
                        f"'{downstream.kafka}', topic = 'orders_out', path = 'file:///x')",
                        "42P16", "path")
                refused(conn, f"CREATE SINK k FROM orders INTO KAFKA WITH (bootstrap = "
                        f"'{downstream.kafka}', topic = 'absent')", "42P16", "absent")
                refused(conn, f"CREATE SINK k FROM orders INTO KAFKA WITH (bootstrap = "
                        f"'127.0.0.1:{free_port()}', topic = 'orders_out')", "08001", "Kafka")
                conn.execute(f"CREATE SINK k FROM orders INTO KAFKA WITH (bootstrap = "
                             f"'{downstream.kafka}', topic = 'orders_out', "
                             "flush_interval = '50ms', file_rows = 500)")
            stop, acked = threading.Event(), []
            t = threading.Thread(target=writer, args=(s.dsn, 0, stop, acked))
            t.start()
            time.sleep(2)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=10)
            stop.set()
            t.join()
            assert acked
            s = Server(os.path.join(d, "data"))
            try:
                with psycopg.connect(s.dsn, autocommit=True) as conn:
                    conn.execute("INSERT INTO orders SELECT x, x * 2 "
                                 "FROM generate_series(1000000, 1000999) AS t(x)")
                    acked.extend(range(1_000_000, 1_001_000))
                    want = sorted(conn.execute(
                        "SELECT _partition, _offset, id FROM orders").fetchall())
                    wait_for(lambda: conn.execute("SELECT lag_rows FROM streamhouse.sinks")
                             .fetchone()[0] == 0, "the sink caught up", timeout=60)
                    records = topic_records(downstream.kafka, "orders_out", 2)
                    got = sorted((int(h["streamhouse.partition"]), int(h["streamhouse.offset"]),
                                  v["id"]) for _, v, h in records)
                    # Exactly the stream's rows, each once, stream partition
                    # p in topic partition p % 2.
                    assert got == want
                    assert all(p == int(h["streamhouse.partition"]) % 2 for p, _, h in records)
                    assert all(v["amount"] == v["id"] * 2 for _, v, _ in records)
                    assert set(acked) <= {r[2] for r in got}

                    # An earlier run of partition 0's copy that lost its
                    # lease and goes on: it starts as the copy's
                    # transactional producer (fencing the running one),
                    # writes a record and commits after the sink took over
                    # again. The commit is refused; nothing of it is read.
                    zombie = Producer({"bootstrap.servers": downstream.kafka,
                                       "transactional.id": "streamhouse.sink.k.p0"})
                    zombie.init_transactions(30)
                    zombie.begin_transaction()
                    zombie.produce("orders_out", partition=0, value=b'{"id": -1}',
                                   headers={"streamhouse.partition": "0",
                                            "streamhouse.offset": "999999999"})
                    assert zombie.flush(30) == 0
                    # New rows, until some land in partition 0.
                    for i in range(12):
                        conn.execute(f"INSERT INTO orders SELECT x, x * 2 FROM generate_series("
                                     f"{2_000_000 + 100 * i}, {2_000_099 + 100 * i}) AS t(x)")
                        if conn.execute("SELECT count(*) FROM orders WHERE _partition = 0 "
                                        "AND id >= 2000000").fetchone()[0]:
                            break
                    want = sorted(conn.execute(
                        "SELECT _partition, _offset, id FROM orders").fetchall())
                    assert any(p == 0 and i >= 2_000_000 for p, _, i in want)
                    wait_for(lambda: conn.execute("SELECT lag_rows FROM streamhouse.sinks")
                             .fetchone()[0] == 0, "the sink caught up again", timeout=60)
                    with pytest.raises(KafkaException):
                        zombie.commit_transaction(30)
                    records = topic_records(downstream.kafka, "orders_out", 2)
                    got = sorted((int(h["streamhouse.partition"]), int(h["streamhouse.offset"]),
                                  v["id"]) for _, v, h in records)
                    assert got == want
                    shown = conn.execute("SHOW SINKS").fetchone()
                    assert shown[:5] == ("k", "orders", "KAFKA",
                                         f"kafka://{downstream.kafka}/orders_out", "running")
            finally:
                assert s.stop() == 0
        finally:
            assert downstream.stop() == 0


def test_a_kafka_sink_whose_endpoint_goes_away_retries_then_catches_up():
    """The endpoint a Kafka sink writes to stops: `streamhouse.sinks` shows
    `retrying` with the cause while rows wait; when it is back on its
    address the sink writes them, each row once, and is `running` again."""
    port = free_port()
    status = "SELECT status, cause, lag_rows FROM streamhouse.sinks WHERE name = 'k'"
    with tempfile.TemporaryDirectory() as d:
        down_dir = os.path.join(d, "downstream")
        downstream = Server(down_dir, ["--kafka-addr", f"127.0.0.1:{port}"])
        s = Server(os.path.join(d, "data"))
        try:
            create_topic(downstream, "orders_out", 2)
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM orders (id BIGINT, amount BIGINT) "
                             "WITH (partitions = 2)")
                conn.execute(f"CREATE SINK k FROM orders INTO KAFKA WITH (bootstrap = "
                             f"'{downstream.kafka}', topic = 'orders_out', "
                             "flush_interval = '50ms')")
                conn.execute("INSERT INTO orders SELECT x, x * 2 "
                             "FROM generate_series(0, 299) AS t(x)")
                wait_for(lambda: conn.execute(status).fetchone()[2] == 0, "the first rows")
                assert downstream.stop() == 0
                conn.execute("INSERT INTO orders SELECT x, x * 2 "
                             "FROM generate_series(300, 799) AS t(x)")
                row = wait_for(lambda: (r := conn.execute(status).fetchone())[0] == "retrying"
                               and r, "status retrying", timeout=60)
                assert "Kafka" in row[1], row
                assert row[2] > 0, row  # rows waiting
                downstream = Server(down_dir, ["--kafka-addr", f"127.0.0.1:{port}"])
                wait_for(lambda: conn.execute(status).fetchone() == ("running", None, 0),
                         "running again", timeout=90)
                want = sorted(conn.execute(
                    "SELECT _partition, _offset, id FROM orders").fetchall())
                assert len(want) == 800
                records = topic_records(downstream.kafka, "orders_out", 2)
                got = sorted((int(h["streamhouse.partition"]), int(h["streamhouse.offset"]),
                              v["id"]) for _, v, h in records)
                assert got == want
        finally:
            assert s.stop() == 0
            if downstream.proc.poll() is None:
                assert downstream.stop() == 0
