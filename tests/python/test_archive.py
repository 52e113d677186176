"""Tiered history: a stream created WITH (archive_after = …) has its rows,
once that old, rewritten by the log's upkeep as Parquet files in the object
store (its archive). SQL, Flight consumers and Kafka consumers read them at
the same offsets as before, across a SIGKILL of the server, and any Parquet
reader opens the archive."""
import datetime
import glob
import json
import os
import tempfile
import time

import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import Server, wait_for

ROWS = "SELECT _partition, _offset, id, name, amount, at FROM events ORDER BY _partition, _offset"


def archive_files(data):
    return sorted(glob.glob(os.path.join(data, "**", "*.parquet"), recursive=True))


def archived_rows(data):
    """Rows in the archive's files (a file the upkeep is writing or just
    replaced may come and go between listing and reading)."""
    total = 0
    for f in archive_files(data):
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowInvalid):
            return -1
    return total


def kafka_ids(server, partition, offset, expect):
    c = Consumer({"bootstrap.servers": server.kafka, "group.id": f"archive-{time.time_ns()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("events", partition, offset)])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < expect and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        got.append((m.offset(), json.loads(m.value())["id"]))
    c.close()
    return got


def test_old_rows_are_archived_as_parquet_and_read_the_same():
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "streamhouse.toml")
        with open(config, "w") as f:
            f.write('[log]\nmaintenance_interval = "1s"\ncompact_after = "1s"\n')
        data = os.path.join(d, "data")
        s = Server(data, ["--config", config])
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                with pytest.raises(psycopg.Error) as e:
                    conn.execute("CREATE STREAM bad (x int) WITH (archive_after = 'soon')")
                assert e.value.sqlstate == "42P16" and "archive_after" in str(e.value)
                conn.execute("CREATE STREAM events (id BIGINT NOT NULL, name TEXT, "
                             "amount DOUBLE PRECISION, at TIMESTAMPTZ) "
                             "WITH (partitions = 2, archive_after = '2s')")
                t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
                for batch in range(30):
                    rows = [(i, None if i % 7 == 0 else f"name {i}", i * 0.25,
                             t0 + datetime.timedelta(seconds=i))
                            for i in range(batch * 200, batch * 200 + 200)]
                    conn.execute("INSERT INTO events VALUES "
                                 + ", ".join(["(%s, %s, %s, %s)"] * len(rows)),
                                 [v for r in rows for v in r])
                before = conn.execute(ROWS).fetchall()
                assert len(before) == 6000

            # Every row lands in the archive once it is two seconds old.
            wait_for(lambda: archived_rows(data) == 6000, "every row in the archive", timeout=90)
            table = pa.concat_tables(pq.read_table(f) for f in archive_files(data))
            assert sorted(table["id"].to_pylist()) == list(range(6000))
            assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")

            for restart in range(2):
                with psycopg.connect(s.dsn, autocommit=True) as conn:
                    assert conn.execute(ROWS).fetchall() == before
                    want = [r[2] for r in before if r[0] == 1 and 100 <= r[1] < 200]
                    got = conn.execute("SELECT id FROM events WHERE _partition = 1 AND _offset "
                                       ">= 100 AND _offset < 200 ORDER BY _offset").fetchall()
                    assert [r[0] for r in got] == want
                    agg = conn.execute("SELECT count(*), count(name), sum(amount) "
                                       "FROM events").fetchone()
                    assert agg == (6000, sum(1 for r in before if r[3] is not None),
                                   sum(r[4] for r in before))
                # A Flight consumer from an offset.
                client = flight.connect(s.flight)
                ticket = {"stream": "events", "partition": 0, "from": 50}
                got = client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
                assert got["id"].to_pylist() == [r[2] for r in before if r[0] == 0 and r[1] >= 50]
                client.close()
                # A Kafka consumer from an offset.
                want = [(r[1], r[2]) for r in before if r[0] == 1 and 20 <= r[1] < 120]
                assert kafka_ids(s, 1, 20, 100) == want
                if restart == 0:
                    s.proc.kill()
                    s.proc.wait()
                    s = Server(data, ["--config", config])

            # New rows go into the log and, once old, into the archive.
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO events VALUES "
                             + ", ".join(f"({i}, 'late', 0, NULL)" for i in range(6000, 6100)))
                wait_for(lambda: archived_rows(data) == 6100, "the new rows archived",
                         timeout=90)
                assert conn.execute("SELECT count(*), min(id), max(id) FROM events").fetchone() \
                    == (6100, 0, 6099)

                # A stream made without an archive gets one by ALTER STREAM.
                conn.execute("CREATE STREAM later (n INT)")
                conn.execute("INSERT INTO later VALUES "
                             + ", ".join(f"({i})" for i in range(500)))
                for sql, state in [
                        ("ALTER STREAM later SET (partitions = '2s')", "42P16"),
                        ("ALTER STREAM later SET (archive_after = 'never')", "42P16"),
                        ("ALTER STREAM nope SET (archive_after = '1s')", "42P01")]:
                    with pytest.raises(psycopg.Error) as e:
                        conn.execute(sql)
                    assert e.value.sqlstate == state, (sql, e.value)
                conn.execute("ALTER STREAM later SET (archive_after = '1s', retention = '30 days')")
                wait_for(lambda: archived_rows(data) == 6600, "the altered stream archived",
                         timeout=90)
                assert sorted(r[0] for r in conn.execute("SELECT n FROM later")) == \
                    list(range(500))
                def retention():
                    return {r[0]: r[5] for r in conn.execute("SHOW STREAMS")}["later"]
                assert retention() == "30days"
                conn.execute("ALTER STREAM later RESET (retention, archive_after)")
                assert retention() is None
        finally:
            s.proc.kill()
            s.proc.wait()
