"""The producer/consumer API on the Flight port, driven with pyarrow.flight
only: DoPut on ["streams", name] with per-batch durable acknowledgements,
idempotent retries, DoGet with JSON tickets (partitions, start positions,
follow), consumer groups across processes, and clean errors."""

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_api import action, produce

SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("amount", pa.float64()),
])


@pytest.fixture(scope="module")
def client(server):
    c = flight.connect(server.flight)
    yield c
    c.close()


def sql(server, statement):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else None


def batch(ids, name="x"):
    return pa.record_batch([
        pa.array(ids, pa.int64()),
        pa.array([f"{name}{i}" for i in ids]),
        pa.array([i / 2 for i in ids], pa.float64()),
    ], schema=SCHEMA)


def consume(client, **ticket):
    return client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()


def test_produce_then_consume_round_trip(server, client):
    sql(server, "CREATE STREAM api_orders (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) "
                "WITH (partitions = 3)")
    batches = [batch(range(i * 100, i * 100 + 100)) for i in range(6)]
    acks = produce(client, "api_orders", batches)
    # One acknowledgement per batch, in order, with its offsets.
    assert [a["rows"] for a in acks] == [100] * 6
    assert all(not a["duplicate"] for a in acks)
    per_partition = {}
    for a in acks:
        (part,) = a["partitions"]
        assert part["base_offset"] == per_partition.get(part["partition"], 0)
        per_partition[part["partition"]] = part["base_offset"] + part["rows"]
    assert sum(per_partition.values()) == 600

    table = consume(client, stream="api_orders", **{"from": "earliest"})
    assert table.schema.names == ["id", "name", "amount", "_partition", "_offset", "_timestamp"]
    assert sorted(table["id"].to_pylist()) == list(range(600))
    rows = table.to_pylist()
    assert all(r["name"] == f"x{r['id']}" for r in rows)
    # Offsets are dense per partition.
    for p, end in per_partition.items():
        offs = sorted(r["_offset"] for r in rows if r["_partition"] == p)
        assert offs == list(range(end))
    # The SQL door sees exactly the same rows.
    assert sql(server, "SELECT count(*), sum(id) FROM api_orders") == [(600, sum(range(600)))]


def test_partitions_and_start_positions(server, client):
    sql(server, "CREATE STREAM api_pos (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) "
                "WITH (partitions = 2)")
    meta = [{"partition": 0}, {"partition": 1}, {"partition": 0}]
    produce(client, "api_pos", [batch([1, 2]), batch([3]), batch([4, 5])], meta)
    assert consume(client, stream="api_pos", partition=0)["id"].to_pylist() == [1, 2, 4, 5]
    assert sorted(consume(client, stream="api_pos", partition=[0, 1])["id"].to_pylist()) == [1, 2, 3, 4, 5]
    assert consume(client, stream="api_pos", partition=0, **{"from": 2})["id"].to_pylist() == [4, 5]
    assert consume(client, stream="api_pos", **{"from": "latest"}).num_rows == 0
    time.sleep(0.05)
    cut = datetime.now(timezone.utc)
    time.sleep(0.05)
    produce(client, "api_pos", [batch([6])], [{"partition": 1}])
    later = consume(client, stream="api_pos", **{"from": cut.isoformat()})
    assert later["id"].to_pylist() == [6]
    assert later["_timestamp"][0].as_py() >= cut


def test_idempotent_retries_are_written_once(server, client):
    sql(server, "CREATE STREAM api_idem (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)")
    first = produce(client, "api_idem", [batch([1, 2, 3])], [{"producer_id": "p1", "sequence": 1}])
    again = produce(client, "api_idem", [batch([1, 2, 3])], [{"producer_id": "p1", "sequence": 1}])
    assert not first[0]["duplicate"] and again[0]["duplicate"]
    assert again[0]["partitions"] == first[0]["partitions"]
    produce(client, "api_idem", [batch([4])], [{"producer_id": "p1", "sequence": 2}])
    assert sorted(consume(client, stream="api_idem")["id"].to_pylist()) == [1, 2, 3, 4]


def test_follow_delivers_new_rows_as_they_commit(server, client):
    sql(server, "CREATE STREAM api_tail (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)")
    got, done = [], threading.Event()

    def tail():
        reader = client.do_get(flight.Ticket(json.dumps(
            {"stream": "api_tail", "from": "earliest", "follow": True}).encode()))
        for chunk in reader:
            got.extend(chunk.data["id"].to_pylist())
            if len(got) >= 30:
                done.set()
                return

    t = threading.Thread(target=tail, daemon=True)
    t.start()
    for i in range(3):
        produce(client, "api_tail", [batch(range(i * 10, i * 10 + 10))])
        time.sleep(0.1)
    assert done.wait(10), f"follow read got {len(got)} of 30 rows"
    assert got == list(range(30))


