"""Sinks: `CREATE SINK … INTO PARQUET | DELTA` copies a stream into Parquet
files or a Delta Lake table, each row exactly once — across a SIGKILL of the
server, from one agent to another over PostgreSQL + S3, and past an outage
of the object store it writes to — read back with DuckDB, pyarrow and the
deltalake package."""
import os
import signal
import tempfile
import threading
import time
import urllib.request

import duckdb
import psycopg
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from conftest import Server, shared_store_args, wait_for


def q(sql):
    """Rows of a DuckDB query, on a connection of its own."""
    with duckdb.connect() as c:
        return c.sql(sql).fetchall()


def copied(path):
    """(partition, _offset, id) of every row in the sink's files."""
    return sorted(q(f"SELECT partition, _offset, id FROM read_parquet('{path}/**/*.parquet', "
                    "hive_partitioning = true)"))


def parquet_rows(path):
    try:
        return copied(path)
    except duckdb.IOException:
        return []  # no file yet


def stream_rows(conn, name):
    return sorted(conn.execute(f"SELECT _partition, _offset, id FROM {name}").fetchall())


def writer(dsn, start, stop, acked):
    """Inserts rows of ids from `start` in small transactions until `stop`;
    records the ids each acknowledged INSERT wrote."""
    i = start
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                ids = list(range(i, i + 50))
                conn.execute("INSERT INTO orders SELECT x, x * 2 FROM unnest(%s::bigint[]) AS t(x)",
                             (ids,))
                acked.extend(ids)
                i += 50
    except psycopg.OperationalError:
        pass  # the server was killed


def sigkill_mid_flow(d, sink_sql, destination_rows):
    """A 3-partition stream `orders` with sink `sink_sql`, a writer inserting
    continuously, SIGKILL of the server mid-flow, a restart and 1,000 more
    rows; waits until `destination_rows()` (partition, offset, id) holds as
    many rows as the stream and checks they are exactly the stream's, every
    acknowledged id included. The restarted server, running."""
    s = Server(os.path.join(d, "data"))
    with psycopg.connect(s.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM orders (id BIGINT, amount BIGINT) WITH (partitions = 3)")
        conn.execute(sink_sql)
    acked, stop = [], threading.Event()
    t = threading.Thread(target=writer, args=(s.dsn, 0, stop, acked))
    t.start()
    time.sleep(2)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait(timeout=10)
    stop.set()
    t.join()
    assert len(acked) > 0
    s = Server(os.path.join(d, "data"))
    try:
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO orders SELECT x, x * 2 "
                         "FROM generate_series(1000000, 1000999) AS t(x)")
            acked.extend(range(1_000_000, 1_001_000))
            want = stream_rows(conn, "orders")
            deadline = time.monotonic() + 60
            while len(got := destination_rows()) < len(want):
                assert time.monotonic() < deadline, f"{len(got)} of {len(want)} rows copied"
                time.sleep(0.2)
            # Exactly the stream's rows, each once, at their offsets.
            assert got == want
            assert set(acked) <= {r[2] for r in got}
    except BaseException:
        s.proc.kill()
        raise
    return s


def test_a_sink_copies_each_row_once_across_sigkill():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out")
        s = sigkill_mid_flow(d, f"CREATE SINK lake FROM orders INTO PARQUET WITH ("
                                f"path = 'file://{out}', flush_interval = '200ms', "
                                "file_rows = 300)", lambda: parquet_rows(out))
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                shown = conn.execute("SHOW SINKS").fetchall()
                assert [(r[0], r[1], r[2], r[4]) for r in shown] == [
                    ("lake", "orders", "PARQUET", "running")]
                assert shown[0][6] == 0  # lag
            # Files hold at most file_rows rows; every file's range starts
            # where the previous one's ended.
            n = q(f"SELECT max(c) FROM (SELECT count(*) AS c FROM read_parquet("
                  f"'{out}/**/*.parquet', filename = true) GROUP BY filename)")[0][0]
            assert n <= 300
        finally:
            assert s.stop() == 0


