"""Load: 500 concurrent PostgreSQL connections for a while (LOAD_SECONDS,
default 45; docs/benchmarks.md has a 180-second run), mixing
INSERTs, queries, binary COPY, transaction blocks over two streams, and
clients that send garbage or vanish mid-message. Checks: every well-formed
request succeeds, every acknowledged row is there (and nothing of a
vanished COPY), and the server's memory stays bounded (it stops growing
once warm). The figures are printed (`pytest -s`) and written to
LOAD_REPORT when set.

    LOAD_SECONDS=180 pytest -s tests/python/test_load.py
"""

import asyncio
import json
import os
import random
import socket
import struct
import tempfile
import time
import urllib.request

import asyncpg

from conftest import Server

SECONDS = float(os.environ.get("LOAD_SECONDS", "45"))
KINDS = {"insert": 300, "query": 100, "copy": 50, "block": 30, "garbage": 20}


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def allocator_bytes(server) -> dict:
    """The allocator's gauges from /metrics: kind -> bytes."""
    with urllib.request.urlopen(f"http://{server.http}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("streamhouse_memory_bytes{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = int(float(line.rsplit(" ", 1)[1]))
    return out


class Stats:
    def __init__(self):
        self.ok = {k: 0 for k in KINDS}
        self.errors = {k: [] for k in KINDS}
        self.latency = {k: [] for k in KINDS}
        self.acked = {"load_a": 0, "load_b": 0}

    def done(self, kind, started):
        self.ok[kind] += 1
        self.latency[kind].append(time.monotonic() - started)


async def connect(server):
    return await asyncpg.connect(host=server.host, port=server.port, user="streamhouse",
                                 database="streamhouse", timeout=60, command_timeout=120)


async def insert_worker(server, w, stats, stop):
    conn = await connect(server)
    seq = 0
    try:
        while time.monotonic() < stop:
            rows = [(w, seq + i, f"w{w}") for i in range(10)]
            started = time.monotonic()
            try:
                await conn.executemany("INSERT INTO load_a VALUES ($1, $2, $3)", rows) \
                    if seq % 2 else await conn.execute(
                        "INSERT INTO load_a VALUES " + ", ".join(
                            f"({a}, {b}, '{c}')" for a, b, c in rows))
            except Exception as e:  # a well-formed request must not fail
                stats.errors["insert"].append(repr(e))
                continue
            stats.done("insert", started)
            stats.acked["load_a"] += len(rows)
            seq += 10
    finally:
        await conn.close()


# What a dashboard asks: the recent past (chunk pruning by append time
# keeps the work bounded while the stream grows), a point lookup, the
# small stream, the catalog.
RECENT = "_timestamp > now() - INTERVAL '5 seconds'"
QUERIES = [
    f"SELECT count(*) FROM load_a WHERE {RECENT}",
    f"SELECT w, count(*), max(seq) FROM load_a WHERE {RECENT} GROUP BY w ORDER BY 2 DESC LIMIT 5",
    f"SELECT * FROM load_a WHERE {RECENT} AND w = $1 ORDER BY seq DESC LIMIT 10",
    "SELECT count(*) FROM load_b WHERE tag = 'block'",
    "SELECT name, partitions FROM streamhouse.streams",
]


async def query_worker(server, w, stats, stop):
    conn = await connect(server)
    try:
        while time.monotonic() < stop:
            q = QUERIES[random.randrange(len(QUERIES))]
            started = time.monotonic()
            try:
                if "$1" in q:
                    await conn.fetch(q, w)
                else:
                    await conn.fetch(q)
            except Exception as e:
                stats.errors["query"].append(repr(e))
                continue
            stats.done("query", started)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def copy_worker(server, w, stats, stop):
    conn = await connect(server)
    seq = 0
    try:
        while time.monotonic() < stop:
            rows = [(100_000 + w, seq + i, "copy") for i in range(200)]
            started = time.monotonic()
            try:
                await conn.copy_records_to_table("load_a", records=rows)
            except Exception as e:
                stats.errors["copy"].append(repr(e))
                continue
            stats.done("copy", started)
            stats.acked["load_a"] += len(rows)
            seq += 200
    finally:
        await conn.close()


async def block_worker(server, w, stats, stop):
    conn = await connect(server)
    seq = 0
    try:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                async with conn.transaction():
                    await conn.execute("INSERT INTO load_a VALUES ($1, $2, 'block')", 200_000 + w, seq)
                    await conn.execute("INSERT INTO load_b VALUES ($1, $2, 'block')", 200_000 + w, seq)
            except Exception as e:
                stats.errors["block"].append(repr(e))
                continue
            stats.done("block", started)
            stats.acked["load_a"] += 1
            stats.acked["load_b"] += 1
            seq += 1
    finally:
        await conn.close()


def startup_bytes():
    params = b"user\x00streamhouse\x00database\x00streamhouse\x00\x00"
    body = struct.pack("!I", 196608) + params
    return struct.pack("!I", len(body) + 4) + body


async def garbage_worker(server, w, stats, stop):
    """Garbage, half messages, vanishing mid-COPY: none of it may hurt
    anyone else, and nothing of a vanished COPY may be written."""
    rng = random.Random(w)
    while time.monotonic() < stop:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            choice = rng.randrange(4)
            if choice == 0:
                writer.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
            else:
                writer.write(startup_bytes())
                await writer.drain()
                await asyncio.wait_for(reader.readuntil(b"Z\x00\x00\x00\x05"), 30)
                if choice == 1:  # half a Query, then gone
                    q = b"SELECT count(*) FROM load_a\x00"
                    writer.write(b"Q" + struct.pack("!I", len(q) + 4) + q[: len(q) // 2])
                elif choice == 2:  # a COPY that never ends
                    q = b"COPY load_b FROM STDIN\x00"
                    writer.write(b"Q" + struct.pack("!I", len(q) + 4) + q)
                    data = b"".join(b"%d\t%d\tvanished\n" % (300_000 + w, i) for i in range(500))
                    writer.write(b"d" + struct.pack("!I", len(data) + 4) + data)
                else:  # a message with a lying length
                    writer.write(b"P" + struct.pack("!I", 4 + 3) + b"\x00x\x00")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            writer.transport.abort()
        stats.done("garbage", started)
        await asyncio.sleep(rng.random() * 0.2)


async def run(server, pid):
    stats = Stats()
    stop = time.monotonic() + SECONDS
    workers = {"insert": insert_worker, "query": query_worker, "copy": copy_worker,
               "block": block_worker, "garbage": garbage_worker}
    samples = []
    allocator = []

    async def sample():
        while time.monotonic() < stop:
            samples.append((time.monotonic(), rss_bytes(pid), rss_bytes(pid, "RssAnon")))
            if len(samples) % 15 == 1:
                allocator.append(await asyncio.to_thread(allocator_bytes, server))
            await asyncio.sleep(1)

    tasks = [asyncio.create_task(sample())]
    w = 0
    for kind, n in KINDS.items():
        for _ in range(n):
            tasks.append(asyncio.create_task(workers[kind](server, w, stats, stop)))
            w += 1
    await asyncio.gather(*tasks)
    return stats, samples, allocator


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


# A small chunk cache, full within seconds: what grows after that is the
# server's own memory, not the cache filling up to its capacity (256 MiB by
# default, which would take minutes at this rate).
CACHE_BYTES = 32 << 20


def test_five_hundred_connections_under_mixed_load():
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "streamhouse.toml")
        with open(config, "w") as f:
            f.write(f"[log]\ncache_bytes = {CACHE_BYTES}\n")
        s = Server(os.path.join(d, "data"), extra_args=("--config", config))
        try:
            async def setup():
                conn = await connect(s)
                await conn.execute("CREATE STREAM load_a (w BIGINT, seq BIGINT, tag TEXT) "
                                   "WITH (partitions = 4)")
                await conn.execute("CREATE STREAM load_b (w BIGINT, seq BIGINT, tag TEXT)")
                await conn.close()
            asyncio.run(setup())
            started = time.monotonic()
            stats, samples, allocator = asyncio.run(run(s, s.proc.pid))
            elapsed = time.monotonic() - started
            # With every client gone: what the server still holds.
            after = allocator_bytes(s)

            async def check():
                conn = await connect(s)
                a = await conn.fetchval("SELECT count(*) FROM load_a")
                b = await conn.fetchval("SELECT count(*) FROM load_b")
                vanished = await conn.fetchval("SELECT count(*) FROM load_b WHERE tag = 'vanished'")
                chunks = await conn.fetchval("SELECT sum(chunks) FROM streamhouse.partitions")
                await conn.close()
                return a, b, vanished, chunks
            a, b, vanished, chunks = asyncio.run(check())
        finally:
            code = s.stop()
        assert code == 0

    rss = [r for _, r, _ in samples]
    warm = [r for t, r, _ in samples if t - samples[0][0] >= len(samples) / 3]
    report = {
        "seconds": round(elapsed, 1),
        "connections": sum(KINDS.values()),
        "requests": {k: stats.ok[k] for k in KINDS},
        "requests_per_second": {k: round(stats.ok[k] / elapsed, 1) for k in KINDS},
        "p50_ms": {k: round(percentile(stats.latency[k], 0.5) * 1000, 1) for k in KINDS},
        "p99_ms": {k: round(percentile(stats.latency[k], 0.99) * 1000, 1) for k in KINDS},
        "errors": {k: len(stats.errors[k]) for k in KINDS},
        "rows_acknowledged": stats.acked,
        "rows_found": {"load_a": a, "load_b": b},
        "rss_mib": {"start": rss[0] >> 20, "max": max(rss) >> 20,
                    "warm_min": min(warm) >> 20, "end": rss[-1] >> 20},
        "rss_mib_every_15s": [r >> 20 for r in rss[::15]],
        "anon_mib_every_15s": [a >> 20 for _, _, a in samples[::15]],
        "allocator_mib_every_15s": {
            kind: [m.get(kind, 0) >> 20 for m in allocator]
            for kind in ("allocated", "active", "resident", "retained")},
        "allocator_mib_after_load": {k: v >> 20 for k, v in after.items()},
        "chunks": chunks,
    }
    print(json.dumps(report, indent=2))
    if os.environ.get("LOAD_REPORT"):
        with open(os.environ["LOAD_REPORT"], "w") as f:
            json.dump(report, f, indent=2)

    # Every well-formed request succeeded.
    for kind in ("insert", "query", "copy", "block"):
        assert not stats.errors[kind], (kind, stats.errors[kind][:5])
        assert stats.ok[kind] > 0, kind
    assert stats.ok["garbage"] > 0
    # Every acknowledged row is there; nothing of a vanished COPY is.
    assert vanished == 0
    assert (a, b) == (stats.acked["load_a"], stats.acked["load_b"])
    # Memory is bounded: once warm it stops growing with the rows written
    # (the end within 1.5x of the warm minimum), and stays under 2 GiB.
    assert rss[-1] <= 1.5 * min(warm) + (64 << 20), report["rss_mib"]
    assert max(rss) < 2 << 30, report["rss_mib"]
    # The allocator's own account is exported and agrees it holds memory.
    assert all(m.get("allocated", 0) > 0 for m in allocator), allocator
