"""Sources: `CREATE SOURCE … FROM POSTGRES` copies the tables of a real
PostgreSQL (the one the test command starts, with wal_level = logical) — a
snapshot, then every change through logical replication — into tables of
the same primary key (changelog streams for tables without one), each
change exactly once across a SIGKILL of the server; updates, deletes, key
changes and TRUNCATE land as they did upstream; bad definitions are refused
with their SQLSTATE; an unreachable database shows as `retrying` with its
cause and the source recovers when it returns."""
import collections
import contextlib
import os
import random
import signal
import socket
import tempfile
import threading
import time
import uuid

import duckdb
import psycopg
import pytest

from conftest import Server, wait_for
from tcp_proxy import Proxy
from test_sinks import q


def upstream_base():
    pg = os.environ.get("STREAMHOUSE_TEST_POSTGRES")
    if not pg:
        pytest.fail("STREAMHOUSE_TEST_POSTGRES must be set: run the suite with ./scripts/test")
    return pg


@contextlib.contextmanager
def upstream_database():
    """A fresh upstream database: (url, name). Dropped afterwards, with any
    replication slot a failed test left in it."""
    base = upstream_base()
    name = f"cdc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{base}/{name}", name
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
            for (slot,) in c.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                    (name,)).fetchall():
                with contextlib.suppress(psycopg.Error):
                    c.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                              "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
                    time.sleep(0.2)
                    c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            c.execute(f"DROP DATABASE {name} WITH (FORCE)")


def bank_writer(url, stop, committed):
    """Random upstream transactions until `stop`: new events (unique ids),
    balance updates and account openings and closings. `committed` counts
    the transactions that committed."""
    rng = random.Random(7)
    next_account = 100_000
    with psycopg.connect(url, autocommit=True) as c:
        while not stop.is_set():
            with c.transaction():
                for _ in range(rng.randint(1, 20)):
                    c.execute("INSERT INTO events (account, kind) VALUES (%s, %s)",
                              (rng.randint(1, 2000), rng.choice(["deposit", "withdrawal"])))
                for a in rng.sample(range(1, 2000), 5):
                    c.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s",
                              (rng.randint(-50, 50), a))
                if rng.random() < 0.3:
                    c.execute("INSERT INTO accounts (id, owner, balance) VALUES (%s, 'new', 0)",
                              (next_account,))
                    next_account += 1
                if rng.random() < 0.2:
                    c.execute("DELETE FROM accounts WHERE id = (SELECT min(id) FROM accounts "
                              "WHERE id >= 100000)")
            committed.append(1)


def make_bank(url):
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, "
                  "balance numeric(12, 2) NOT NULL, opened timestamptz DEFAULT now(), "
                  "active boolean DEFAULT true, doc jsonb DEFAULT '{\"tier\": 1}')")
        c.execute("CREATE TABLE events (id bigserial PRIMARY KEY, account bigint, kind text)")
        c.execute("INSERT INTO accounts (id, owner, balance) "
                  "SELECT x, 'owner ' || x, x * 1.5 FROM generate_series(1, 1999) AS x")
        c.execute("CREATE PUBLICATION bank FOR TABLE accounts, events")


def upstream_state(url):
    with psycopg.connect(url) as c:
        accounts = {k: v for k, v in c.execute("SELECT id, balance FROM accounts")}
        events = sorted(r[0] for r in c.execute("SELECT id FROM events"))
    return accounts, events


