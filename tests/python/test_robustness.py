"""Bad clients must not hurt the server: broken protocol messages, huge
lengths, clients that vanish mid-statement, many connections at once, and
statements past their limits (time, memory, result size).
After each, the server still answers and nothing acknowledged is lost."""

import asyncio
import socket
import struct

import asyncpg
import psycopg


def alive(server) -> int:
    with psycopg.connect(server.dsn, autocommit=True) as c:
        return c.execute("SELECT 1").fetchone()[0]


def raw(server) -> socket.socket:
    s = socket.create_connection((server.host, server.port), timeout=10)
    return s


def read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return out


def test_malformed_startup_packets(server):
    # Garbage instead of a startup packet.
    s = raw(server)
    s.sendall(b"\x00\x00\x00\x08garbage!")
    read_all(s)
    s.close()
    # A length field that claims a gigabyte.
    s = raw(server)
    s.sendall(struct.pack("!I", 1 << 30) + b"\x00\x03\x00\x00")
    s.close()
    # A truncated packet, then silence and disconnect.
    s = raw(server)
    s.sendall(b"\x00\x00")
    s.close()
    assert alive(server) == 1


def test_huge_parameter_numbers_are_refused(server):
    # A placeholder number used to size the parameter list: this statement
    # aborted the whole server process.
    for sql in ("SELECT $99999999999", "SELECT $65536::int"):
        with psycopg.connect(server.dsn, autocommit=True) as c:
            try:
                c.execute(sql, prepare=True)
                raise AssertionError(f"{sql}: expected an error")
            except psycopg.errors.SyntaxError as e:
                assert "parameter number too large" in str(e), e
            assert c.execute("SELECT 1").fetchone()[0] == 1
    assert alive(server) == 1


def startup(s: socket.socket):
    params = b"user\x00streamhouse\x00database\x00streamhouse\x00\x00"
    body = struct.pack("!I", 196608) + params
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    buf = b""
    while b"Z\x00\x00\x00\x05" not in buf:  # ReadyForQuery
        chunk = s.recv(4096)
        assert chunk, "server closed during startup"
        buf += chunk


def test_oversized_and_unknown_messages_after_startup(server):
    s = raw(server)
    startup(s)
    # A Query message claiming 1 GiB: refused, the connection is closed.
    s.sendall(b"Q" + struct.pack("!I", 1 << 30) + b"SELECT 1")
    read_all(s)
    s.close()
    s = raw(server)
    startup(s)
    # An unknown message type.
    s.sendall(b"\x7f" + struct.pack("!I", 4))
    read_all(s)
    s.close()
    assert alive(server) == 1


def test_a_message_body_shorter_than_its_fields_is_a_protocol_error(server):
    # Parse whose body ends before its parameter-type count, Bind whose
    # counts promise more than the body holds, Execute with no row limit:
    # each read past its body (a panic, or the next message's bytes).
    for body in (b"P" + struct.pack("!I", 4 + 3) + b"\x00x\x00",
                 b"B" + struct.pack("!I", 4 + 4) + b"\x00\x00\x00\x05",
                 b"E" + struct.pack("!I", 4 + 1) + b"\x00"):
        s = raw(server)
        startup(s)
        s.sendall(body + b"S\x00\x00\x00\x04")
        answer = read_all(s)
        s.close()
        assert answer.startswith(b"E"), answer
        assert b"08P01" in answer, answer
    assert alive(server) == 1