def test_bad_requests_get_clear_statuses_and_write_nothing(server, client):
    sql(server, "CREATE STREAM api_bad (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)")
    with pytest.raises(flight.FlightError if False else Exception) as e:
        consume(client, stream="no_such_stream")
    assert "NOT_FOUND" in str(e.value) and "no_such_stream" in str(e.value)
    for ticket, words in [
        (b"{not json", "bad consumer ticket"),
        (json.dumps({"stream": "api_bad", "partition": 7}).encode(), "out of range"),
        (json.dumps({"stream": "api_bad", "from": "yesterday"}).encode(), "not a position"),
        (json.dumps({"stream": "api_bad", "colour": "red"}).encode(), "unknown field"),
    ]:
        with pytest.raises(Exception) as e:
            client.do_get(flight.Ticket(ticket)).read_all()
        assert words in str(e.value)

    # A batch of the wrong schema is refused whole.
    wrong = pa.record_batch([pa.array([1, 2], pa.int32())], names=["id"])
    with pytest.raises(Exception) as e:
        writer, reader = client.do_put(flight.FlightDescriptor.for_path("streams", "api_bad"),
                                       wrong.schema)
        writer.write_batch(wrong)
        writer.done_writing()
        writer.close()
    assert "INVALID_ARGUMENT" in str(e.value) and "does not match the schema" in str(e.value)
    # A good batch, then one that breaks NOT NULL: the first is acknowledged
    # and kept, the second refused whole, and the call ends with the error.
    nullable = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()),
                          pa.field("amount", pa.float64())])
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("streams", "api_bad"), nullable)
    writer.write_batch(batch([1, 2]).cast(nullable))
    writer.write_batch(pa.record_batch([pa.array([3, None], pa.int64()), pa.array(["a", "b"]),
                                        pa.array([1.0, 2.0])], schema=nullable))
    writer.done_writing()
    acks = []
    with pytest.raises(Exception) as e:
        while (buf := reader.read()) is not None:
            acks.append(json.loads(buf.to_pybytes()))
        writer.close()
    assert "INVALID_ARGUMENT" in str(e.value)
    assert [a["rows"] for a in acks] == [2]
    assert sql(server, "SELECT id FROM api_bad ORDER BY id") == [(1,), (2,)]

    with pytest.raises(Exception) as e:
        produce(client, "no_such_stream", [batch([1])])
    assert "NOT_FOUND" in str(e.value)
    with pytest.raises(Exception) as e:
        produce(client, "api_bad", [batch([1])], [{"sequence": 3}])
    assert "producer_id" in str(e.value)
    with pytest.raises(Exception) as e:
        writer, reader = client.do_put(flight.FlightDescriptor.for_path("tables", "x"), SCHEMA)
        writer.write_batch(batch([1]))
        writer.done_writing()
        writer.close()
    assert "streams" in str(e.value)
    with pytest.raises(Exception) as e:
        action(client, "no_such_action", {})
    assert "unknown action" in str(e.value)

    # A client that vanishes mid-read does not hurt the server.
    produce(client, "api_bad", [batch(range(100, 5100))])
    reader = client.do_get(flight.Ticket(json.dumps({"stream": "api_bad", "follow": True}).encode()))
    reader.read_chunk()
    del reader
    assert sql(server, "SELECT count(*) FROM api_bad") == [(5002,)]


def test_group_actions_commit_describe_reset(server, client):
    sql(server, "CREATE STREAM api_grp (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) "
                "WITH (partitions = 2)")
    produce(client, "api_grp", [batch([1, 2, 3]), batch([4, 5])], [{"partition": 0}, {"partition": 1}])
    a = action(client, "join_group", {"group": "g1", "stream": "api_grp", "member": "a"})[0]
    assert a["partitions"] == [0, 1]
    b = action(client, "join_group", {"group": "g1", "stream": "api_grp", "member": "b",
                                      "session_timeout_ms": 60000})[0]
    assert b["partitions"] == [1] and b["generation"] > a["generation"]
    # a was rebalanced: its stale generation and b's partition are fenced.
    with pytest.raises(Exception) as e:
        action(client, "commit_offsets", {"group": "g1", "stream": "api_grp", "member": "a",
                                          "generation": a["generation"], "offsets": {"0": 1}})
    assert "generation" in str(e.value)
    with pytest.raises(Exception) as e:
        action(client, "commit_offsets", {"group": "g1", "stream": "api_grp", "member": "a",
                                          "offsets": {"1": 1}})
    assert "not assigned" in str(e.value)
    action(client, "commit_offsets", {"group": "g1", "stream": "api_grp", "member": "a",
                                      "generation": b["generation"], "offsets": {"0": 2}})
    (d,) = action(client, "describe_group", {"group": "g1"})
    assert [m["member"] for m in d["members"]] == ["a", "b"]
    assert [(p["partition"], p["committed"], p["end"], p["lag"], p["member"])
            for p in d["partitions"]] == [(0, 2, 3, 1, "a"), (1, None, 2, 2, "b")]
    # A read with the group resumes from its committed offsets.
    assert consume(client, stream="api_grp", group="g1", partition=0)["id"].to_pylist() == [3]
    (groups,) = action(client, "list_groups", {})
    assert {"group": "g1", "stream": "api_grp", "generation": d["generation"], "members": 2} in groups
    # Resetting needs the group to be idle.
    with pytest.raises(Exception) as e:
        action(client, "reset_offsets", {"group": "g1", "stream": "api_grp", "to": "earliest"})
    assert "live members" in str(e.value)
    action(client, "leave_group", {"group": "g1", "member": "a"})
    action(client, "leave_group", {"group": "g1", "member": "b"})
    (r,) = action(client, "reset_offsets", {"group": "g1", "stream": "api_grp", "to": "latest"})
    assert r["offsets"] == {"0": 3, "1": 2}
    assert consume(client, stream="api_grp", group="g1").num_rows == 0
    (r,) = action(client, "reset_offsets", {"group": "g1", "stream": "api_grp", "to": "earliest"})
    assert r["offsets"] == {"0": 0, "1": 0}
    assert consume(client, stream="api_grp", group="g1").num_rows == 5