def test_sink_statements_and_refusals(server):
    with tempfile.TemporaryDirectory() as out, \
            psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM clicks (url TEXT)")

        def refused(sql, state, words):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.sqlstate == state, e.value
            assert words in str(e.value), e.value

        refused(f"CREATE SINK k FROM clicks INTO PARQUET WITH (path = 'file://{out}', color = 'red')",
                "42P16", 'unknown sink option "color"')
        refused("CREATE SINK k FROM clicks INTO PARQUET", "42P16", "needs WITH (path")
        refused("CREATE SINK k FROM clicks INTO PARQUET WITH (path = 'relative/dir')",
                "42P16", "absolute file:///")
        refused(f"CREATE SINK k FROM clicks INTO PARQUET WITH (path = 'file://{out}', "
                "file_rows = 0)", "42P16", "file_rows")
        refused(f"CREATE SINK k FROM clicks INTO CSV WITH (path = 'file://{out}')",
                "42P16", "PARQUET")
        refused(f"CREATE SINK k FROM nowhere INTO PARQUET WITH (path = 'file://{out}')",
                "42P01", "nowhere")
        # A Delta table's definition is checked the same way.
        refused("CREATE SINK k FROM clicks INTO DELTA", "42P16", "needs WITH (path")
        refused("CREATE SINK k FROM clicks INTO DELTA WITH (path = 'gs://b/x')",
                "42P16", "s3://bucket/prefix")
        refused("CREATE SINK k FROM clicks INTO DELTA WITH (path = 's3:///x')",
                "42P16", "missing bucket")
        refused(f"CREATE SINK k FROM clicks INTO DELTA WITH (path = 'file://{out}', "
                "topic = 'x')", "42P16", 'unknown sink option "topic"')
        refused(f"CREATE SINK k FROM clicks INTO DELTA WITH (path = 'file://{out}', "
                "file_bytes = 0)", "42P16", "file_bytes")
        conn.execute(f"CREATE SINK held FROM clicks INTO PARQUET WITH (path = 'file://{out}/held')")
        refused("DROP STREAM clicks", "2BP01", 'sink "held" copies it')
        conn.execute("DROP SINK held")
        refused("DROP SINK k", "42704", "does not exist")
        conn.execute("DROP SINK IF EXISTS k")
        assert conn.execute("SHOW SINKS").fetchall() == []

        conn.execute(f"CREATE SINK k FROM clicks INTO PARQUET WITH (path = 'file://{out}', "
                     "flush_interval = '100ms')")
        refused(f"CREATE SINK k FROM clicks INTO PARQUET WITH (path = 'file://{out}')",
                "42710", "already exists")
        conn.execute(f"CREATE SINK IF NOT EXISTS k FROM clicks INTO PARQUET "
                     f"WITH (path = 'file://{out}')")
        conn.execute("INSERT INTO clicks VALUES ('a'), ('b')")
        wait_copied_urls(out, 2)
        # The system table lists what SHOW SINKS does; the metrics count it.
        # (The file is visible a moment before the sink counts it.)
        deadline = time.monotonic() + 10
        while (listed := conn.execute("SELECT name, \"from\", status, lag_rows, rows_written "
                                      "FROM streamhouse.sinks").fetchall()) != [
                ("k", "clicks", "running", 0, 2)]:
            assert time.monotonic() < deadline, listed
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://{server.http}/metrics") as r:
            metrics = r.read().decode()
        assert 'streamhouse_sink_rows_total{sink="k"} 2' in metrics, metrics
        assert 'streamhouse_sink_files_total{sink="k"} 1' in metrics, metrics
        conn.execute("DROP SINK k")
        assert conn.execute("SHOW SINKS").fetchall() == []
        # Dropped: nothing more is copied; the files stay.
        conn.execute("INSERT INTO clicks VALUES ('c')")
        time.sleep(1)
        assert sorted(q(f"SELECT url FROM read_parquet('{out}/**/*.parquet')")) == [
            ("a",), ("b",)]


