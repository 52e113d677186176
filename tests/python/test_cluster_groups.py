"""A consumer group whose members are connected to different agents of one
cluster (a shared PostgreSQL metadata store and S3-compatible bucket): they
share one assignment, each reads only its partitions, and a member cannot
commit offsets for a partition the group gave to the other.
"""

import json
import os
import tempfile
import time

import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import Server


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with ./scripts/test")
    return value


@pytest.fixture(scope="module")
def cluster():
    pg = _env("STREAMHOUSE_TEST_POSTGRES")
    bucket = _env("STREAMHOUSE_TEST_S3_BUCKET")
    name = f"groups_{int(time.time() * 1e6)}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    args = ["--metadata", f"{pg}/{name}", "--object-store", f"s3://{bucket}/{name}"]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        agents = [Server(a, args), Server(b, args)]
        try:
            yield agents
        finally:
            for s in agents:
                assert s.stop() == 0, "SIGTERM must stop the agent cleanly"


def action(client, kind, body):
    return [json.loads(r.body.to_pybytes())
            for r in client.do_action(flight.Action(kind, json.dumps(body).encode()))]


def test_members_on_different_agents_share_one_assignment(cluster):
    a_agent, b_agent = cluster
    with psycopg.connect(a_agent.dsn, autocommit=True) as c:
        c.execute("CREATE STREAM clicks (id BIGINT NOT NULL, page TEXT) WITH (partitions = 4)")
    a = flight.connect(a_agent.flight)
    b = flight.connect(b_agent.flight)
    # 10 rows in each partition, through the producer API of agent a.
    for p in range(4):
        batch = pa.record_batch([pa.array(range(p * 10, p * 10 + 10), pa.int64()),
                                 pa.array([f"/p{p}"] * 10)], names=["id", "page"])
        writer, reader = a.do_put(
            flight.FlightDescriptor.for_path("streams", "clicks"), batch.schema)
        writer.write_with_metadata(batch, pa.py_buffer(json.dumps({"partition": p}).encode()))
        writer.done_writing()
        reader.read()
        writer.close()

    first = action(a, "join_group", {"group": "g", "stream": "clicks", "member": "ma",
                                     "session_timeout_ms": 60000})[0]
    assert first["partitions"] == [0, 1, 2, 3]
    mb = action(b, "join_group", {"group": "g", "stream": "clicks", "member": "mb",
                                  "session_timeout_ms": 60000})[0]
    ma = action(a, "heartbeat", {"group": "g", "member": "ma"})[0]
    assert ma["generation"] == mb["generation"] > first["generation"]
    assert (ma["partitions"], mb["partitions"]) == ([0, 1], [2, 3])
    # Either agent describes the same group.
    for client in (a, b):
        (state,) = action(client, "describe_group", {"group": "g"})
        members = {m["member"]: m["partitions"] for m in state["members"]}
        assert members == {"ma": [0, 1], "mb": [2, 3]}, state

    # Each member reads its own partitions, from the agent it talks to.
    def read(client, member):
        ticket = {"stream": "clicks", "group": "g", "member": member, "from": "earliest"}
        t = client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
        return sorted(t.column("id").to_pylist()), sorted(set(t.column("_partition").to_pylist()))
    ids_a, parts_a = read(a, "ma")
    ids_b, parts_b = read(b, "mb")
    assert (parts_a, parts_b) == ([0, 1], [2, 3])
    assert sorted(ids_a + ids_b) == list(range(40))

    # Commits: each member its own partitions; not the other's, nor from
    # an old generation.
    gen = ma["generation"]
    action(a, "commit_offsets", {"group": "g", "stream": "clicks", "member": "ma",
                                 "generation": gen, "offsets": {"0": 10, "1": 10}})
    action(b, "commit_offsets", {"group": "g", "stream": "clicks", "member": "mb",
                                 "generation": gen, "offsets": {"2": 10, "3": 5}})
    with pytest.raises(pa.ArrowException) as e:
        action(a, "commit_offsets", {"group": "g", "stream": "clicks", "member": "ma",
                                     "generation": gen, "offsets": {"2": 3}})
    assert "not assigned" in str(e.value)
    with pytest.raises(pa.ArrowException) as e:
        action(b, "commit_offsets", {"group": "g", "stream": "clicks", "member": "mb",
                                     "generation": first["generation"], "offsets": {"2": 3}})
    assert "generation" in str(e.value)
    (state,) = action(a, "describe_group", {"group": "g"})
    committed = {p["partition"]: p["committed"] for p in state["partitions"]}
    assert committed == {0: 10, 1: 10, 2: 10, 3: 5}, state

    # A member leaving through its agent rebalances the other at once.
    action(b, "leave_group", {"group": "g", "member": "mb"})
    ma = action(a, "heartbeat", {"group": "g", "member": "ma"})[0]
    assert ma["partitions"] == [0, 1, 2, 3] and ma["generation"] > gen