def test_consumer_group_of_two_processes_splits_and_resumes(server, client, tmp_path):
    sql(server, "CREATE STREAM api_cg (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION) "
                "WITH (partitions = 4)")
    meta, batches = [], []
    for p in range(4):
        for k in range(4):
            ids = list(range(p * 1000 + k * 25, p * 1000 + k * 25 + 25))
            batches.append(batch(ids))
            meta.append({"partition": p})
    produce(client, "api_cg", batches, meta)
    script = os.path.join(os.path.dirname(__file__), "group_consumer.py")
    env = dict(os.environ, GROUP_SIZE="2")

    def run(limit):
        procs = [subprocess.Popen([sys.executable, script, server.flight, "api_cg", "cg", m,
                                   str(tmp_path / f"{m}.jsonl"), str(limit)], env=env)
                 for m in ("m1", "m2")]
        for p in procs:
            assert p.wait(timeout=60) == 0

    # First run: each member commits 70 records, then "crashes".
    run(70)
    first = [json.loads(line) for m in ("m1", "m2") for line in open(tmp_path / f"{m}.jsonl")]
    assert len(first) == 140
    by_member = {m: {p for (mm, p, _, _) in first if mm == m} for m in ("m1", "m2")}
    assert by_member["m1"].isdisjoint(by_member["m2"]), by_member
    # Second run: they resume from the committed offsets and finish.
    run(0)
    records = [json.loads(line) for m in ("m1", "m2") for line in open(tmp_path / f"{m}.jsonl")]
    ids = sorted(r[3] for r in records)
    assert ids == sorted(p * 1000 + i for p in range(4) for i in range(100)), "lost or duplicated"
    (d,) = action(client, "describe_group", {"group": "cg"})
    assert all(p["lag"] == 0 for p in d["partitions"])


def test_internal_streams_are_hidden_and_refuse_writes_from_every_door(server, client):
    import urllib.request

    sql(server, "CREATE STREAM api_src (id BIGINT NOT NULL, name TEXT, amount DOUBLE PRECISION)")
    produce(client, "api_src", [batch([1, 2, 3])])
    sql(server, "CREATE MATERIALIZED VIEW api_counts AS SELECT name, count(*) AS n "
                "FROM api_src GROUP BY name")

    def listed(path):
        with urllib.request.urlopen(f"http://{server.http}{path}") as r:
            return {s["name"]: s["kind"] for s in json.loads(r.read())["streams"]}

    # Listings show users' streams; the changelog only when asked for.
    assert "api_src" in listed("/v1/streams")
    assert not [n for n in listed("/v1/streams") if n.startswith("__")]
    internal = {n: k for n, k in listed("/v1/streams?internal=true").items()
                if n.startswith("__changelog__api_counts")}
    assert list(internal.values()) == ["view_changelog"], internal
    (changelog,) = internal
    names = [r[0] for r in sql(server, "SELECT name FROM streamhouse.streams")]
    assert "api_src" in names and changelog not in names
    # A producer cannot write into it, nor create a reserved name.
    with pytest.raises(flight.FlightUnauthorizedError) as e:
        produce(client, changelog, [batch([9])])
    assert "belongs to the system" in str(e.value)
    with pytest.raises(psycopg.errors.ReservedName):
        sql(server, 'CREATE STREAM "__changelog__mine" (a BIGINT)')
    # The view is untouched.
    assert sql(server, "SELECT sum(n) FROM api_counts") == [(3,)]
