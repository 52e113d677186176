"""Fixtures for client tests: a real `streamhouse server` on loopback.

The binary comes from STREAMHOUSE_BIN (./scripts/test builds it and sets
it); each test module gets a fresh server and data directory, stopped with
SIGTERM afterwards (which must exit 0).
"""

import contextlib
import os
import signal
import subprocess
import tempfile

import pytest


def _binary() -> str:
    path = os.environ.get("STREAMHOUSE_BIN")
    if not path or not os.path.exists(path):
        pytest.fail(
            "STREAMHOUSE_BIN must name a built streamhouse binary: "
            "run the suite with ./scripts/test"
        )
    return path


class Server:
    def __init__(self, data_dir: str, extra_args=(), env=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMHOUSE_")} | (
            env or {}
        )
        self.proc = subprocess.Popen(
            [
                _binary(), "server",
                "--data-dir", data_dir,
                "--http-addr", "127.0.0.1:0",
                "--pg-addr", "127.0.0.1:0",
                "--flight-addr", "127.0.0.1:0",
                *([] if "--kafka-addr" in extra_args else ["--kafka-addr", "127.0.0.1:0"]),
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.dsn = None
        self.flight = None
        self.kafka = None
        self.http = None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("HTTP admin"):
                self.http = line.split()[2].split("://", 1)[1]
            if line.startswith("PostgreSQL"):
                self.dsn = line.split('"')[1]
            if line.startswith("Flight"):
                self.flight = line.split()[1]
            if line.startswith("Kafka") and "not started" not in line:
                self.kafka = line.split()[1]
            if line.startswith("Press Ctrl-C"):
                break
        if self.dsn is None:
            self.proc.kill()
            pytest.fail("server did not report a PostgreSQL address")
        hostport = self.dsn.split("@")[1].split("/")[0]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def wait_for(check, what, timeout=60):
    """`check()`'s first truthy answer, asked every 0.2 s; fails after
    `timeout` seconds naming `what`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def refused(conn, sql, state, *words):
    """`sql` fails with SQLSTATE `state` and a message holding `words`."""
    import psycopg

    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    assert e.value.sqlstate == state, (sql, e.value.sqlstate, str(e.value))
    for w in words:
        assert w in str(e.value), (sql, str(e.value))


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        try:
            yield s
        finally:
            assert s.stop() == 0, "SIGTERM must stop the server cleanly"


@contextlib.contextmanager
def password_server(password):
    """A server that requires passwords, its superuser `streamhouse`
    with `password`; stopped with SIGTERM afterwards (which must exit 0)."""
    with tempfile.TemporaryDirectory() as d:
        s = Server(d, ["--auth", "password"], env={"STREAMHOUSE_PASSWORD": password})
        try:
            yield s
        finally:
            assert s.stop() == 0, "SIGTERM must stop the server cleanly"


def superuser(s, password):
    """An autocommit psycopg connection of the superuser of `s`."""
    import psycopg

    return psycopg.connect(host=s.host, port=s.port, dbname="streamhouse",
                           user="streamhouse", password=password, autocommit=True)


def http_token(s, user, password):
    """A bearer token of `s`'s HTTP API for `user` (POST /v1/login)."""
    import base64
    import json
    import urllib.request

    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    r = urllib.request.Request(f"http://{s.http}/v1/login", method="POST",
                               headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(r) as answer:
        return json.load(answer)["token"]


def shared_store_args(prefix):
    """Server arguments for an agent of a cluster: a fresh PostgreSQL
    metadata database and S3 prefix, from the services the test command
    starts (`./scripts/test`)."""
    import time

    import psycopg

    pg = os.environ.get("STREAMHOUSE_TEST_POSTGRES")
    bucket = os.environ.get("STREAMHOUSE_TEST_S3_BUCKET")
    if not pg or not bucket:
        pytest.fail("STREAMHOUSE_TEST_POSTGRES and STREAMHOUSE_TEST_S3_BUCKET must be set: "
                    "run the suite with ./scripts/test")
    name = f"{prefix}_{int(time.time() * 1e6)}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return ["--metadata", f"{pg}/{name}", "--object-store", f"s3://{bucket}/{name}"]
