"""File sources: `CREATE SOURCE … FROM FILES … INTO stream` loads CSV,
JSON-lines and Parquet files from a directory or an S3 prefix (the
S3-compatible server the test command starts), each file exactly once —
across a SIGKILL of the server while files keep arriving; bad files stop
the source (or are skipped) with the file named; an unreachable store shows
as `retrying` and the source recovers when it returns."""
import csv
import datetime
import io
import json
import os
import random
import signal
import tempfile
import threading
import time

import psycopg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from conftest import Server, refused, wait_for
from tcp_proxy import Proxy

EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
STREAM = "(file BIGINT, line BIGINT, name TEXT, amount DOUBLE PRECISION, at TIMESTAMPTZ)"


def rows_of(k, n):
    """File k's rows: (file, line, name, amount, at)."""
    return [(k, i, f'n "{k}", {i}', i * 0.5, EPOCH + datetime.timedelta(seconds=i))
            for i in range(n)]


def encode(fmt, rows):
    """The bytes of a file of `rows` in format `fmt`. CSV and JSON name the
    columns in another order than the stream and carry one it lacks."""
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["line", "note", "file", "name", "amount", "at"])
        for k, i, name, amount, at in rows:
            w.writerow([i, "ignored", k, name, amount, at.isoformat()])
        return out.getvalue().encode()
    if fmt == "json":
        return b"".join(json.dumps({"line": i, "extra": [1], "file": k, "name": name,
                                    "amount": amount, "at": at.isoformat()}).encode() + b"\n"
                        for k, i, name, amount, at in rows)
    table = pa.table({
        "file": pa.array([r[0] for r in rows], pa.int32()),  # cast to BIGINT
        "line": pa.array([r[1] for r in rows], pa.int64()),
        "name": [r[2] for r in rows],
        "amount": [r[3] for r in rows],
        "at": pa.array([r[4] for r in rows], pa.timestamp("us", tz="UTC")),
    })
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=4096)
    return out.getvalue()


def put(directory, name, data):
    """Writes a file the way a loader should: under a hidden name, then
    renamed into place."""
    tmp = os.path.join(directory, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(directory, name))


def file_writer(directory, fmt, stop, written, limit):
    """Files of random sizes (most small, some larger than a commit) until
    `stop` or `limit` rows; `written` gets (k, n) for each file in place."""
    rng = random.Random(hash(fmt) & 0xFFFF)
    k, total = 0, 0
    while not stop.is_set() and total < limit:
        n = rng.choice([0, 1, 17, 150, 400, 999]) if rng.random() < 0.8 \
            else rng.randint(4_000, 12_000)
        sub = os.path.join(directory, f"day={k % 3}")
        os.makedirs(sub, exist_ok=True)
        put(sub, f"part-{k:05}.{fmt}", encode(fmt, rows_of(k, n)))
        written.append((k, n))
        k, total = k + 1, total + n
        time.sleep(0.01)


def loaded(conn, stream):
    return conn.execute(f"SELECT count(*) FROM {stream}").fetchone()[0]


def check_exactly(conn, stream, written):
    """The stream holds every row of the files written, each once."""
    want = sorted(r for k, n in written for r in rows_of(k, n))
    got = sorted(conn.execute(f"SELECT file, line, name, amount, at FROM {stream}").fetchall())
    assert len(got) == len(want), f"{stream}: {len(got)} rows, {len(want)} written"
    assert got == want


def test_files_load_exactly_once_across_sigkill():
    with tempfile.TemporaryDirectory() as d:
        dirs = {fmt: os.path.join(d, fmt) for fmt in ("csv", "json", "parquet")}
        for path in dirs.values():
            os.makedirs(path)
        s = Server(os.path.join(d, "data"))
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            for fmt, path in dirs.items():
                conn.execute(f"CREATE STREAM {fmt}_rows {STREAM} WITH (partitions = 3, "
                             "key = 'file')")
                conn.execute(f"CREATE SOURCE {fmt}_files FROM FILES WITH (path = 'file://{path}',"
                             f" format = '{fmt}', watch = true, poll_interval = '100ms', "
                             f"commit_rows = 3000) INTO {fmt}_rows")
        stop = threading.Event()
        written = {fmt: [] for fmt in dirs}
        writers = [threading.Thread(target=file_writer,
                                    args=(path, fmt, stop, written[fmt], 120_000))
                   for fmt, path in dirs.items()]
        for t in writers:
            t.start()
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                wait_for(lambda: all(loaded(conn, f"{fmt}_rows") > 20_000 for fmt in dirs),
                         "rows loaded before the kill", timeout=120)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=10)
            time.sleep(0.5)  # files keep arriving while the server is down
        finally:
            stop.set()
            for t in writers:
                t.join()
        s = Server(os.path.join(d, "data"))
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                for fmt in dirs:
                    total = sum(n for _, n in written[fmt])
                    wait_for(lambda: loaded(conn, f"{fmt}_rows") >= total,
                             f"{fmt}: {total} rows", timeout=120)
                time.sleep(1)  # nothing more arrives later
                for fmt in dirs:
                    check_exactly(conn, f"{fmt}_rows", written[fmt])
                shown = {r[0]: r for r in conn.execute(
                    "SELECT name, kind, url, streams, status, cause, rows_written, "
                    "confirmed_lsn, lag_bytes FROM streamhouse.sources").fetchall()}
                for fmt, path in dirs.items():
                    name, kind, url, streams, status, cause, rows, lsn, lag = shown[f"{fmt}_files"]
                    assert (kind, url, streams, status, cause, lsn, lag) == (
                        "FILES", f"file://{path}", f"{fmt}_rows", "running", None, None, 0)
                    assert 0 < rows <= sum(n for _, n in written[fmt])
        finally:
            assert s.stop() == 0