def test_a_source_copies_tables_and_changes_exactly_once_across_sigkill():
    with upstream_database() as (url, _), tempfile.TemporaryDirectory() as d:
        make_bank(url)
        s = Server(os.path.join(d, "data"))
        try:
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                conn.execute(f"CREATE SOURCE bank FROM POSTGRES WITH (url = '{url}', "
                             "publication = 'bank', partitions = 3, poll_interval = '50ms') "
                             "FOR ALL TABLES")
                cols = [r[0] for r in conn.execute("SHOW COLUMNS FROM accounts").fetchall()]
                assert cols == ["id", "owner", "balance", "opened", "active", "doc"]
            stop, committed = threading.Event(), []
            t = threading.Thread(target=bank_writer, args=(url, stop, committed))
            t.start()
            time.sleep(3)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(timeout=10)
            time.sleep(1)  # changes keep committing upstream while it is down
            s = Server(os.path.join(d, "data"))
            time.sleep(3)
            stop.set()
            t.join()
            assert len(committed) > 20
            accounts, events = upstream_state(url)
            with psycopg.connect(s.dsn, autocommit=True) as conn:
                def caught_up():
                    got = conn.execute("SELECT id FROM events").fetchall()
                    return len(got) >= len(events) and got
                wait_for(caught_up, f"{len(events)} events")
                wait_for(lambda: dict(conn.execute("SELECT id, balance FROM accounts")
                                      .fetchall()) == accounts,
                         "accounts to equal the upstream table")
                assert sorted(r[0] for r in conn.execute("SELECT id FROM events")) == events
                # Every change exactly once: the table's log holds each
                # event (inserted once, never changed) once — including
                # those of transactions that ran during the snapshot.
                logged = [r[0] for r in conn.execute('SELECT id FROM "__table__events"')]
                assert sorted(logged) == events
                # The log of accounts: the snapshot, then each change.
                deleted = conn.execute('SELECT count(*) FROM "__table__accounts" '
                                       "WHERE __deleted").fetchone()[0]
                assert 0 < deleted < len(committed)
                # Types carried: numeric, timestamptz, boolean, jsonb as text.
                row = conn.execute("SELECT balance, opened, active, doc FROM accounts "
                                   "WHERE id = 2").fetchone()
                assert str(row[0]) == str(accounts[2]) and row[0].as_tuple().exponent == -2
                assert row[1].tzinfo is not None and row[2] is True
                assert row[3] == '{"tier": 1}'
                shown = conn.execute("SELECT name, status, cause, lag_bytes, streams "
                                     "FROM streamhouse.sources").fetchall()
                assert shown[0][:3] == ("bank", "running", None), shown
                assert shown[0][4] == "accounts, events"
                conn.execute("DROP SOURCE bank")
            with psycopg.connect(url) as c:
                assert c.execute("SELECT count(*) FROM pg_replication_slots "
                                 "WHERE slot_name = 'streamhouse_bank'").fetchone()[0] == 0
        finally:
            s.proc.kill()
            s.proc.wait()