def test_a_sink_of_a_view_writes_its_changelog(server):
    with tempfile.TemporaryDirectory() as out, \
            psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM visits (page TEXT) WITH (partitions = 2)")
        conn.execute("CREATE MATERIALIZED VIEW per_page AS "
                     "SELECT page, count(*) AS n FROM visits GROUP BY page")
        conn.execute(f"CREATE SINK pages FROM per_page INTO PARQUET WITH ("
                     f"path = 'file://{out}', flush_interval = '100ms')")
        conn.execute("INSERT INTO visits VALUES ('a'), ('b'), ('a')")
        conn.execute("INSERT INTO visits VALUES ('b')")
        want = sorted(conn.execute("SELECT page, count(*) FROM visits GROUP BY page").fetchall())
        assert want == [("a", 2), ("b", 2)]
        # The changelog applied in order is the view.
        deadline = time.monotonic() + 30
        while True:
            try:
                log = q(f"SELECT op, page, n FROM read_parquet('{out}/**/*.parquet', "
                        "hive_partitioning = true) ORDER BY partition, _offset")
            except duckdb.IOException:
                log = []
            held = {}
            for op, page, n in log:
                if op == "insert":
                    held[(page, n)] = held.get((page, n), 0) + 1
                else:
                    held[(page, n)] -= 1
            if sorted(k for k, c in held.items() for _ in range(c)) == want:
                break
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
        # What a sink copies cannot be dropped under it.
        for sql, words in [("DROP MATERIALIZED VIEW per_page", 'sink "pages" copies it'),
                           ("DROP STREAM visits", "per_page reads it")]:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.sqlstate == "2BP01", e.value
            assert words in str(e.value), e.value
        conn.execute("DROP SINK pages")
        conn.execute("DROP MATERIALIZED VIEW per_page")
        conn.execute("DROP STREAM visits")


def wait_copied_urls(path, want, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            n = q(f"SELECT count(*) FROM read_parquet('{path}/**/*.parquet')")[0][0]
        except duckdb.IOException:
            n = 0
        if n >= want:
            return
        assert time.monotonic() < deadline, f"{n} of {want} rows copied"
        time.sleep(0.1)


def s3_rows(bucket, prefix):
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="test",
                           secret_key="test", region="us-east-1")
    try:
        t = ds.dataset(f"{bucket}/{prefix}", filesystem=fs, format="parquet",
                       partitioning="hive").to_table()
    except (FileNotFoundError, OSError):
        return []
    return sorted(zip(t.column("partition").to_pylist(), t.column("_offset").to_pylist(),
                      t.column("id").to_pylist()))


def test_a_sink_to_s3_moves_to_another_agent():
    args = shared_store_args("sinks_cluster")
    bucket = os.environ["STREAMHOUSE_TEST_S3_BUCKET"]
    prefix = f"sink_{int(time.time() * 1e6)}"
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        a = Server(os.path.join(a_dir, "a"), args)
        b = Server(os.path.join(b_dir, "b"), args)
        try:
            with psycopg.connect(a.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM orders (id BIGINT, amount BIGINT) "
                             "WITH (partitions = 2)")
                conn.execute(f"CREATE SINK lake FROM orders INTO PARQUET WITH ("
                             f"path = 's3://{bucket}/{prefix}', flush_interval = '200ms')")
                conn.execute("INSERT INTO orders SELECT x, x FROM generate_series(0, 499) AS t(x)")
            deadline = time.monotonic() + 60
            while len(s3_rows(bucket, prefix)) < 500:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            with psycopg.connect(b.dsn, autocommit=True) as conn:
                shown = conn.execute("SHOW SINKS").fetchall()
                assert shown[0][4].startswith("running on "), shown
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)
            with psycopg.connect(b.dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO orders SELECT x, x FROM generate_series(500, 999) AS t(x)")
                want = stream_rows(conn, "orders")
                # The killed agent's lease expires; this one goes on from
                # the files it left.
                deadline = time.monotonic() + 90
                while len(got := s3_rows(bucket, prefix)) < len(want):
                    assert time.monotonic() < deadline, f"{len(got)} of {len(want)}"
                    time.sleep(0.5)
                assert got == want
                assert conn.execute("SHOW SINKS").fetchall()[0][4] == "running"
        finally:
            assert b.stop() == 0
            if a.proc.poll() is None:
                a.proc.kill()


def delta_rows(uri, storage_options=None):
    """(_partition, _offset, id) of every row of the Delta table at `uri`,
    read with the deltalake package (the table's log decides the files)."""
    try:
        t = DeltaTable(uri, storage_options=storage_options).to_pyarrow_table()
    except TableNotFoundError:
        return []
    return sorted(zip(t.column("_partition").to_pylist(), t.column("_offset").to_pylist(),
                      t.column("id").to_pylist()))


def test_a_delta_sink_commits_each_row_once_across_sigkill():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "lake")
        s = sigkill_mid_flow(d, f"CREATE SINK lake FROM orders INTO DELTA WITH ("
                                f"path = 'file://{out}', flush_interval = '200ms', "
                                "file_rows = 500)", lambda: delta_rows(out))
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                shown = conn.execute("SHOW SINKS").fetchall()
                assert [(r[0], r[2], r[4], r[6]) for r in shown] == [
                    ("lake", "DELTA", "running", 0)]
                # Each partition's commits record how far they got.
                table = DeltaTable(out)
                for p in range(3):
                    end = conn.execute(f"SELECT coalesce(max(_offset) + 1, 0) FROM orders "
                                       f"WHERE _partition = {p}").fetchone()[0]
                    assert table.transaction_version(f"streamhouse.lake.p{p}") == (end or None)
            at = table.to_pyarrow_table().column("_timestamp")
            assert str(at.type).startswith("timestamp[us")
        finally:
            assert s.stop() == 0


