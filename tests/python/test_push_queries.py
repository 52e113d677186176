"""Push queries and changelogs with real clients: SUBSCRIBE TO a view and
SELECT … EMIT CHANGES stream rows to psycopg as they happen (and stop
cleanly when the client goes away); a view's changelog is consumed through
the Flight consumer API with pyarrow.flight, following new changes."""

import contextlib
import json
import threading
import time

import psycopg
import pyarrow.flight as flight
import pytest


def run(server, *statements):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        out = None
        for s in statements:
            cur = conn.execute(s)
            out = cur.fetchall() if cur.description else None
        return out


@pytest.fixture(scope="module")
def orders(server):
    run(
        server,
        "CREATE STREAM push_orders (id BIGINT NOT NULL, customer TEXT, amount DOUBLE PRECISION) "
        "WITH (partitions = 2)",
        "INSERT INTO push_orders VALUES (1, 'ann', 10), (2, 'bob', 5), (3, 'ann', 1)",
        "CREATE MATERIALIZED VIEW push_totals AS SELECT customer, count(*) AS n, "
        "sum(amount) AS total FROM push_orders GROUP BY customer",
    )
    return "push_orders"


def insert_later(server, delay, values):
    def go():
        time.sleep(delay)
        run(server, f"INSERT INTO push_orders VALUES {values}")
    t = threading.Thread(target=go)
    t.start()
    return t


def take(cursor_rows, n, timeout=20):
    """The next n rows of a streaming cursor (fails after `timeout` s)."""
    out = []
    deadline = time.time() + timeout
    for row in cursor_rows:
        out.append(row)
        if len(out) == n:
            return out
        if time.time() > deadline:
            break
    cursor_rows.close()  # else the connection stays busy with the stream
    raise AssertionError(f"stream gave only {out}")


@contextlib.contextmanager
def streaming(conn, query):
    """A push query's rows; closing cancels it, so the connection is free
    again whatever happens inside."""
    rows = conn.cursor().stream(query)
    try:
        yield rows
    finally:
        rows.close()


def wait_for(server, query, want, timeout=20):
    deadline = time.time() + timeout
    while True:
        got = run(server, query)
        if got == want:
            return
        assert time.time() < deadline, f"{query}: {got}, want {want}"
        time.sleep(0.05)


def test_subscribe_streams_the_snapshot_then_changes(server, orders):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        cur = conn.cursor()
        rows = cur.stream("SUBSCRIBE TO push_totals")
        first = take(rows, 2)
        assert sorted(first) == [("insert", "ann", 2, 11.0), ("insert", "bob", 1, 5.0)], first
        assert [d.name for d in cur.description] == ["op", "customer", "n", "total"]
        t = insert_later(server, 0.3, "(4, 'bob', 2)")
        started = time.time()
        change = take(rows, 2)
        assert time.time() - started < 10
        assert change == [("delete", "bob", 1, 5.0), ("insert", "bob", 2, 7.0)]
        t.join()
        # Closing the stream cancels the subscription; the connection goes on.
        rows.close()
        assert conn.execute("SELECT n FROM push_totals WHERE customer = 'bob'").fetchall() == [(2,)]


def test_a_subscriber_that_vanishes_does_not_hurt_the_server(server, orders):
    conn = psycopg.connect(server.dsn, autocommit=True)
    rows = conn.cursor().stream("SUBSCRIBE TO push_totals")
    take(rows, 1)
    conn.pgconn.finish()  # the socket closes under the open subscription
    run(server, "INSERT INTO push_orders VALUES (100, 'zed', 1)")
    wait_for(server, "SELECT count(*) FROM changes(push_totals) WHERE customer = 'zed'", [(1,)])
    assert run(server, "SELECT n FROM push_totals WHERE customer = 'zed'") == [(1,)]


def test_subscribe_without_snapshot_starts_at_the_next_change(server, orders):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        with streaming(conn, "SUBSCRIBE push_totals WITH (snapshot = false)") as rows:
            t = insert_later(server, 0.5, "(5, 'cat', 3)")
            assert take(rows, 1) == [("insert", "cat", 1, 3.0)]
            t.join()


def test_emit_changes_maintains_a_one_off_query(server, orders):
    query = "SELECT customer, max(amount) AS top FROM push_orders GROUP BY customer"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        now = sorted(("insert", *r) for r in conn.execute(query).fetchall())
        with streaming(conn, f"{query} EMIT CHANGES") as rows:
            snapshot = take(rows, len(now))
            assert sorted(snapshot) == now
            t = insert_later(server, 0.3, "(6, 'ann', 50)")
            assert take(rows, 2) == [("delete", "ann", 10.0), ("insert", "ann", 50.0)]
            t.join()
    # The push query was not a view.
    names = [r[0] for r in run(server, "SHOW MATERIALIZED VIEWS")]
    assert names == ["push_totals"]


def test_subscribe_errors_are_clean(server, orders):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SUBSCRIBE TO no_such_view")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute(
                "SELECT a.id FROM push_orders a JOIN push_orders b ON a.id < b.id EMIT CHANGES")
        assert conn.execute("SELECT 1").fetchall() == [(1,)]


def test_a_views_changelog_through_the_flight_consumer_api(server, orders):
    client = flight.connect(server.flight)
    try:
        ticket = flight.Ticket(json.dumps({"stream": "push_totals", "from": "earliest"}).encode())
        table = client.do_get(ticket).read_all()
        assert table.column_names[:4] == ["op", "customer", "n", "total"]
        ops = table.column("op").to_pylist()
        assert ops.count("insert") - ops.count("delete") == len(run(server, "SELECT * FROM push_totals"))
        offsets = table.column("_offset").to_pylist()
        assert offsets == list(range(len(offsets)))

        # Following: a new change arrives on an open read.
        follow = flight.Ticket(json.dumps(
            {"stream": "push_totals", "from": "latest", "follow": True}).encode())
        reader = client.do_get(follow)
        t = insert_later(server, 0.3, "(7, 'dan', 8)")
        chunk = reader.read_chunk()
        got = chunk.data.to_pylist()
        assert got[0]["op"] == "insert" and got[0]["customer"] == "dan"
        t.join()
        reader.cancel()

        # A consumer group on the view: commit, then a group read resumes.
        def action(kind, body):
            return [json.loads(r.body.to_pybytes()) for r in
                    client.do_action(flight.Action(kind, json.dumps(body).encode()))]
        action("commit_offsets", {"group": "vg", "stream": "push_totals", "offsets": {"0": 2}})
        (d,) = action("describe_group", {"group": "vg"})
        assert [(p["partition"], p["committed"]) for p in d["partitions"]] == [(0, 2)]
        rest = client.do_get(flight.Ticket(json.dumps(
            {"stream": "push_totals", "group": "vg"}).encode())).read_all()
        assert rest.column("_offset").to_pylist()[0] == 2
    finally:
        client.close()
