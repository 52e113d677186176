"""psycopg 3 against StreamHouse: typed round trips, parameters, prepared
statement reuse, failed transaction blocks and SQLSTATEs (transaction
blocks in full: test_transactions.py)."""

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors


@pytest.fixture
def conn(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        yield c


def test_every_type_round_trips(conn):
    conn.execute(
        """CREATE STREAM IF NOT EXISTS types (
             b BOOLEAN, i2 SMALLINT, i4 INT, i8 BIGINT, f4 REAL, f8 DOUBLE PRECISION,
             n NUMERIC(12, 3), t TEXT, v VARCHAR(10), by BYTEA, d DATE,
             ts TIMESTAMP, tz TIMESTAMPTZ)"""
    )
    row = (
        True, 12, 34_000, 5_000_000_000, 1.5, 2.25, Decimal("12345.678"),
        "héllo", "v", b"\x00\x01\xff", dt.date(2026, 11, 26),
        dt.datetime(2026, 11, 26, 12, 30, 15, 250000),
        dt.datetime(2026, 11, 26, 12, 30, 15, tzinfo=dt.timezone.utc),
    )
    conn.execute(
        "INSERT INTO types VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", row
    )
    conn.execute("INSERT INTO types (t) VALUES (NULL)")
    got = conn.execute("SELECT * FROM types WHERE b").fetchone()
    assert got == row
    nulls = conn.execute("SELECT * FROM types WHERE b IS NULL").fetchone()
    assert nulls == (None,) * 13


def test_parameters_and_prepared_statement_reuse(conn):
    conn.execute("CREATE STREAM IF NOT EXISTS events (id BIGINT, kind TEXT) WITH (partitions = 3, key = 'kind')")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO events VALUES (%s, %s)",
            [(i, ["click", "view", "buy"][i % 3]) for i in range(30)],
        )
    # Past psycopg's prepare threshold (5): the server-side statement is reused.
    for i in range(10):
        n = conn.execute(
            "SELECT count(*) FROM events WHERE kind = %s AND id >= %s", ("view", i), prepare=True
        ).fetchone()[0]
        assert n == len([x for x in range(i, 30) if x % 3 == 1])
    cols = conn.execute("SELECT _partition, _offset, id FROM events WHERE id = %s", (4,)).fetchone()
    assert cols[2] == 4 and cols[0] in (0, 1, 2) and cols[1] >= 0


def test_errors_carry_sqlstate_and_the_connection_survives(conn):
    with pytest.raises(errors.UndefinedTable) as e:
        conn.execute("SELECT * FROM no_such_stream")
    assert e.value.sqlstate == "42P01"
    with pytest.raises(errors.SyntaxError):
        conn.execute("SELEC 1")
    with pytest.raises(errors.UndefinedColumn):
        conn.execute("SELECT nope FROM events")
    with pytest.raises(errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    assert conn.execute("SELECT 41 + %s", (1,)).fetchone() == (42,)


def test_copy_in_and_out(conn):
    conn.execute("CREATE STREAM IF NOT EXISTS bulk (id BIGINT, name TEXT, score DOUBLE PRECISION) WITH (partitions = 4)")
    with conn.cursor() as cur:
        with cur.copy("COPY bulk FROM STDIN") as copy:
            for i in range(10_000):
                copy.write_row((i, f"name-{i}", i * 0.5))
        assert cur.rowcount == 10_000
    assert conn.execute("SELECT count(*), sum(id), max(score) FROM bulk").fetchone() == (10_000, 49_995_000, 4999.5)
    with conn.cursor() as cur:
        with cur.copy("COPY (SELECT id, name FROM bulk WHERE id < 3 ORDER BY id) TO STDOUT") as copy:
            rows = list(copy.rows())
    assert rows == [("0", "name-0"), ("1", "name-1"), ("2", "name-2")]


def test_failed_transaction_reports_in_failed_sql_transaction(server):
    with psycopg.connect(server.dsn) as c:
        with pytest.raises(errors.DivisionByZero):
            c.execute("SELECT 1 / 0")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_cancel_stops_a_running_query(conn):
    import threading
    import time

    timer = threading.Timer(0.5, conn.cancel_safe)
    timer.start()
    started = time.monotonic()
    with pytest.raises(errors.QueryCanceled) as e:
        # Minutes of work if not cancelled.
        conn.execute("SELECT count(*) FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3")
    assert e.value.sqlstate == "57014"
    assert time.monotonic() - started < 10
    timer.join()
    # The connection is usable afterwards.
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("binary", [False, True])
def test_interval_json_and_array_columns(server, binary):
    from psycopg.types.json import Jsonb

    with psycopg.connect(server.dsn, autocommit=True) as c:
        name = f"ija_{int(binary)}"
        c.execute(f"CREATE STREAM {name} (d INTERVAL, a INT[], t TEXT[], j JSONB)")
        c.execute(
            f"INSERT INTO {name} VALUES (INTERVAL '1 day 2 hours', make_array(1, 2), "
            "make_array('x', 'y'), '{\"a\": 1}')"
        )
        c.execute(
            f"INSERT INTO {name} VALUES (%s, %s, %s, %s)",
            (dt.timedelta(days=3, seconds=5), [3, None], ["p q"], Jsonb({"b": [2]})),
        )
        got = c.cursor(binary=binary).execute(f"SELECT * FROM {name}").fetchall()
        assert sorted(got, key=lambda r: r[0]) == [
            (dt.timedelta(days=1, seconds=7200), [1, 2], ["x", "y"], {"a": 1}),
            (dt.timedelta(days=3, seconds=5), [3, None], ["p q"], {"b": [2]}),
        ]


def test_csv_copy_tells_empty_strings_from_nulls(conn):
    conn.execute("CREATE STREAM csv_nulls (id INT, a TEXT, b TEXT)")
    with conn.cursor().copy("COPY csv_nulls FROM STDIN (FORMAT csv)") as cp:
        cp.write(b'1,,""\r\n2,"x,y",\n3,"","NULL"\n')
    with conn.cursor().copy("COPY csv_nulls FROM STDIN (FORMAT csv, NULL 'NULL')") as cp:
        cp.write(b'4,NULL,"NULL"\n')
    with conn.cursor().copy("COPY csv_nulls FROM STDIN") as cp:  # text: \N is NULL
        cp.write(b"5\t\\N\t\n")
    rows = conn.execute("SELECT id, a, b FROM csv_nulls ORDER BY id").fetchall()
    assert rows == [
        (1, None, ""), (2, "x,y", None), (3, "", "NULL"), (4, None, "NULL"), (5, None, ""),
    ]