def test_source_statements_and_refusals(server):
    with upstream_database() as (url, db), psycopg.connect(server.dsn, autocommit=True) as conn:
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
            up.execute("CREATE TABLE other (id int PRIMARY KEY)")
            up.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
            up.execute("CREATE PUBLICATION shop FOR TABLE items, other")
        secret_url = url.replace("streamhouse@", "streamhouse:sekrit@")

        def refused(sql, state, words):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.sqlstate == state, e.value
            assert words in str(e.value), e.value

        refused(f"CREATE SOURCE s FROM POSTGRES WITH (url = '{url}', publication = 'shop', "
                "color = 'red')", "42P16", 'unknown source option "color"')
        refused(f"CREATE SOURCE s FROM POSTGRES WITH (url = '{url}')", "42P16", "publication")
        refused("CREATE SOURCE s FROM POSTGRES WITH (url = 'mysql://x', publication = 'p')",
                "42P16", "postgres://")
        refused(f"CREATE SOURCE s FROM ORACLE WITH (url = '{url}', publication = 'shop')",
                "42P16", "POSTGRES")
        refused(f"CREATE SOURCE s FROM POSTGRES WITH (url = '{url}', publication = 'nope')",
                "42P16", 'no publication "nope"')
        refused(f"CREATE SOURCE s FROM POSTGRES WITH (url = '{url}', publication = 'shop') "
                "FOR TABLES (missing)", "42P16", "no table public.missing")
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            closed = free.getsockname()[1]
        refused(f"CREATE SOURCE s FROM POSTGRES WITH (url = 'postgres://u:sekrit@127.0.0.1:"
                f"{closed}/x', publication = 'shop')", "08001", "PostgreSQL")
        conn.execute("CREATE STREAM items (x int)")
        refused(f"CREATE SOURCE s FROM POSTGRES WITH (url = '{url}', publication = 'shop')",
                "42P07", 'stream "items"')
        conn.execute("DROP STREAM items")
        conn.execute("CREATE TABLE items (x int PRIMARY KEY)")
        refused(f"CREATE SOURCE s FROM POSTGRES WITH (url = '{url}', publication = 'shop')",
                "42P07", 'table "items"')
        conn.execute("DROP TABLE items")

        conn.execute(f"CREATE SOURCE shop FROM POSTGRES WITH (url = '{secret_url}', "
                     "publication = 'shop', prefix = 'up_') FOR TABLES (items)")
        conn.execute(f"CREATE SOURCE IF NOT EXISTS shop FROM POSTGRES WITH (url = '{url}', "
                     "publication = 'shop')")
        refused(f"CREATE SOURCE shop FROM POSTGRES WITH (url = '{url}', publication = 'shop')",
                "42710", '"shop" already exists')
        wait_for(lambda: conn.execute("SELECT count(*) FROM up_items").fetchone()[0] == 2,
                 "the snapshot")
        refused("DROP TABLE up_items", "2BP01", 'source "shop" writes it')
        shown = conn.execute("SHOW SOURCES").fetchall()
        listed = conn.execute("SELECT * FROM streamhouse.sources").fetchall()
        assert [r[:4] for r in shown] == [r[:4] for r in listed]
        assert shown[0][:4] == ("shop", "POSTGRES", secret_url.replace("sekrit", "****"),
                                "up_items")
        assert all("sekrit" not in str(r) for r in shown + listed)
        # Only the named table: `other` has no stream.
        refused("SELECT * FROM up_other", "42P01", "up_other")
        refused("DROP SOURCE nope", "42704", 'source "nope" does not exist')
        conn.execute("DROP SOURCE IF EXISTS nope")
        conn.execute("DROP SOURCE shop")
        assert conn.execute("SHOW SOURCES").fetchall() == []
        assert conn.execute("SELECT count(*) FROM up_items").fetchone()[0] == 2  # kept
        with psycopg.connect(url) as up:
            assert up.execute("SELECT count(*) FROM pg_replication_slots "
                              "WHERE database = %s", (db,)).fetchone()[0] == 0


