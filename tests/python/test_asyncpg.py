"""asyncpg against StreamHouse: it uses the extended protocol with binary
formats for parameters and results."""

import asyncio
import datetime as dt
from decimal import Decimal

import asyncpg


def run(coro):
    return asyncio.run(coro)


def test_binary_round_trip_and_parameters(server):
    async def go():
        conn = await asyncpg.connect(host=server.host, port=server.port, user="streamhouse", database="streamhouse")
        try:
            await conn.execute(
                "CREATE STREAM IF NOT EXISTS a (id BIGINT, name TEXT, score DOUBLE PRECISION, "
                "n NUMERIC(10, 2), ok BOOLEAN, d DATE, ts TIMESTAMP) WITH (partitions = 2)"
            )
            ts = dt.datetime(2026, 1, 2, 3, 4, 5, 600000)
            await conn.execute(
                "INSERT INTO a VALUES ($1, $2, $3, $4, $5, $6, $7)",
                7, "seven", 7.5, Decimal("7.25"), True, dt.date(2026, 1, 2), ts,
            )
            row = await conn.fetchrow("SELECT * FROM a WHERE id = $1", 7)
            assert tuple(row) == (7, "seven", 7.5, Decimal("7.25"), True, dt.date(2026, 1, 2), ts)
            assert await conn.fetchval("SELECT count(*) FROM a WHERE score > $1", 1.0) == 1
            stmt = await conn.prepare("SELECT name FROM a WHERE id = $1")
            for _ in range(3):
                assert await stmt.fetchval(7) == "seven"
        finally:
            await conn.close()

    run(go())


def test_errors_map_to_asyncpg_exceptions(server):
    async def go():
        conn = await asyncpg.connect(host=server.host, port=server.port, user="streamhouse")
        try:
            try:
                await conn.fetch("SELECT * FROM missing")
            except asyncpg.UndefinedTableError as e:
                assert e.sqlstate == "42P01"
            else:
                raise AssertionError("expected UndefinedTableError")
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    run(go())


def test_cursors_fetch_in_chunks(server):
    """Execute with a row limit suspends the portal; later Executes resume it."""

    async def go():
        conn = await asyncpg.connect(host=server.host, port=server.port, user="streamhouse")
        try:
            await conn.execute("CREATE STREAM IF NOT EXISTS cur (id BIGINT)")
            await conn.execute("INSERT INTO cur SELECT * FROM generate_series(1, 1000)")
            async with conn.transaction():
                cur = await conn.cursor("SELECT id FROM cur ORDER BY id")
                assert [r[0] for r in await cur.fetch(10)] == list(range(1, 11))
                assert [r[0] for r in await cur.fetch(5)] == list(range(11, 16))
                seen = [r[0] async for r in conn.cursor("SELECT id FROM cur ORDER BY id", prefetch=100)]
                assert seen == list(range(1, 1001))
        finally:
            await conn.close()

    run(go())


def test_pooled_connections_are_reset_and_reused(server):
    """A pool resets each connection it takes back (pg_advisory_unlock_all,
    CLOSE ALL, UNLISTEN *, RESET ALL) before handing it out again."""

    async def go():
        pool = await asyncpg.create_pool(
            host=server.host, port=server.port, user="streamhouse", min_size=2, max_size=2
        )
        try:
            async with pool.acquire() as c:
                await c.execute("SET application_name = 'pooled'")
            for _ in range(5):
                async with pool.acquire() as c:
                    assert await c.fetchval("SELECT 40 + $1::BIGINT", 2) == 42
                    assert await c.fetchval("SHOW application_name") == ""
        finally:
            await pool.close()

    run(go())


def test_arrays_in_results_and_parameters(server):
    """Array types make asyncpg introspect them through pg_catalog (its
    recursive type query) before it can decode or encode them."""

    async def go():
        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT make_array(1, 2, 3)") == [1, 2, 3]
            assert await conn.fetchval("SELECT make_array('a b', NULL, 'c\"d')") == [
                "a b", None, 'c"d'
            ]
            assert await conn.fetchval("SELECT make_array(1.5::float8, 2.25)") == [1.5, 2.25]
            assert await conn.fetchval("SELECT $1::int[]", [4, None, 6]) == [4, None, 6]
            assert await conn.fetchval(
                "SELECT array_length($1::text[], 1)", ["x", "y"]
            ) == 2
            await conn.execute("CREATE STREAM arr (k TEXT, v BIGINT)")
            await conn.execute("INSERT INTO arr VALUES ('a', 1), ('a', 2), ('b', 3)")
            rows = await conn.fetch(
                "SELECT k, array_agg(v ORDER BY v) AS vs FROM arr GROUP BY k ORDER BY k"
            )
            assert [(r["k"], r["vs"]) for r in rows] == [("a", [1, 2]), ("b", [3])]
        finally:
            await conn.close()

    run(go())


def test_interval_json_and_array_columns(server):
    import datetime as dt
    import json

    async def go():
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute(
                "CREATE STREAM ij (d INTERVAL, j JSON, jb JSONB, a INT[], t TEXT[])"
            )
            # asyncpg's default json/jsonb codecs take and give text.
            row = (
                dt.timedelta(days=3, seconds=5), json.dumps({"a": [1, 2]}),
                json.dumps({"b": None}), [1, None, 3], ["x", "y z"],
            )
            await conn.execute("INSERT INTO ij VALUES ($1, $2, $3, $4, $5)", *row)
            got = await conn.fetchrow("SELECT * FROM ij")
            assert (got[0], json.loads(got[1]), json.loads(got[2]), got[3], got[4]) == (
                row[0], {"a": [1, 2]}, {"b": None}, row[3], row[4]
            )
        finally:
            await conn.close()

    run(go())


def test_cancel_on_timeout_stops_the_query(server):
    """asyncpg sends a CancelRequest when a call times out."""
    import time

    async def go():
        conn = await asyncpg.connect(server.dsn)
        try:
            started = time.monotonic()
            try:
                await conn.fetchval(
                    "SELECT count(*) FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3",
                    timeout=0.5,
                )
                raise AssertionError("expected a timeout")
            except asyncio.TimeoutError:
                pass
            assert time.monotonic() - started < 10
            assert await conn.fetchval("SELECT 7") == 7
        finally:
            await conn.close()

    run(go())