def test_client_vanishing_mid_copy_loses_nothing_acknowledged(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("CREATE STREAM IF NOT EXISTS vanish (id BIGINT) WITH (partitions = 2)")
        with c.cursor() as cur:
            with cur.copy("COPY vanish FROM STDIN") as copy:
                for i in range(1000):
                    copy.write_row((i,))
    # Start another COPY and drop the connection in the middle of it.
    s = raw(server)
    startup(s)
    q = b"COPY vanish FROM STDIN\x00"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    data = b"".join(b"%d\n" % i for i in range(1000, 2000))
    s.sendall(b"d" + struct.pack("!I", len(data) + 4) + data)
    s.close()  # no CopyDone: nothing of it may be written
    # And one that vanishes in the middle of a query's results.
    s = raw(server)
    startup(s)
    q = b"SELECT * FROM vanish, generate_series(1, 100)\x00"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    s.recv(100)
    s.close()
    with psycopg.connect(server.dsn, autocommit=True) as c:
        assert c.execute("SELECT count(*), sum(id) FROM vanish").fetchone() == (1000, 499500)


def test_a_hundred_concurrent_connections(server):
    async def worker(i: int):
        conn = await asyncpg.connect(host=server.host, port=server.port, user="streamhouse")
        try:
            await conn.execute(
                "INSERT INTO many VALUES ($1, $2)", i, f"worker-{i}"
            )
            return await conn.fetchval("SELECT count(*) FROM many WHERE id = $1", i)
        finally:
            await conn.close()

    async def go():
        conn = await asyncpg.connect(host=server.host, port=server.port, user="streamhouse")
        await conn.execute("CREATE STREAM IF NOT EXISTS many (id BIGINT, who TEXT) WITH (partitions = 4)")
        results = await asyncio.gather(*(worker(i) for i in range(100)))
        assert results == [1] * 100
        assert await conn.fetchval("SELECT count(DISTINCT id) FROM many") == 100
        await conn.close()

    asyncio.run(go())
    assert alive(server) == 1


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def until_ready(s: socket.socket) -> bytes:
    """Reads up to and including ReadyForQuery."""
    buf = b""
    while not buf.endswith(b"Z\x00\x00\x00\x05I") and not buf.endswith(b"Z\x00\x00\x00\x05E"):
        chunk = s.recv(65536)
        assert chunk, f"server closed the connection; got {buf!r}"
        buf += chunk
    return buf


def test_bind_format_counts_that_do_not_match_are_protocol_errors(server):
    # A Bind's format codes are 0, 1, or one per parameter / column; other
    # counts indexed past the end of the list and killed the session.
    s = raw(server)
    startup(s)
    parse = msg(b"P", b"\x00SELECT $1::int, $2::int, $3::int\x00\x00\x00")
    params = b"".join(struct.pack("!I", 1) + b"7" for _ in range(3))
    cases = [
        # two parameter formats for three parameters
        struct.pack("!hhh", 2, 0, 0) + struct.pack("!h", 3) + params + struct.pack("!h", 0),
        # two result formats for three columns
        struct.pack("!h", 0) + struct.pack("!h", 3) + params + struct.pack("!hhh", 2, 0, 1),
    ]
    for bind_tail in cases:
        s.sendall(parse + msg(b"B", b"\x00\x00" + bind_tail) + msg(b"D", b"P\x00")
                  + msg(b"E", b"\x00\x00\x00\x00\x00") + msg(b"S", b""))
        reply = until_ready(s)
        assert b"C08P01" in reply, reply
        assert b"formats but" in reply, reply
    # The same connection still answers, with matching counts too.
    bind = (struct.pack("!hh", 1, 0) + struct.pack("!h", 3) + params
            + struct.pack("!hhhh", 3, 0, 0, 0))
    s.sendall(parse + msg(b"B", b"\x00\x00" + bind) + msg(b"E", b"\x00\x00\x00\x00\x00")
              + msg(b"S", b""))
    reply = until_ready(s)
    assert b"SELECT 1\x00" in reply and b"SERROR\x00" not in reply, reply
    s.close()
    assert alive(server) == 1


def test_limits_stop_a_statement_and_not_the_server(server):
    from psycopg import errors
    import pytest

    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("SET statement_timeout = '300ms'")
        with pytest.raises(errors.QueryCanceled) as e:
            c.execute("SELECT count(*) FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3")
        assert "statement timeout" in str(e.value)
        c.execute("SET statement_timeout = 0")
        with pytest.raises(errors.ProgramLimitExceeded):
            c.execute("SELECT repeat('x', 2000000000)")
        c.execute("SET query_memory_limit = '4MB'")
        with pytest.raises(errors.OutOfMemory):
            c.execute(
                "SELECT count(*) FROM generate_series(1, 2000000) AS a(v) "
                "JOIN generate_series(1, 2000000) AS b(v) ON a.v = b.v"
            )
        assert c.execute("SELECT 41 + 1").fetchone() == (42,)
    assert alive(server) == 1