def test_tables_take_updates_deletes_key_changes_and_truncates(server):
    with upstream_database() as (url, _), psycopg.connect(server.dsn, autocommit=True) as conn:
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, "
                       "price numeric(8, 2), doc text)")
            up.execute("CREATE TABLE notes (body text)")
            up.execute("ALTER TABLE notes REPLICA IDENTITY FULL")
            up.execute("INSERT INTO items VALUES (1, 'one', 1.5), (2, 'two', 2), (3, 'three', 3)")
            up.execute("INSERT INTO notes VALUES ('a'), ('b')")
            up.execute("CREATE PUBLICATION shop FOR TABLE items, notes")
        conn.execute(f"CREATE SOURCE shop FROM POSTGRES WITH (url = '{url}', "
                     "publication = 'shop', partitions = 2, poll_interval = '50ms')")
        # A table keyed like upstream; a changelog stream for `notes`.
        assert [r[0] for r in conn.execute("SHOW COLUMNS FROM items")] == \
            ["id", "name", "price", "doc"]
        assert [r[0] for r in conn.execute("SHOW COLUMNS FROM notes")][:3] == \
            ["body", "_op", "_lsn"]
        items = "SELECT id, name, price::text FROM items ORDER BY id"
        wait_for(lambda: conn.execute(items).fetchall() == [
            (1, "one", "1.50"), (2, "two", "2.00"), (3, "three", "3.00")], "the snapshot")

        # A value stored out of line (TOASTed), which an update leaving it
        # alone does not send: the source reads it again upstream.
        big = "".join(random.Random(3).choices("0123456789abcdef", k=30_000))
        with psycopg.connect(url, autocommit=True) as up:
            with up.transaction():
                up.execute("INSERT INTO items VALUES (4, 'four', NULL, %s)", (big,))
                up.execute("UPDATE items SET name = 'TWO', price = 22 WHERE id = 2")
                up.execute("UPDATE items SET id = 30 WHERE id = 3")  # the key moves
                up.execute("DELETE FROM items WHERE id = 1")
            up.execute("UPDATE items SET price = 44 WHERE id = 4")
            up.execute("UPDATE notes SET body = 'B' WHERE body = 'b'")
            up.execute("DELETE FROM notes WHERE body = 'a'")
        wait_for(lambda: conn.execute(items).fetchall() == [
            (2, "TWO", "22.00"), (4, "four", "44.00"), (30, "three", "3.00")], "the changes")
        assert conn.execute("SELECT doc FROM items WHERE id = 4").fetchone()[0] == big
        notes = "SELECT body, _op, _lsn > 0 FROM notes ORDER BY _op, body"
        wait_for(lambda: conn.execute(notes).fetchall() == [
            ("a", "delete", True), ("a", "insert", False), ("b", "insert", False),
            ("B", "update", True)], "the notes")
        # The table's changes, as views and subscribers see them: every
        # delete, update and key move retracts the old row; item 4's insert
        # and its later update retract (4, 'four') only when they landed in
        # different batches. Inserts less retractions are the table.
        changes = conn.execute("SELECT op, id, name, price::text FROM changes(items)").fetchall()
        deleted = sorted((i, n) for op, i, n, _ in changes if op == "delete")
        assert deleted in ([(1, "one"), (2, "two"), (3, "three")],
                           [(1, "one"), (2, "two"), (3, "three"), (4, "four")]), changes
        net = collections.Counter(r[1:] for r in changes if r[0] == "insert")
        net.subtract(collections.Counter(r[1:] for r in changes if r[0] == "delete"))
        assert sorted((+net).elements()) == [(2, "TWO", "22.00"), (4, "four", "44.00"),
                                (30, "three", "3.00")], changes

        # TRUNCATE: every key the table holds is deleted — with rows the
        # same transaction wrote before it, and then rows after it.
        with psycopg.connect(url, autocommit=True) as up:
            with up.transaction():
                up.execute("INSERT INTO items VALUES (7, 'seven', 7)")
                up.execute("TRUNCATE items")
                up.execute("INSERT INTO items VALUES (8, 'eight', 8)")
            up.execute("INSERT INTO items VALUES (9, 'nine', 9)")
        wait_for(lambda: conn.execute(items).fetchall() == [
            (8, "eight", "8.00"), (9, "nine", "9.00")], "the truncate")
        gone = conn.execute('SELECT id FROM "__table__items" WHERE __deleted '
                            "ORDER BY id").fetchall()
        assert gone == [(1,), (2,), (3,), (4,), (7,), (30,)], gone

        # A sink of the table writes its changelog, which applied in order
        # is the table.
        with tempfile.TemporaryDirectory() as out:
            conn.execute(f"CREATE SINK items_out FROM items INTO PARQUET WITH ("
                         f"path = 'file://{out}', flush_interval = '100ms')")

            def applied():
                try:
                    log = q(f"SELECT op, id, name FROM read_parquet('{out}/**/*.parquet', "
                            "hive_partitioning = true) ORDER BY partition, _offset")
                except duckdb.IOException:
                    return False  # no file yet
                held = collections.Counter()
                for op, key, name in log:
                    held[(key, name)] += 1 if op == "insert" else -1
                return sorted(held.elements()) == [(8, "eight"), (9, "nine")]
            wait_for(applied, "the sink's changelog")
            with pytest.raises(psycopg.Error) as e:
                conn.execute("DROP TABLE items")
            assert e.value.sqlstate == "2BP01" and 'sink "items_out" copies it' in str(e.value)
            conn.execute("DROP SINK items_out")

        # Writes to the source's table from SQL go in like any write.
        conn.execute("INSERT INTO items VALUES (100, 'local', 0)")
        assert conn.execute("SELECT name FROM items WHERE id = 100").fetchone() == ("local",)
        with pytest.raises(psycopg.Error) as e:
            conn.execute("DROP TABLE items")
        assert e.value.sqlstate == "2BP01" and 'source "shop" writes it' in str(e.value)
        conn.execute("DROP SOURCE shop")
        conn.execute("DROP TABLE items")
        conn.execute("DROP STREAM notes")


