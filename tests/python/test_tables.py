"""Tables (rows kept by primary key) through psycopg, with its default
transactions: upserts, UPDATE and DELETE committed in blocks; every read
equals a model of the acknowledged writes (no waiting: a table's read
reflects every write acknowledged before it), before and after a SIGKILL,
and through either of two agents over PostgreSQL and S3 — also after the
agent maintaining the table is killed. A view joining a stream with the
table equals its bounded query. The table's log, compacted by key, ends
up holding one row per live key."""

import os
import random
import signal
import tempfile
import time

import psycopg

from conftest import Server, shared_store_args

DDL = [
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, tier TEXT, "
    "balance BIGINT DEFAULT 0) WITH (partitions = 3)",
    "CREATE STREAM payments (account BIGINT, amount BIGINT) WITH (partitions = 2)",
    "CREATE MATERIALIZED VIEW paid_by_tier AS SELECT a.tier, count(*) AS payments, "
    "sum(p.amount) AS total FROM payments p JOIN accounts a ON p.account = a.id GROUP BY a.tier",
]
BOUNDED = (
    "SELECT a.tier, count(*), sum(p.amount) FROM payments p JOIN accounts a "
    "ON p.account = a.id GROUP BY a.tier"
)
KEYS = 120


def work(conn, model, rng, blocks):
    """`blocks` transaction blocks of random writes; `model` follows each
    committed one."""
    for _ in range(blocks):
        pending = dict(model)
        with conn.cursor() as c:
            for _ in range(rng.randint(1, 6)):
                k = rng.randrange(KEYS)
                op = rng.random()
                if op < 0.5:
                    row = (f"o{k}-{rng.randrange(100)}", rng.choice(["a", "b", "c"]), rng.randrange(1000))
                    c.execute("INSERT INTO accounts VALUES (%s, %s, %s, %s)", (k, *row))
                    pending[k] = row
                elif op < 0.75:
                    c.execute(
                        "UPDATE accounts SET balance = balance + 1, tier = %s WHERE id = %s",
                        ("d", k),
                    )
                    assert c.rowcount == (1 if k in pending else 0)
                    if k in pending:
                        owner, _, balance = pending[k]
                        pending[k] = (owner, "d", balance + 1)
                else:
                    c.execute("DELETE FROM accounts WHERE id = %s", (k,))
                    assert c.rowcount == (1 if k in pending else 0)
                    pending.pop(k, None)
            c.execute(
                "INSERT INTO payments VALUES (%s, %s)", (rng.randrange(KEYS), rng.randrange(50))
            )
        if rng.random() < 0.15:
            conn.rollback()
        else:
            conn.commit()
            model.clear()
            model.update(pending)


def bulk(conn, n):
    """A large write, then reads right after it: each sees all of it."""
    c = conn.execute(
        "INSERT INTO accounts SELECT value AS id, 'bulk', 'e', value AS balance "
        f"FROM generate_series(100000, {100000 + n - 1})"
    )
    assert c.rowcount == n
    conn.commit()
    assert conn.execute("SELECT count(*) FROM accounts WHERE tier = 'e'").fetchone()[0] == n
    c = conn.execute("UPDATE accounts SET balance = -1 WHERE tier = 'e'")
    assert c.rowcount == n
    conn.commit()
    assert conn.execute("SELECT count(*) FROM accounts WHERE balance = -1").fetchone()[0] == n
    c = conn.execute("DELETE FROM accounts WHERE tier = 'e'")
    assert c.rowcount == n
    conn.commit()
    assert conn.execute("SELECT count(*) FROM accounts WHERE tier = 'e'").fetchone()[0] == 0
    conn.commit()


def table_rows(conn):
    got = conn.execute("SELECT id, owner, tier, balance FROM accounts ORDER BY id").fetchall()
    conn.commit()
    return got


def expected(model):
    return [(k, *model[k]) for k in sorted(model)]


def view_converges(conn, timeout=60):
    deadline = time.monotonic() + timeout
    want = sorted(conn.execute(BOUNDED).fetchall(), key=repr)
    assert want, "the bounded join has rows"
    while True:
        got = sorted(conn.execute("SELECT * FROM paid_by_tier").fetchall(), key=repr)
        conn.commit()
        if got == want:
            return
        assert time.monotonic() < deadline, f"got {got}\nwant {want}"
        time.sleep(0.1)


def test_table_writes_in_blocks_survive_sigkill():
    rng = random.Random(7)
    model = {}
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            with psycopg.connect(s.dsn, autocommit=True) as ddl:
                for stmt in DDL:
                    ddl.execute(stmt)
            with psycopg.connect(s.dsn) as conn:
                for _ in range(5):
                    work(conn, model, rng, 20)
                    assert table_rows(conn) == expected(model)
                bulk(conn, 50_000)
                view_converges(conn)
                work(conn, model, rng, 20)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=10)
            s = Server(d)
            with psycopg.connect(s.dsn) as conn:
                assert table_rows(conn) == expected(model), "every committed write survives"
                work(conn, model, rng, 40)
                assert table_rows(conn) == expected(model)
                view_converges(conn)
        finally:
            assert s.stop() == 0