def test_file_source_statements_and_refusals(server):
    with tempfile.TemporaryDirectory() as d, \
            psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE STREAM landed {STREAM}")
        put(d, "a.csv", encode("csv", rows_of(1, 10)))
        put(d, "_SUCCESS", b"")
        put(d, "b.csv", encode("csv", rows_of(2, 5)))
        ok = f"path = 'file://{d}', format = 'csv'"
        refused(conn, f"CREATE SOURCE f FROM FILES WITH ({ok})", "42P16", "INTO")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH (path = 'file://{d}') INTO landed",
                "42P16", "format")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH (path = 'file://{d}', format = 'xml') "
                "INTO landed", "42P16", "'csv', 'json' or 'parquet'")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH (path = '{d}', format = 'csv') "
                "INTO landed", "42P16", "file:///")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH ({ok}, colour = 'red') INTO landed",
                "42P16", "unknown file source option \"colour\"")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH (path = 'file://{d}', format = 'json', "
                "header = false) INTO landed", "42P16", "applies to CSV")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH ({ok}, delimiter = ';;') INTO landed",
                "42P16", "one ASCII character")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH ({ok}, commit_rows = 0) INTO landed",
                "42P16", "commit_rows")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH ({ok}) FOR TABLES (t) INTO landed",
                "42P16", "FOR TABLES")
        refused(conn, f"CREATE SOURCE f FROM FILES WITH ({ok}) INTO nowhere", "42P01",
                "nowhere")
        refused(conn, f"CREATE SOURCE f FROM FTP WITH ({ok}) INTO landed", "42P16", "FTP")
        refused(conn, "CREATE SOURCE f FROM FILES WITH (path = 's3://no-such-bucket-here/x', "
                "format = 'csv') INTO landed", "08001", "s3://no-such-bucket-here/x")
        conn.execute(f"CREATE SOURCE once FROM FILES WITH ({ok}) INTO landed")
        refused(conn, f"CREATE SOURCE once FROM FILES WITH ({ok}) INTO landed", "42710", "once")
        conn.execute(f"CREATE SOURCE IF NOT EXISTS once FROM FILES WITH ({ok}) INTO landed")
        status = "SELECT status, rows_written, lag_bytes FROM streamhouse.sources " \
                 "WHERE name = 'once'"
        wait_for(lambda: conn.execute(status).fetchone() == ("done", 15, 0), "status done")
        check_exactly(conn, "landed", [(1, 10), (2, 5)])
        # Without watch, a file that comes later waits for the next start.
        put(d, "c.csv", encode("csv", rows_of(3, 4)))
        time.sleep(0.5)
        assert loaded(conn, "landed") == 15
        shown = conn.execute("SHOW SOURCES").fetchall()
        assert [(r[0], r[1], r[3], r[4]) for r in shown] == [("once", "FILES", "landed", "done")]
        definition = shown[0][-1]
        assert definition.startswith('CREATE SOURCE "once" FROM FILES WITH (') and \
            definition.endswith('INTO "landed"'), definition
        # The stream a source writes cannot be dropped under it.
        refused(conn, "DROP STREAM landed", "2BP01", "once")
        conn.execute("DROP SOURCE once")
        refused(conn, "DROP SOURCE once", "42704", "once")
        conn.execute("DROP SOURCE IF EXISTS once")
        # The ledger went with it: a new source of that name loads every
        # file again.
        conn.execute(f"CREATE SOURCE once FROM FILES WITH ({ok}) INTO landed")
        wait_for(lambda: loaded(conn, "landed") == 15 + 19, "the files loaded again")
        conn.execute("DROP SOURCE once")
        assert "__source_files__once" not in str(conn.execute("SHOW STREAMS").fetchall())


