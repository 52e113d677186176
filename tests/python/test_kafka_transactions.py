"""Kafka transactions through the Kafka door with confluent-kafka
(librdkafka): commit and abort seen by both isolation levels and by SQL,
fencing of an older instance of a transactional id, read-process-write
with the group's offsets committed in the transaction, a SIGKILL in the
middle of one, and transactions whose records reach both agents of a
cluster."""

import signal
import socket
import tempfile
import time

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import Server, wait_for
from test_cluster_groups import cluster  # noqa: F401 (a fixture)
from test_kafka import consume, create_topic


def txn_producer(server, tid, **conf):
    p = Producer({"bootstrap.servers": server.kafka, "transactional.id": tid,
                  "linger.ms": 5, **conf})
    p.init_transactions(30)
    return p


def count(server, stream):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        return c.execute(f"SELECT count(*) FROM {stream}").fetchone()[0]


def values(server, stream):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        rows = c.execute(f"SELECT value FROM {stream}").fetchall()
    return sorted(bytes(r[0]).decode() for r in rows)


def read_all(server, topic, isolation, expect):
    """Every record of `topic` read with `isolation`: exactly `expect`."""
    return consume(server, topic, expect, **{"isolation.level": isolation})


def test_commits_are_seen_whole_and_aborts_never(server):
    create_topic(server, "tx_basic", 2)
    p = txn_producer(server, "basic")
    p.begin_transaction()
    for i in range(100):
        p.produce("tx_basic", value=f"a{i}".encode(), partition=i % 2)
    assert p.flush(30) == 0
    # Delivered to the agent, not yet committed: no reader sees them.
    assert count(server, "tx_basic") == 0
    p.commit_transaction(30)
    assert count(server, "tx_basic") == 100

    p.begin_transaction()
    for i in range(50):
        p.produce("tx_basic", value=f"aborted{i}".encode(), partition=i % 2)
    assert p.flush(30) == 0
    p.abort_transaction(30)
    assert count(server, "tx_basic") == 100

    p.begin_transaction()
    for i in range(10):
        p.produce("tx_basic", value=f"b{i}".encode(), partition=i % 2)
    p.commit_transaction(30)

    want = sorted([f"a{i}" for i in range(100)] + [f"b{i}" for i in range(10)])
    assert values(server, "tx_basic") == want
    for isolation in ("read_committed", "read_uncommitted"):
        got = read_all(server, "tx_basic", isolation, 110)
        assert sorted(m.value().decode() for m in got) == want
        for part in (0, 1):
            offsets = sorted(m.offset() for m in got if m.partition() == part)
            assert offsets == list(range(55)), (isolation, part, offsets)


def test_a_new_instance_fences_the_old_one(server):
    create_topic(server, "tx_fence", 1)
    old = txn_producer(server, "fenced-id")
    old.begin_transaction()
    for i in range(5):
        old.produce("tx_fence", value=f"old{i}".encode())
    assert old.flush(30) == 0

    new = txn_producer(server, "fenced-id")
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(30)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower(), str(e.value)

    new.begin_transaction()
    for i in range(3):
        new.produce("tx_fence", value=f"new{i}".encode())
    new.commit_transaction(30)
    assert values(server, "tx_fence") == ["new0", "new1", "new2"]


def committed(server, group, topic, partitions):
    c = Consumer({"bootstrap.servers": server.kafka, "group.id": group})
    got = c.committed([TopicPartition(topic, i) for i in range(partitions)], timeout=30)
    c.close()
    return [tp.offset for tp in got]


def forward(consumer, p, n, topic):
    """Reads `n` records and produces each one, processed, to `topic` in
    `p`'s open transaction with the consumer's offsets; the records read."""
    taken = []
    deadline = time.time() + 60
    while len(taken) < n and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        taken.append(m)
        p.produce(topic, value=f"x{int(m.value())}".encode(), partition=m.partition())
    assert len(taken) == n
    p.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                  consumer.consumer_group_metadata(), 30)
    return taken


