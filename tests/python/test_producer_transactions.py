"""Transactional producers on the Flight port, driven with pyarrow.flight
only: read, process and write exactly once (appends to two streams and the
group's offsets visible together at commit, or never), a zombie with an
older epoch refused, and SIGKILL — of the producer and of the server —
before and after the commit's acknowledgement."""

import json
import os
import signal
import subprocess
import sys
import tempfile

import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import Server
from flight_api import action, produce

SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("amount", pa.float64()),
])
# pyarrow raises gRPC statuses as Flight errors or Arrow errors by code.
ERRORS = (flight.FlightError, pa.ArrowException)
PRODUCER = os.path.join(os.path.dirname(__file__), "txn_producer.py")


def sql(dsn, statement):
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else None


def create(dsn, *names):
    for n in names:
        sql(dsn, f"CREATE STREAM {n} (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) "
                 "WITH (partitions = 2)")


def batch(ids):
    return pa.record_batch([
        pa.array(ids, pa.int64()),
        pa.array([f"n{i}" for i in ids]),
        pa.array([i / 2 for i in ids], pa.float64()),
    ], schema=SCHEMA)


def ids(client, **ticket):
    return sorted(client.do_get(flight.Ticket(json.dumps(ticket).encode()))
                  .read_all().column("id").to_pylist())


def ends(client, stream):
    """Each partition's next offset, as read."""
    t = client.do_get(flight.Ticket(json.dumps({"stream": stream}).encode())).read_all()
    out = {}
    for p, o in zip(t.column("_partition").to_pylist(), t.column("_offset").to_pylist()):
        out[str(p)] = max(out.get(str(p), 0), o + 1)
    return out


def run_producer(server, *args):
    """Starts the producer script and waits for its one line."""
    proc = subprocess.Popen([sys.executable, PRODUCER, server.flight, *args],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    return proc, line


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_producer_killed_before_its_commit_leaves_nothing_and_after_it_everything(server):
    create(server.dsn, "tp_in", "tp_a", "tp_b")
    client = flight.connect(server.flight)
    produce(client, "tp_in", [batch(list(range(0, 60))), batch(list(range(60, 100)))])

    proc, line = run_producer(server, "etl", "tp_in", "tp_a", "tp_b", "tp_g", "stage")
    assert line.startswith("staged "), line
    first = int(line.split()[1])
    kill(proc)
    assert ids(client, stream="tp_a") == []
    assert ids(client, stream="tp_b") == []
    # The group's offsets did not move: it still reads everything.
    assert len(ids(client, stream="tp_in", group="tp_g")) == 100

    proc, line = run_producer(server, "etl", "tp_in", "tp_a", "tp_b", "tp_g", "commit")
    assert line == f"committed {first + 1}", line
    kill(proc)
    assert ids(client, stream="tp_a") == [i * 10 for i in range(100)]
    assert ids(client, stream="tp_b") == list(range(100))
    assert ids(client, stream="tp_in", group="tp_g") == []

    # Processed exactly once: new input, a new instance, only the new rows.
    produce(client, "tp_in", [batch(list(range(100, 110)))])
    proc, line = run_producer(server, "etl", "tp_in", "tp_a", "tp_b", "tp_g", "commit")
    assert line == f"committed {first + 2}", line
    kill(proc)
    assert ids(client, stream="tp_b") == list(range(110))
    client.close()


def test_a_zombie_with_an_older_epoch_is_refused(server):
    create(server.dsn, "tz_a", "tz_b")
    client = flight.connect(server.flight)
    (old,) = action(client, "init_transactions", {"transactional_id": "z"})
    zombie = {"transactional_id": "z", "epoch": old["epoch"]}
    acks = produce(client, "tz_a", [batch([1, 2])], zombie)
    assert acks == [{"rows": 2, "partitions": [], "duplicate": False, "staged": True}]
    (new,) = action(client, "init_transactions", {"transactional_id": "z"})
    assert new["epoch"] == old["epoch"] + 1
    current = {"transactional_id": "z", "epoch": new["epoch"]}

    with pytest.raises(ERRORS) as e:
        produce(client, "tz_a", [batch([3])], zombie)
    assert "precondition failed" in str(e.value) and "fenced" in str(e.value)
    with pytest.raises(ERRORS) as e:
        action(client, "commit_transaction", zombie)
    assert "fenced" in str(e.value)

    # The new instance's transaction holds only its own batches.
    produce(client, "tz_a", [batch([10, 11])], current)
    produce(client, "tz_b", [batch([12])], current)
    (done,) = action(client, "commit_transaction", current)
    assert [(a["stream"], a["rows"]) for a in done["appends"]] == [("tz_a", 2), ("tz_b", 1)]
    assert ids(client, stream="tz_a") == [10, 11]
    assert ids(client, stream="tz_b") == [12]

    # Aborted: nothing written.
    produce(client, "tz_a", [batch([20])], current)
    action(client, "abort_transaction", current)
    (done,) = action(client, "commit_transaction", current)
    assert done["appends"] == []
    assert ids(client, stream="tz_a") == [10, 11]

    # Bad requests are clear errors.
    for kind, body, words in [
        ("init_transactions", {"transactional_id": ""}, "1 to 255 bytes"),
        ("init_transactions", {"transactional_id": "x", "timeout_ms": 0}, "timeout"),
        ("commit_transaction", {"transactional_id": "never", "epoch": 1}, "init_transactions"),
        ("commit_transaction", {"transactional_id": "z"}, "epoch"),
    ]:
        with pytest.raises(ERRORS) as e:
            action(client, kind, body)
        assert words in str(e.value), (kind, body, str(e.value))
    with pytest.raises(ERRORS) as e:
        produce(client, "tz_a", [batch([1])], {"transactional_id": "z"})
    assert "epoch" in str(e.value)
    client.close()


def test_server_sigkill_before_commit_leaves_nothing_and_after_commit_everything():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            create(s.dsn, "ts_in", "ts_a", "ts_b")
            client = flight.connect(s.flight)
            produce(client, "ts_in", [batch(list(range(50)))])
            (p,) = action(client, "init_transactions", {"transactional_id": "crash"})
            txn = {"transactional_id": "crash", "epoch": p["epoch"]}
            produce(client, "ts_a", [batch(list(range(1000)))], txn)
            produce(client, "ts_b", [batch([1, 2, 3])], txn)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=30)
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
        s = Server(d)
        try:
            client = flight.connect(s.flight)
            assert ids(client, stream="ts_a") == []
            assert ids(client, stream="ts_b") == []
            # The staged rows died with the process; the producer learns it.
            with pytest.raises(ERRORS) as e:
                action(client, "commit_transaction", txn)
            assert "init_transactions" in str(e.value)
            # Its epoch did not: starting again fences the one before.
            (p,) = action(client, "init_transactions", {"transactional_id": "crash"})
            assert p["epoch"] == txn["epoch"] + 1
            txn = {"transactional_id": "crash", "epoch": p["epoch"]}
            produce(client, "ts_a", [batch(list(range(1000)))], txn)
            produce(client, "ts_b", [batch([1, 2, 3])], txn)
            action(client, "commit_transaction", {
                **txn, "offsets": [{"group": "ts_g", "stream": "ts_in", "offsets": ends(client, "ts_in")}]})
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=30)
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
        s = Server(d)
        try:
            client = flight.connect(s.flight)
            assert ids(client, stream="ts_a") == list(range(1000))
            assert ids(client, stream="ts_b") == [1, 2, 3]
            assert ids(client, stream="ts_in", group="ts_g") == []
            assert len(ids(client, stream="ts_in")) == 50
        finally:
            assert s.stop() == 0