def test_bad_files_stop_the_source_or_are_skipped(server):
    with tempfile.TemporaryDirectory() as stop_dir, tempfile.TemporaryDirectory() as skip_dir, \
            psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM strict (id BIGINT NOT NULL, label TEXT, score DOUBLE PRECISION)")
        conn.execute("CREATE STREAM lenient (id BIGINT NOT NULL, label TEXT, score DOUBLE PRECISION)")
        for d in (stop_dir, skip_dir):
            # Columns by header name, any case; `score` missing: NULL.
            put(d, "1.csv", b"LABEL;ID\na;1\nb;2\n")
            put(d, "2.csv", b"id;label\n3;c\nnot a number;d\n")
            put(d, "3.csv", b"label\nno id\n")  # id is NOT NULL
            put(d, "4.csv", b"id;label;score\n4;e;0.5")  # no newline at the end
        conn.execute(f"CREATE SOURCE strict_files FROM FILES WITH (path = 'file://{stop_dir}', "
                     "format = 'csv', delimiter = ';', watch = true, poll_interval = '100ms') "
                     "INTO strict")
        conn.execute(f"CREATE SOURCE lenient_files FROM FILES WITH (path = 'file://{skip_dir}', "
                     "format = 'csv', delimiter = ';', on_error = 'skip', watch = true, "
                     "poll_interval = '100ms') INTO lenient")
        status = "SELECT status, cause FROM streamhouse.sources WHERE name = %s"
        row = wait_for(lambda: (r := conn.execute(status, ("strict_files",)).fetchone())[0]
                       == "retrying" and r, "the strict source to stop at 2.csv")
        assert "2.csv" in row[1] and "not a number" in row[1], row
        # Nothing of the bad file is in: it fits one append.
        assert conn.execute("SELECT id, label, score FROM strict ORDER BY id").fetchall() == [
            (1, "a", None), (2, "b", None)]
        # Fixed in place (renamed over), it loads, and the next bad one stops it.
        put(stop_dir, "2.csv", b"id;label\n3;c\n5;d\n")
        row = wait_for(lambda: (r := conn.execute(status, ("strict_files",)).fetchone())[1]
                       and "3.csv" in r[1] and r, "the strict source to stop at 3.csv", timeout=30)
        assert "id" in row[1], row
        os.remove(os.path.join(stop_dir, "3.csv"))
        wait_for(lambda: conn.execute(status, ("strict_files",)).fetchone() == ("running", None),
                 "the strict source running again", timeout=30)
        wait_for(lambda: loaded(conn, "strict") == 5, "4.csv")
        assert conn.execute("SELECT id, label, score FROM strict ORDER BY id").fetchall() == [
            (1, "a", None), (2, "b", None), (3, "c", None), (4, "e", 0.5), (5, "d", None)]
        # The lenient source skipped the bad files and kept going.
        wait_for(lambda: loaded(conn, "lenient") == 3, "the lenient source's rows")
        assert conn.execute("SELECT id FROM lenient ORDER BY id").fetchall() == [(1,), (2,), (4,)]
        assert conn.execute(status, ("lenient_files",)).fetchone() == ("running", None)
        conn.execute("DROP SOURCE strict_files, lenient_files")


def s3_filesystem():
    return pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], scheme="http",
                             access_key="test", secret_key="test", region="us-east-1")


def test_parquet_and_json_from_s3_and_an_unreachable_store():
    bucket = os.environ["STREAMHOUSE_TEST_S3_BUCKET"]
    prefix = f"files_{int(time.time() * 1e6)}"
    fs = s3_filesystem()

    def upload(key, data):
        with fs.open_output_stream(f"{bucket}/{prefix}/{key}") as f:
            f.write(data)

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    proxy = Proxy(int(endpoint.rsplit(":", 1)[1]))
    proxy.start()
    with tempfile.TemporaryDirectory() as d:
        # The server reaches S3 through the proxy.
        s = Server(os.path.join(d, "data"),
                   env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"})
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                upload("pq/a.parquet", encode("parquet", rows_of(1, 5000)))
                upload("pq/b.parquet", encode("parquet", rows_of(2, 7)))
                upload("js/a.json", encode("json", rows_of(3, 300)))
                conn.execute(f"CREATE STREAM lake {STREAM} WITH (partitions = 2)")
                conn.execute(f"CREATE SOURCE pq FROM FILES WITH (path = "
                             f"'s3://{bucket}/{prefix}/pq/', format = 'parquet') INTO lake")
                conn.execute(f"CREATE SOURCE js FROM FILES WITH (path = "
                             f"'s3://{bucket}/{prefix}/js/?retry_timeout=1s', format = 'json', "
                             "watch = true, poll_interval = '100ms') INTO lake")
                status = "SELECT status, cause FROM streamhouse.sources WHERE name = %s"
                wait_for(lambda: conn.execute(status, ("pq",)).fetchone() == ("done", None),
                         "the Parquet files")
                wait_for(lambda: loaded(conn, "lake") == 5307, "the JSON file")
                check_exactly(conn, "lake", [(1, 5000), (2, 7), (3, 300)])
                proxy.stop()
                upload("js/b.json", encode("json", rows_of(4, 20)))
                row = wait_for(lambda: (r := conn.execute(status, ("js",)).fetchone())[0]
                               == "retrying" and r, "status retrying", timeout=60)
                assert "listing the files" in row[1], row
                proxy.start()
                wait_for(lambda: loaded(conn, "lake") == 5327, "recovery", timeout=60)
                wait_for(lambda: conn.execute(status, ("js",)).fetchone() == ("running", None),
                         "running again")
                check_exactly(conn, "lake", [(1, 5000), (2, 7), (3, 300), (4, 20)])
                conn.execute("DROP SOURCE pq, js")
        finally:
            proxy.stop()
            assert s.stop() == 0
