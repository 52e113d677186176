"""COPY in PostgreSQL's binary format: asyncpg's copy_records_to_table and
copy_from_query, psycopg's binary copy both ways, and malformed binary
data refused with nothing written."""

import asyncio
import datetime as dt
import struct
from decimal import Decimal

import asyncpg
import psycopg
import pytest
from psycopg import errors

COLUMNS = "id BIGINT NOT NULL, s TEXT, f DOUBLE PRECISION, n NUMERIC(12, 3), " \
          "ts TIMESTAMPTZ, d DATE, b BOOLEAN, i INT, by BYTEA"


def records(count):
    out = [
        (
            i, f"s{i}", i / 2, Decimal(f"{i}.125"),
            dt.datetime(2026, 11, 26, 12, 0, i % 60, 250_000, tzinfo=dt.timezone.utc),
            dt.date(2026, 1, 1 + i % 28), i % 2 == 0, -i, bytes([i % 256, 0, 255]),
        )
        for i in range(count)
    ]
    out.append((count, None, None, None, None, None, None, None, None))
    return out


def test_asyncpg_copy_records_round_trip(server):
    async def go():
        c = await asyncpg.connect(server.dsn)
        try:
            await c.execute(f"CREATE STREAM ab_copy ({COLUMNS}) WITH (partitions = 3)")
            recs = records(5000)
            status = await c.copy_records_to_table("ab_copy", records=recs)
            assert status == "COPY 5001"
            rows = await c.fetch("SELECT * FROM ab_copy ORDER BY id")
            assert [tuple(r) for r in rows] == recs
            # A subset of columns, the rest NULL.
            await c.copy_records_to_table("ab_copy", records=[(9999, "x")], columns=["id", "s"])
            row = await c.fetchrow("SELECT s, f, n FROM ab_copy WHERE id = 9999")
            assert tuple(row) == ("x", None, None)
        finally:
            await c.close()

    asyncio.run(go())


def test_psycopg_binary_copy_both_ways(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE STREAM pb_copy ({COLUMNS})")
        recs = records(100)
        types = ["int8", "text", "float8", "numeric", "timestamptz", "date", "bool", "int4", "bytea"]
        with conn.cursor().copy("COPY pb_copy FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(types)
            for r in recs:
                cp.write_row(r)
        with conn.cursor().copy(
            "COPY (SELECT * FROM pb_copy ORDER BY id) TO STDOUT (FORMAT BINARY)"
        ) as cp:
            cp.set_types(types)
            assert list(cp.rows()) == recs
        # The connection is ready for the next statement.
        assert conn.execute("SELECT count(*) FROM pb_copy").fetchone() == (101,)


def test_malformed_binary_copy_writes_nothing(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM bad_copy (id BIGINT, s TEXT)")
        with pytest.raises(errors.InvalidBinaryRepresentation):
            with conn.cursor().copy("COPY bad_copy FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(b"this is not PGCOPY data")
        with pytest.raises(errors.InvalidBinaryRepresentation):
            with conn.cursor().copy("COPY bad_copy FROM STDIN (FORMAT BINARY)") as cp:
                # A valid row, then a row whose int8 is 4 bytes long.
                cp.set_types(["int8", "text"])
                cp.write_row((1, "fine"))
                cp.write(b"\x00\x02\x00\x00\x00\x04\x00\x00\x00\x07\xff\xff\xff\xff")
        assert conn.execute("SELECT count(*) FROM bad_copy").fetchone() == (0,)
        with pytest.raises(errors.SyntaxError):
            conn.execute("COPY bad_copy FROM STDIN (FORMAT BINARY, HEADER)")


SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def test_hostile_binary_values_get_typed_errors(server):
    # Each of these panicked the session (a negative NUMERIC digit count,
    # an epoch shift past the range, a negative header-extension length)
    # or stored a wrapped value; now each is refused with its SQLSTATE,
    # nothing is written, and the connection goes on.
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE STREAM hostile_copy (n NUMERIC(12, 3), d DATE, ts TIMESTAMP)")
        null = None
        cases = [
            # ndigits = -1
            ((struct.pack("!hhHh", -1, 0, 0, 0), null, null), errors.InvalidBinaryRepresentation),
            # a digit of 10000
            ((struct.pack("!hhHhh", 1, 0, 0, 0, 10000), null, null),
             errors.InvalidBinaryRepresentation),
            # date 'infinity' and '-infinity' as PostgreSQL sends them
            ((null, struct.pack("!i", 2**31 - 1), null), errors.DatetimeFieldOverflow),
            ((null, struct.pack("!i", -(2**31)), null), errors.DatetimeFieldOverflow),
            # timestamp 'infinity' and one whose shift would overflow
            ((null, null, struct.pack("!q", 2**63 - 1)), errors.DatetimeFieldOverflow),
            ((null, null, struct.pack("!q", 2**63 - 2)), errors.DatetimeFieldOverflow),
        ]
        for fields, error in cases:
            raw = SIGNATURE + struct.pack("!ii", 0, 0) + struct.pack("!h", 3)
            for f in fields:
                raw += struct.pack("!i", -1) if f is None else struct.pack("!i", len(f)) + f
            raw += struct.pack("!h", -1)
            with pytest.raises(error):
                with conn.cursor().copy("COPY hostile_copy FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(raw)
            assert conn.execute("SELECT count(*) FROM hostile_copy").fetchone() == (0,)
        # A negative header-extension length.
        with pytest.raises(errors.InvalidBinaryRepresentation):
            with conn.cursor().copy("COPY hostile_copy FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(SIGNATURE + struct.pack("!ii", 0, -1) + struct.pack("!h", -1))
        # A good row still goes in on the same connection.
        with conn.cursor().copy("COPY hostile_copy FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["numeric", "date", "timestamp"])
            cp.write_row((Decimal("1.5"), dt.date(2026, 1, 2), dt.datetime(2026, 1, 2, 3, 4, 5)))
        assert conn.execute("SELECT n, d FROM hostile_copy").fetchall() == [
            (Decimal("1.500"), dt.date(2026, 1, 2))
        ]
