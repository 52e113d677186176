"""Materialized views of the shapes that take rows back, through psycopg:
an outer join, a NOT EXISTS subquery (an anti join), an IN subquery (a
semi join), a top-N, min/max over an outer join, and nested queries (a
top-N over a GROUP BY, a GROUP BY over a GROUP BY, ORDER BY … LIMIT over
a GROUP BY). Each is compared with
its bounded query — its contents, and its changelog applied in order —
before and after a SIGKILL of the server, and across two agents over
PostgreSQL and S3 when one of them is killed."""

import os
import signal
import tempfile
import time

import psycopg

from conftest import Server, shared_store_args

STREAMS = [
    "CREATE STREAM users (id BIGINT NOT NULL, region TEXT) WITH (partitions = 2, key = 'id')",
    "CREATE STREAM orders (id BIGINT NOT NULL, user_id BIGINT, amount BIGINT) "
    "WITH (partitions = 3)",
]

# name -> (query, the columns of its changelog for a view without aggregate)
VIEWS = {
    "orders_users": (
        "SELECT o.id, u.region FROM orders o LEFT JOIN users u ON o.user_id = u.id",
        "id, region",
    ),
    "idle_per_region": (
        "SELECT u.region, count(*) AS idle FROM users u "
        "WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id) GROUP BY u.region",
        None,
    ),
    "buyers": (
        "SELECT u.id, u.region FROM users u WHERE u.id IN (SELECT user_id FROM orders)",
        "id, region",
    ),
    "top_orders": (
        "SELECT id, user_id, amount, rn FROM (SELECT id, user_id, amount, "
        "ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY amount DESC, id) AS rn FROM orders) t "
        "WHERE rn <= 2",
        "id, user_id, amount, rn",
    ),
    # Nested: a top-N over a GROUP BY, a GROUP BY over a GROUP BY (a CTE),
    # ORDER BY … LIMIT over a GROUP BY — each kept as hidden stages.
    "busiest_regions": (
        "SELECT region, buyers, rn FROM (SELECT region, buyers, "
        "ROW_NUMBER() OVER (ORDER BY buyers DESC, region) AS rn FROM "
        "(SELECT u.region, count(DISTINCT o.user_id) AS buyers FROM orders o "
        "JOIN users u ON o.user_id = u.id GROUP BY u.region) g) t WHERE rn <= 2",
        "region, buyers, rn",
    ),
    "order_sizes": (
        "WITH per_user AS (SELECT user_id, count(*) AS n FROM orders "
        "WHERE user_id IS NOT NULL GROUP BY user_id) "
        "SELECT n, count(*) AS users FROM per_user GROUP BY n",
        None,
    ),
    "top_spenders": (
        "SELECT user_id, sum(amount) AS total FROM orders WHERE user_id IS NOT NULL "
        "GROUP BY user_id ORDER BY total DESC, user_id LIMIT 3",
        "user_id, total",
    ),
    "region_stats": (
        "SELECT u.region, count(o.id) AS orders, max(o.amount) AS top, min(o.amount) AS low "
        "FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.region",
        None,
    ),
}


def insert(conn, start, n):
    """Users and their orders, interleaved: some orders come before their
    user, some users never order, some orders have no user."""
    users = [(i, f"r{i % 4}") for i in range(start, start + n) if i % 3 != 2]

    def buyer(i):
        if i % 11 == 0:
            return None
        u = (i * 7) % (start + n + 5)
        return u + 1 if u % 10 == 9 else u  # users whose id ends in 9 never buy

    orders = [(i, buyer(i), (i * 13) % 100) for i in range(start * 3, (start + n) * 3)]
    with conn.cursor() as c:
        c.executemany("INSERT INTO orders VALUES (%s, %s, %s)", orders)
        c.executemany("INSERT INTO users VALUES (%s, %s)", users)


def rows(conn, sql):
    return sorted(conn.execute(sql).fetchall(), key=repr)


def applied(conn, view, columns):
    """The view's changelog applied in order."""
    live = []
    for op, *row in conn.execute(
        f"SELECT op, {columns} FROM changes({view}) ORDER BY _offset"
    ).fetchall():
        if op == "insert":
            live.append(tuple(row))
        else:
            assert tuple(row) in live, f"{view}: delete of a row not held: {row}"
            live.remove(tuple(row))
    return sorted(live, key=repr)


def converge(conn, timeout=60):
    """Waits until every view equals its bounded query."""
    deadline = time.monotonic() + timeout
    for name, (sql, columns) in VIEWS.items():
        want = rows(conn, sql)
        assert want, f"{name}: the reference query has rows"
        while True:
            got = applied(conn, name, columns) if columns else rows(conn, f"SELECT * FROM {name}")
            if got == want:
                break
            assert time.monotonic() < deadline, f"{name}:\n got {got}\nwant {want}"
            time.sleep(0.1)


def create(conn):
    for s in STREAMS:
        conn.execute(s)
    for name, (sql, _) in VIEWS.items():
        conn.execute(f"CREATE MATERIALIZED VIEW {name} AS {sql}")


def test_views_that_take_rows_back_survive_sigkill():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                create(conn)
                insert(conn, 0, 30)
                converge(conn)
                deletes = conn.execute(
                    "SELECT count(*) FROM changes(orders_users) WHERE op = 'delete'"
                ).fetchone()[0]
                assert deletes > 0, "a NULL-padded row is taken back when its user arrives"
                time.sleep(2.5)  # a checkpoint
                insert(conn, 30, 30)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=10)
            s = Server(d)
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                insert(conn, 60, 30)
                converge(conn)
                shown = conn.execute("SHOW MATERIALIZED VIEWS").fetchall()
                assert len(shown) == len(VIEWS)
                assert all(r[1] == "running" for r in shown), shown
        finally:
            assert s.stop() == 0


def test_views_that_take_rows_back_move_to_another_agent():
    args = shared_store_args("views_cluster")
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        a = Server(os.path.join(a_dir, "a"), args)
        b = Server(os.path.join(b_dir, "b"), args)
        try:
            with psycopg.connect(a.dsn, autocommit=True) as conn:
                create(conn)
                insert(conn, 0, 30)
                converge(conn)
            with psycopg.connect(b.dsn, autocommit=True) as conn:
                converge(conn)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)
            with psycopg.connect(b.dsn, autocommit=True) as conn:
                insert(conn, 30, 30)
                # The killed agent's leases expire and this one runs every
                # view from its checkpoint and changelog.
                converge(conn, timeout=90)
                deadline = time.monotonic() + 60
                while True:
                    shown = conn.execute("SHOW MATERIALIZED VIEWS").fetchall()
                    if len(shown) == len(VIEWS) and all(r[1] == "running" for r in shown):
                        break
                    assert time.monotonic() < deadline, shown
                    time.sleep(0.5)
                insert(conn, 60, 20)
                converge(conn)
        finally:
            assert b.stop() == 0
            if a.proc.poll() is None:
                a.proc.kill()
