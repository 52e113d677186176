"""Clients in other languages against StreamHouse, each a program that
checks its own results and exits non-zero on the first failure:
node-postgres (tests/node, node's test runner), pgjdbc (tests/jdbc, a
single-file Java program) and kafkajs (tests/node/kafkajs_client.mjs)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PGJDBC = "/usr/share/java/postgresql.jar"


def run(cmd, env=None):
    p = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_node_postgres(server):
    out = run(
        ["node", "--test", "tests/node/"],
        env={"STREAMHOUSE_DSN": server.dsn, "TZ": "UTC"},
    )
    assert "# fail 0" in out and "# pass 8" in out, out


def test_pgjdbc(server):
    url = f"jdbc:postgresql://{server.host}:{server.port}/streamhouse"
    out = run(["java", "-cp", PGJDBC, "tests/jdbc/JdbcClient.java", url])
    assert out.strip() == "jdbc ok"


def test_kafkajs(server):
    out = run(
        ["node", "--test", "tests/node/kafkajs_client.mjs"],
        env={"STREAMHOUSE_KAFKA": server.kafka, "STREAMHOUSE_DSN": server.dsn},
    )
    assert "# fail 0" in out and "# pass 3" in out, out
