"""ALTER STREAM through psql while materialized views run over the stream
and a producer writes: nothing acknowledged is lost, the producer sees no
error, the views stay correct, and after a kill -9 they come back reading
the schema version they were made with."""

import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict

import psycopg

from conftest import Server


def psql(server, sql):
    """One statement through psql; (exit code, what it printed)."""
    p = subprocess.run(
        ["psql", server.dsn, "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stdout + p.stderr


def wait_for(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {timeout} s")


def expected(rows):
    totals = defaultdict(lambda: [0, 0])
    for _, region, amount in rows:
        totals[region][0] += 1
        totals[region][1] += amount
    return {r: tuple(v) for r, v in totals.items()}


def views_match(dsn, acked):
    want_totals = expected(acked)
    want_big = sorted(i for i, _, a in acked if a > 90)
    with psycopg.connect(dsn, autocommit=True) as c:
        got_totals = {
            r: (n, t) for r, n, t in c.execute("SELECT region, n, total FROM totals").fetchall()
        }
        got_big = sorted(i for (i,) in c.execute("SELECT id FROM big ORDER BY id").fetchall())
    if got_totals == want_totals and got_big == want_big:
        return True
    return (len(got_big), len(want_big), got_totals == want_totals)


class Producer:
    """INSERTs of 50 rows, one after another, naming the columns it knows;
    remembers what was acknowledged and every error."""

    def __init__(self, dsn, first_id):
        self.dsn = dsn
        self.next = first_id
        self.acked = []
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                rows = [(i, f"r{i % 5}", i % 97) for i in range(self.next, self.next + 50)]
                values = ",".join(f"({i}, '{r}', {a})" for i, r, a in rows)
                try:
                    c.execute(f"INSERT INTO orders (id, region, amount) VALUES {values}")
                except Exception as e:  # noqa: BLE001 - every error is a failure, kept to report
                    self.errors.append(repr(e))
                else:
                    self.acked.extend(rows)
                self.next += 50

    def finish(self):
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        return self.acked


def test_alter_stream_under_running_views_and_a_producer():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            with psycopg.connect(s.dsn, autocommit=True) as c:
                c.execute(
                    "CREATE STREAM orders (id BIGINT NOT NULL, region TEXT, amount INT NOT NULL, "
                    "note TEXT) WITH (partitions = 2, key = 'region')"
                )
                c.execute(
                    "CREATE MATERIALIZED VIEW totals AS "
                    "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region"
                )
                # `*` over the stream: the view keeps the columns it was made with.
                c.execute("CREATE MATERIALIZED VIEW big AS SELECT * FROM orders WHERE amount > 90")

            producer = Producer(s.dsn, 0)
            wait_for(lambda: len(producer.acked) >= 200, "first rows")
            changes = [
                ("ALTER STREAM orders ADD COLUMN channel TEXT NOT NULL DEFAULT 'web'", None),
                ("ALTER STREAM orders RENAME COLUMN note TO remark", None),
                ("ALTER STREAM orders ADD COLUMN qty BIGINT", None),
                # `big` reads every column it was made with; `totals` reads amount.
                ("ALTER STREAM orders DROP COLUMN remark", "2BP01"),
                ("ALTER STREAM orders ALTER COLUMN amount TYPE BIGINT", "2BP01"),
                ("ALTER STREAM orders ALTER COLUMN qty TYPE NUMERIC(30, 2)", None),
                ("ALTER STREAM orders DROP COLUMN qty", None),
                ("ALTER STREAM orders ALTER COLUMN channel TYPE INT", "0A000"),
            ]
            for sql, refused in changes:
                before = len(producer.acked)
                code, out = psql(s, sql)
                if refused is None:
                    assert code == 0, f"{sql}: {out}"
                    assert "ALTER STREAM" in out, out
                else:
                    assert code != 0, f"{sql} should be refused: {out}"
                    assert f"ERROR:  {refused}" in out, out
                # The producer kept going between the changes.
                wait_for(lambda b=before: len(producer.acked) > b + 100, "rows after " + sql)
            acked = producer.finish()
            assert producer.errors == [], producer.errors[:3]

            with psycopg.connect(s.dsn, autocommit=True) as c:
                # Every acknowledged row, once, old and new in one query.
                got = c.execute(
                    "SELECT id, region, amount, channel FROM orders ORDER BY id"
                ).fetchall()
                assert [(i, r, a) for i, r, a, _ in got] == sorted(acked)
                assert Counter(ch for *_, ch in got) == Counter({"web": len(acked)})
                cols = [
                    r[0]
                    for r in c.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'orders' AND column_name NOT LIKE '\\_%' "
                        "ORDER BY ordinal_position"
                    ).fetchall()
                ]
                assert cols == ["id", "region", "amount", "remark", "channel"]
                versions = c.execute(
                    "SELECT count(*) FROM streamhouse.schema_versions WHERE stream = 'orders'"
                ).fetchone()[0]
                assert versions == 6
            wait_for(lambda: views_match(s.dsn, acked), "views caught up")
            with psycopg.connect(s.dsn, autocommit=True) as c:
                cur = c.execute("SELECT * FROM big LIMIT 1")
                assert [d.name for d in cur.description] == ["id", "region", "amount", "note"]

            # kill -9, and back: the views are planned against the versions
            # they were made with, restored, and keep up with new rows.
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=30)
            s = Server(d)
            producer = Producer(s.dsn, 10_000_000)
            wait_for(lambda: len(producer.acked) >= 300, "rows after the restart")
            acked += producer.finish()
            assert producer.errors == [], producer.errors[:3]
            wait_for(lambda: views_match(s.dsn, acked), "views caught up after kill -9")
            with psycopg.connect(s.dsn, autocommit=True) as c:
                cur = c.execute("SELECT * FROM big LIMIT 1")
                assert [d.name for d in cur.description] == ["id", "region", "amount", "note"]
                n = c.execute("SELECT count(*) FROM orders").fetchone()[0]
                assert n == len(acked)
        finally:
            assert s.stop() == 0