def test_a_delta_sink_to_s3():
    bucket = os.environ["STREAMHOUSE_TEST_S3_BUCKET"]
    prefix = f"delta_{int(time.time() * 1e6)}"
    options = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    with tempfile.TemporaryDirectory() as d:
        s = Server(os.path.join(d, "data"))
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM orders (id BIGINT, amount BIGINT) "
                             "WITH (partitions = 2)")
                conn.execute(f"CREATE SINK lake FROM orders INTO DELTA WITH ("
                             f"path = 's3://{bucket}/{prefix}', flush_interval = '200ms')")
                for start in range(0, 1000, 250):
                    conn.execute(f"INSERT INTO orders SELECT x, x FROM "
                                 f"generate_series({start}, {start + 249}) AS t(x)")
                want = stream_rows(conn, "orders")
                deadline = time.monotonic() + 60
                uri = f"s3://{bucket}/{prefix}"
                while len(got := delta_rows(uri, options)) < len(want):
                    assert time.monotonic() < deadline, f"{len(got)} of {len(want)}"
                    time.sleep(0.3)
                assert got == want
        finally:
            assert s.stop() == 0


def test_a_sink_whose_store_goes_away_retries_then_catches_up():
    """The sink's object store unreachable: `streamhouse.sinks` shows
    `retrying` with the cause while rows wait; once the store is back the
    sink copies them, each row once, and is `running` again."""
    from tcp_proxy import Proxy

    bucket = os.environ["STREAMHOUSE_TEST_S3_BUCKET"]
    prefix = f"sink_away_{int(time.time() * 1e6)}"
    proxy = Proxy(int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))
    proxy.start()
    status = "SELECT status, cause, lag_rows FROM streamhouse.sinks WHERE name = 'lake'"
    with tempfile.TemporaryDirectory() as d:
        # The server reaches S3 through the proxy (its own data stays local).
        s = Server(os.path.join(d, "data"),
                   env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"})
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute("CREATE STREAM orders (id BIGINT, amount BIGINT) "
                             "WITH (partitions = 2)")
                conn.execute(f"CREATE SINK lake FROM orders INTO PARQUET WITH ("
                             f"path = 's3://{bucket}/{prefix}?retry_timeout=1s', "
                             "flush_interval = '100ms')")
                conn.execute("INSERT INTO orders SELECT x, x FROM generate_series(0, 299) AS t(x)")
                wait_for(lambda: len(s3_rows(bucket, prefix)) == 300, "the first rows")
                proxy.stop()
                conn.execute("INSERT INTO orders SELECT x, x FROM generate_series(300, 799) AS t(x)")
                row = wait_for(lambda: (r := conn.execute(status).fetchone())[0] == "retrying"
                               and r, "status retrying", timeout=60)
                # The cause names the store's request that failed.
                assert "object store" in row[1] and prefix in row[1], row
                assert row[2] > 0, row  # rows waiting
                assert len(s3_rows(bucket, prefix)) == 300
                proxy.start()
                want = stream_rows(conn, "orders")
                assert len(want) == 800
                wait_for(lambda: s3_rows(bucket, prefix) == want, "every row once", timeout=90)
                wait_for(lambda: conn.execute(status).fetchone() == ("running", None, 0),
                         "running again")
                assert s3_rows(bucket, prefix) == want
        finally:
            proxy.stop()
            assert s.stop() == 0