def test_table_reads_and_writes_through_either_agent():
    rng = random.Random(11)
    model = {}
    args = shared_store_args("tables_cluster")
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        a = Server(os.path.join(a_dir, "a"), args)
        b = Server(os.path.join(b_dir, "b"), args)
        try:
            with psycopg.connect(a.dsn, autocommit=True) as ddl:
                for stmt in DDL:
                    ddl.execute(stmt)
            with psycopg.connect(a.dsn) as ca, psycopg.connect(b.dsn) as cb:
                for i in range(6):
                    writer = ca if i % 2 else cb
                    work(writer, model, rng, 15)
                    # Both agents see every committed write at once,
                    # whichever of them maintains the table.
                    assert table_rows(ca) == expected(model)
                    assert table_rows(cb) == expected(model)
                bulk(ca, 20_000)
                bulk(cb, 20_000)
                view_converges(cb)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)
            with psycopg.connect(b.dsn) as cb:
                assert table_rows(cb) == expected(model)
                work(cb, model, rng, 20)
                assert table_rows(cb) == expected(model)
                # The killed agent's leases expire; this one maintains
                # everything from the checkpoints and logs.
                deadline = time.monotonic() + 90
                while True:
                    shown = cb.execute("SELECT name, status FROM streamhouse.views").fetchall()
                    cb.commit()
                    if shown and all(st == "running" for _, st in shown):
                        break
                    assert time.monotonic() < deadline, shown
                    time.sleep(0.5)
                work(cb, model, rng, 20)
                assert table_rows(cb) == expected(model)
                view_converges(cb, timeout=90)
        finally:
            assert b.stop() == 0
            if a.proc.poll() is None:
                a.proc.kill()


def test_copy_into_and_out_of_a_table():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute(DDL[0])
                with conn.cursor().copy("COPY accounts (id, owner, tier) FROM STDIN") as cp:
                    for row in [(1, "a", "x"), (2, "b", "y"), (1, "c", "z")]:
                        cp.write_row(row)
                # The last row of a key wins; the default fills balance.
                want = [(1, "c", "z", 0), (2, "b", "y", 0)]
                assert table_rows(conn) == want
                with conn.cursor().copy("COPY accounts TO STDOUT") as cp:
                    out = sorted(tuple(r) for r in cp.rows())
                assert out == [("1", "c", "z", "0"), ("2", "b", "y", "0")]
        finally:
            assert s.stop() == 0


def log_rows(conn):
    got = conn.execute(
        "SELECT writes, log_rows FROM streamhouse.tables WHERE name = 'accounts'"
    ).fetchone()
    conn.commit()
    return got


def test_a_tables_log_is_compacted_by_key():
    rng = random.Random(5)
    model = {}
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "streamhouse.toml")
        with open(config, "w") as f:
            f.write(
                '[log]\nmaintenance_interval = "1s"\ncompact_after = "1s"\n'
                'tombstone_retention = "2s"\n'
            )
        data = os.path.join(d, "data")
        s = Server(data, ["--config", config])
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute(DDL[0])
                writes = 0
                for i in range(40):
                    rows = [(k, f"o{i}", rng.choice("abc"), i) for k in rng.sample(range(KEYS), 60)]
                    conn.execute(
                        "INSERT INTO accounts VALUES "
                        + ", ".join(["(%s, %s, %s, %s)"] * len(rows)),
                        [v for r in rows for v in r],
                    )
                    writes += len(rows)
                    model.update({r[0]: r[1:] for r in rows})
                    if i % 4 == 3:
                        gone = rng.sample(sorted(model), 10)
                        c = conn.execute(f"DELETE FROM accounts WHERE id IN ({', '.join(map(str, gone))})")
                        assert c.rowcount == 10
                        writes += 10
                        for k in gone:
                            del model[k]
                assert table_rows(conn) == expected(model)
                assert log_rows(conn)[0] == writes
                # Compaction by key leaves each live key's latest row (the
                # tombstones go once past their two seconds).
                deadline = time.monotonic() + 60
                while log_rows(conn) != (writes, len(model)):
                    assert time.monotonic() < deadline, (log_rows(conn), len(model))
                    time.sleep(0.25)
                assert table_rows(conn) == expected(model)
                # Writes go on over the compacted log.
                for k in rng.sample(sorted(model), 20):
                    conn.execute("UPDATE accounts SET balance = balance + 100 WHERE id = %s", (k,))
                    owner, tier, balance = model[k]
                    model[k] = (owner, tier, balance + 100)
                assert table_rows(conn) == expected(model)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=10)
            s = Server(data, ["--config", config])
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                assert table_rows(conn) == expected(model), "the restored view reads on"
                deadline = time.monotonic() + 60
                while log_rows(conn)[1] != len(model):
                    assert time.monotonic() < deadline, (log_rows(conn), len(model))
                    time.sleep(0.25)
                assert table_rows(conn) == expected(model)
        finally:
            assert s.stop() == 0