def test_an_unreachable_database_shows_retrying_and_the_source_recovers(server):
    with upstream_database() as (url, db):
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("CREATE TABLE ticks (id int PRIMARY KEY)")
            up.execute("INSERT INTO ticks SELECT generate_series(1, 100)")
            up.execute("CREATE PUBLICATION ticks FOR TABLE ticks")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        proxy = Proxy(port)
        proxy.start()
        via = f"postgres://streamhouse@127.0.0.1:{proxy.port}/{db}"
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SOURCE ticks FROM POSTGRES WITH (url = '{via}', "
                         "publication = 'ticks', poll_interval = '50ms')")
            count = "SELECT count(*) FROM ticks"
            wait_for(lambda: conn.execute(count).fetchone()[0] == 100, "the snapshot")
            proxy.stop()
            with psycopg.connect(url, autocommit=True) as up:
                up.execute("INSERT INTO ticks SELECT generate_series(101, 150)")
            status = "SELECT status, cause FROM streamhouse.sources WHERE name = 'ticks'"
            row = wait_for(lambda: (r := conn.execute(status).fetchone())[0] == "retrying" and r,
                           "status retrying")
            assert "PostgreSQL" in row[1], row
            assert conn.execute(count).fetchone()[0] == 100
            proxy.start()
            wait_for(lambda: conn.execute(count).fetchone()[0] == 150, "recovery", timeout=60)
            assert conn.execute(status).fetchone() == ("running", None)
            ids = [r[0] for r in conn.execute("SELECT id FROM ticks ORDER BY id").fetchall()]
            assert ids == list(range(1, 151))
            conn.execute("DROP SOURCE ticks")
        proxy.stop()


