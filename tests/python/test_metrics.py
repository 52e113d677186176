"""GET /metrics after a short workload through the real doors: every metric
of the operations guide is there, and each moves as the workload says
(rows appended and read, PUTs and GETs, flushes, metadata commits, cache hits and
misses, queries and errors per door, connections, views' lag, late rows,
state, checkpoints and watermark, consumer lag). The server is restarted
once, so that reads go to the object store and miss the cache."""

import json
import re
import tempfile
from pathlib import Path
import time
import urllib.request
import warnings

import adbc_driver_flightsql.dbapi as flightsql
import psycopg
import pyarrow.flight as flight

from conftest import Server

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(server):
    """Every series: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://{server.http}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"not exposition format: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(metrics, name, **labels):
    """The sum of the series of `name` whose labels include `labels`."""
    want = set(labels.items())
    found = [v for (n, l), v in metrics.items() if n == name and want <= set(l)]
    assert found, f"no series {name}{labels or ''}"
    return sum(found)


def eventually(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_metrics_move_with_the_workload():
    with tempfile.TemporaryDirectory() as d:
        server = Server(d)
        try:
            workload(server)
        finally:
            assert server.stop() == 0
        # Restarted (counters start from zero): recovering the views and
        # reading go to the object store, missing the empty cache.
        server = Server(d)
        try:
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM orders").fetchone() == (101,)
                read_before = scrape(server)
                conn.execute("SELECT sum(id) FROM orders").fetchone()
            after = scrape(server)
            # The query read every row of the stream.
            read = value(after, "streamhouse_read_rows_total", stream="orders")
            earlier = sum(v for (n, labels), v in read_before.items()
                          if n == "streamhouse_read_rows_total" and ("stream", "orders") in labels)
            assert read - earlier >= 101, (read, earlier)
            for name, labels in [
                ("streamhouse_object_store_requests_total", {"op": "get"}),
                ("streamhouse_object_store_bytes_total", {"op": "get"}),
                ("streamhouse_object_store_request_seconds_count", {"op": "get"}),
                ("streamhouse_cache_misses_total", {}),
            ]:
                assert value(after, name, **labels) > 0, name
        finally:
            assert server.stop() == 0


def workload(server):
    before = scrape(server)
    conn = psycopg.connect(server.dsn, autocommit=True)
    conn.execute(
        "CREATE STREAM orders (id BIGINT NOT NULL, user_id BIGINT, amount DOUBLE PRECISION, "
        "ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1 second') WITH (partitions = 2)"
    )
    conn.execute(
        "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n, sum(amount) AS total "
        "FROM orders GROUP BY user_id"
    )
    conn.execute(
        "CREATE MATERIALIZED VIEW per_minute WITH (idle_timeout = '200ms') AS "
        "SELECT window_start, window_end, count(*) AS n "
        "FROM TUMBLE(orders, ts, INTERVAL '1 minute') GROUP BY window_start, window_end"
    )
    values = ", ".join(
        f"({i}, {i % 7}, {i}.5, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{i * 6} seconds')"
        for i in range(100)
    )
    conn.execute(f"INSERT INTO orders VALUES {values}")
    # Once the watermark has closed the first minutes, a row for them is late.
    five_minutes_in = 1767225600 + 300
    eventually(lambda: _assert(
        value(scrape(server), "streamhouse_view_watermark_seconds", view="per_minute")
        > five_minutes_in))
    conn.execute("INSERT INTO orders VALUES (100, 1, 1.0, TIMESTAMP '2026-01-01 00:00:01')")
    try:
        conn.execute("SELECT * FROM no_such_stream")
        raise AssertionError("an unknown table must fail")
    except psycopg.errors.UndefinedTable:
        pass
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (101,)

    # Through Flight SQL too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs = flightsql.connect(server.flight)
    with fs.cursor() as cur:
        cur.execute("SELECT sum(n) FROM per_user")
        cur.fetchall()
    fs.close()

    # A consumer group that has read one row of partition 0.
    client = flight.connect(server.flight)
    list(client.do_action(flight.Action("commit_offsets", json.dumps(
        {"group": "billing", "stream": "orders", "offsets": {"0": 1}}).encode())))
    end0 = conn.execute(
        "SELECT count(*) FROM orders WHERE _partition = 0").fetchone()[0]
    # The open Flight connection is counted.
    assert value(scrape(server), "streamhouse_connections", door="flight") >= 1
    client.close()

    def settled():
        m = scrape(server)
        assert value(m, "streamhouse_view_lag_rows", view="per_user") == 0
        assert value(m, "streamhouse_view_late_rows_total", view="per_minute") == 1
        assert value(m, "streamhouse_view_checkpoint_seconds_count", view="per_user") >= 1
        return m
    after = eventually(settled)

    def grew(name, by=None, **labels):
        old = value(before, name, **labels) if any(
            n == name and set(labels.items()) <= set(l) for (n, l) in before) else 0.0
        new = value(after, name, **labels)
        if by is None:
            assert new > old, f"{name}{labels}: {old} -> {new}"
        else:
            assert new - old == by, f"{name}{labels}: {old} -> {new}, want +{by}"

    # The log: rows and bytes per stream, object-store requests, flushes,
    # metadata commits, the cache.
    grew("streamhouse_appended_rows_total", by=101, stream="orders")
    grew("streamhouse_appended_bytes_total", stream="orders")
    grew("streamhouse_object_store_requests_total", op="put")
    grew("streamhouse_object_store_bytes_total", op="put")
    grew("streamhouse_object_store_request_seconds_count", op="put")
    grew("streamhouse_object_store_request_seconds_bucket", op="put", le="+Inf")
    grew("streamhouse_flush_bytes_count")
    grew("streamhouse_flush_rows_sum")
    grew("streamhouse_metadata_commit_seconds_count")
    grew("streamhouse_cache_hits_total")
    # Queries per door, errors by SQLSTATE class, connections.
    grew("streamhouse_queries_total", door="pgwire")
    grew("streamhouse_query_seconds_count", door="pgwire")
    grew("streamhouse_queries_total", door="flight")
    grew("streamhouse_query_errors_total", by=1, door="pgwire", **{"class": "42"})
    assert value(after, "streamhouse_connections", door="pgwire") >= 1
    # Views.
    assert value(after, "streamhouse_view_running", view="per_user") == 1
    assert value(after, "streamhouse_view_state_bytes", view="per_user") > 0
    assert value(after, "streamhouse_view_freshness_seconds", view="per_user") == 0
    assert value(after, "streamhouse_view_watermark_seconds", view="per_minute") > five_minutes_in
    # Consumer lag per group and partition.
    assert value(after, "streamhouse_consumer_lag_rows",
                 group="billing", stream="orders", partition="0") == end0 - 1
    # Every metric a dashboard uses exists.
    used = dashboard_metrics()
    assert len(used) >= 20, used
    assert used <= {name for (name, _) in after}, used - {name for (name, _) in after}
    conn.close()
    # A closed connection is no longer counted.
    eventually(lambda: _assert(
        value(scrape(server), "streamhouse_connections", door="pgwire") == 0))


def dashboard_metrics():
    """The metric names the Grafana dashboards' queries and variables use."""
    names = set()
    files = sorted(DASHBOARDS.glob("*.json"))
    assert len(files) == 4, files
    for f in files:
        d = json.loads(f.read_text())
        texts = [t["expr"] for p in d["panels"] for t in p["targets"]]
        texts += [v.get("definition", "") for v in d["templating"]["list"]]
        for t in texts:
            names |= set(re.findall(r"streamhouse_[a-z_]+", t))
    return names


def _assert(condition):
    assert condition