def test_read_process_write_commits_offsets_with_the_rows(server):
    create_topic(server, "rpw_in", 2)
    create_topic(server, "rpw_out", 2)
    feed = Producer({"bootstrap.servers": server.kafka, "enable.idempotence": True})
    for i in range(40):
        feed.produce("rpw_in", value=str(i).encode(), partition=i % 2)
    assert feed.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": server.kafka, "group.id": "rpw",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe(["rpw_in"])
    p = txn_producer(server, "rpw")

    def one_round(n, commit):
        p.begin_transaction()
        taken = forward(consumer, p, n, "rpw_out")
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
        return taken

    first = one_round(40, commit=True)
    assert count(server, "rpw_out") == 40
    assert committed(server, "rpw", "rpw_in", 2) == [20, 20]
    assert sorted(values(server, "rpw_out")) == sorted(
        f"x{int(m.value())}" for m in first)

    # An aborted round moves neither the rows nor the offsets.
    for i in range(40, 50):
        feed.produce("rpw_in", value=str(i).encode(), partition=i % 2)
    assert feed.flush(30) == 0
    one_round(10, commit=False)
    consumer.close()
    assert count(server, "rpw_out") == 40
    assert committed(server, "rpw", "rpw_in", 2) == [20, 20]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_mid_transaction_leaves_nothing_and_the_producer_starts_again():
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        args = ["--kafka-addr", f"127.0.0.1:{port}"]
        server = Server(d, extra_args=args)
        create_topic(server, "tx_kill", 2)
        p = txn_producer(server, "killed", **{"message.timeout.ms": 20_000,
                                              "transaction.timeout.ms": 20_000})
        p.begin_transaction()
        for i in range(20):
            p.produce("tx_kill", value=f"c{i}".encode(), partition=i % 2)
        p.commit_transaction(30)
        p.begin_transaction()
        for i in range(30):
            p.produce("tx_kill", value=f"lost{i}".encode(), partition=i % 2)
        assert p.flush(30) == 0
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        server = Server(d, extra_args=args)
        try:
            # The restarted agent never heard of the open transaction: its
            # commit is refused, and nothing of it is in the log.
            with pytest.raises(KafkaException):
                p.commit_transaction(30)
            assert values(server, "tx_kill") == sorted(f"c{i}" for i in range(20))
            # A new instance of the same id starts and commits.
            again = txn_producer(server, "killed")
            again.begin_transaction()
            for i in range(4):
                again.produce("tx_kill", value=f"d{i}".encode(), partition=i % 2)
            again.commit_transaction(30)
            want = sorted([f"c{i}" for i in range(20)] + [f"d{i}" for i in range(4)])
            wait_for(lambda: values(server, "tx_kill") == want, "the new instance's rows")
            got = read_all(server, "tx_kill", "read_committed", 24)
            for part in (0, 1):
                offsets = sorted(m.offset() for m in got if m.partition() == part)
                assert offsets == list(range(12)), (part, offsets)
        finally:
            assert server.stop() == 0


class Bootstrap:
    """A cluster's agents as one Kafka bootstrap list (what the helpers
    above take as a server)."""

    def __init__(self, agents):
        self.kafka = ",".join(a.kafka for a in agents)
        self.dsn = agents[0].dsn


def test_a_transaction_spans_the_agents_of_a_cluster(cluster):
    """Partition leadership is spread over the agents, so one transaction's
    records reach both: those reaching the agent that did not start the
    producer are staged through the stores, and the commit on its own agent
    takes them with the rest — all or nothing, each row once."""
    both = Bootstrap(cluster)
    create_topic(both, "span", 8)
    create_topic(both, "span_in", 4)
    probe = Producer({"bootstrap.servers": both.kafka})
    deadline = time.time() + 30
    while True:
        parts = probe.list_topics("span", timeout=10).topics["span"].partitions
        leaders = {p.leader for p in parts.values()}
        if len(leaders) == 2 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert len(leaders) == 2, f"partitions led by {leaders}: the test needs both agents"

    p = txn_producer(both, "spanning")
    sent = []

    def round_of(n, commit):
        p.begin_transaction()
        values_ = [f"r{len(sent)}-{i}" for i in range(n)]
        for i, v in enumerate(values_):
            p.produce("span", value=v.encode(), partition=i % 8)
        assert p.flush(30) == 0
        for agent in cluster:
            assert count(agent, "span") == len(sent), "nothing visible before the commit"
        if commit:
            p.commit_transaction(30)
            sent.extend(values_)
        else:
            p.abort_transaction(30)

    round_of(400, commit=True)
    round_of(100, commit=False)
    round_of(80, commit=True)
    for agent in cluster:
        assert values(agent, "span") == sorted(sent)
    got = read_all(both, "span", "read_committed", len(sent))
    for part in range(8):
        offsets = sorted(m.offset() for m in got if m.partition() == part)
        assert offsets == list(range(len(offsets))), (part, offsets)

    # Read, process, write across the agents: the group's offsets commit
    # with the rows wherever the group's coordinator is.
    feed = Producer({"bootstrap.servers": both.kafka, "enable.idempotence": True})
    for i in range(40):
        feed.produce("span_in", value=str(i).encode(), partition=i % 4)
    assert feed.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": both.kafka, "group.id": "span_rpw",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe(["span_in"])
    p.begin_transaction()
    forward(consumer, p, 40, "span")
    p.commit_transaction(30)
    consumer.close()
    sent.extend(f"x{i}" for i in range(40))
    for agent in cluster:
        assert values(agent, "span") == sorted(sent)
        assert committed(agent, "span_rpw", "span_in", 4) == [10, 10, 10, 10]