def test_a_source_moves_to_another_agent():
    from conftest import shared_store_args
    args = shared_store_args("sources_cluster")
    with upstream_database() as (url, _), tempfile.TemporaryDirectory() as d:
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("CREATE TABLE events (id bigint PRIMARY KEY, kind text)")
            up.execute("INSERT INTO events SELECT x, 'old' FROM generate_series(1, 500) AS x")
            up.execute("CREATE PUBLICATION feed FOR TABLE events")
        a = Server(os.path.join(d, "a"), args)
        b = Server(os.path.join(d, "b"), args)
        stop, written = threading.Event(), []

        def produce():
            i = 1000
            with psycopg.connect(url, autocommit=True) as up:
                while not stop.is_set():
                    up.execute("INSERT INTO events SELECT x, 'new' FROM "
                               "generate_series(%s::bigint, %s::bigint) AS x", (i, i + 49))
                    written.extend(range(i, i + 50))
                    i += 50
                    time.sleep(0.02)

        try:
            with psycopg.connect(a.dsn, autocommit=True) as conn:
                conn.execute(f"CREATE SOURCE feed FROM POSTGRES WITH (url = '{url}', "
                             "publication = 'feed', partitions = 2, poll_interval = '50ms')")
                wait_for(lambda: conn.execute("SELECT count(*) FROM events").fetchone()[0] >= 500,
                         "the snapshot")
            t = threading.Thread(target=produce)
            t.start()
            time.sleep(2)
            with psycopg.connect(b.dsn, autocommit=True) as conn:
                status = conn.execute("SELECT status FROM streamhouse.sources").fetchone()[0]
                assert status.startswith("running on "), status
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)
            at_kill = len(written)
            time.sleep(2)
            stop.set()
            t.join()
            # Changes committed upstream before and after the owner died.
            assert 0 < at_kill < len(written)
            want = list(range(1, 501)) + written
            with psycopg.connect(b.dsn, autocommit=True) as conn:
                # The killed agent's lease expires; this one goes on from
                # what the streams recorded.
                wait_for(lambda: conn.execute("SELECT count(*) FROM events").fetchone()[0]
                         >= len(want), f"{len(want)} rows", timeout=90)
                got = [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id").fetchall()]
                assert got == sorted(want)
                # Each row once in the table's log: nothing copied twice.
                logged = [r[0] for r in conn.execute('SELECT id FROM "__table__events"')]
                assert sorted(logged) == sorted(want)
                assert conn.execute("SELECT status FROM streamhouse.sources").fetchone()[0] == \
                    "running"
                conn.execute("DROP SOURCE feed")
        finally:
            assert b.stop() == 0
            if a.proc.poll() is None:
                a.proc.kill()


def source_rows_metric(s, name):
    """`streamhouse_source_rows_total{source=name}` from the server's metrics."""
    import urllib.request
    with urllib.request.urlopen(f"http://{s.http}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith("streamhouse_source_rows_total{") and f'source="{name}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_upstream_schema_changes_wait_with_their_fix_then_go_on(server):
    with upstream_database() as (url, db), psycopg.connect(server.dsn, autocommit=True) as conn:
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("CREATE TABLE notes (id int, body text)")  # no key: a changelog stream
            up.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")  # a table
            up.execute("INSERT INTO notes VALUES (1, 'a'), (2, 'b')")
            up.execute("INSERT INTO items VALUES (1, 'one')")
            up.execute("CREATE PUBLICATION p FOR TABLE notes, items")
        conn.execute(f"CREATE SOURCE up FROM POSTGRES WITH (url = '{url}', publication = 'p', "
                     "poll_interval = '50ms')")
        notes = "SELECT id, body, qty FROM notes ORDER BY id"
        count = "SELECT count(*) FROM notes"
        status = "SELECT status, cause FROM streamhouse.sources WHERE name = 'up'"
        wait_for(lambda: conn.execute(count).fetchone()[0] == 2
                 and conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1,
                 "the snapshot")
        assert source_rows_metric(server, "up") >= 3

        # A column added upstream: the source waits, naming the fix.
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("ALTER TABLE notes ADD COLUMN qty int")
            up.execute("INSERT INTO notes VALUES (3, 'c', 30)")
        row = wait_for(lambda: (r := conn.execute(status).fetchone())[0] == "retrying" and r,
                       "the source waiting at the new column")
        assert "new column qty" in row[1] and "ALTER STREAM notes ADD COLUMN" in row[1], row
        assert conn.execute(count).fetchone()[0] == 2
        conn.execute("ALTER STREAM notes ADD COLUMN qty INT")
        wait_for(lambda: conn.execute(count).fetchone()[0] == 3, "the waiting change")
        wait_for(lambda: conn.execute(status).fetchone() == ("running", None), "running again")
        assert conn.execute(notes).fetchall() == [(1, "a", None), (2, "b", None), (3, "c", 30)]

        # A column dropped upstream is NULL from then on.
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("ALTER TABLE notes DROP COLUMN body")
            up.execute("INSERT INTO notes (id, qty) VALUES (4, 40)")
        wait_for(lambda: conn.execute(count).fetchone()[0] == 4, "the row after the drop")
        assert conn.execute(notes).fetchall()[-1] == (4, None, 40)
        assert conn.execute(status).fetchone() == ("running", None)

        # A table's columns do not change: the source waits, naming the fix,
        # and nothing of the change is applied.
        with psycopg.connect(url, autocommit=True) as up:
            up.execute("ALTER TABLE items ADD COLUMN price int")
            up.execute("INSERT INTO items VALUES (2, 'two', 5)")
        row = wait_for(lambda: (r := conn.execute(status).fetchone())[0] == "retrying" and r,
                       "the source waiting at the table's new column")
        assert 'table "items"' in row[1] and "drop the source and the table" in row[1], row
        assert conn.execute("SELECT id, name FROM items").fetchall() == [(1, "one")]
        assert source_rows_metric(server, "up") >= 5
        conn.execute("DROP SOURCE up")
