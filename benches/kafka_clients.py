"""Kafka-door measurements with librdkafka (confluent-kafka), against any
Kafka-compatible server.

  python benches/kafka_clients.py throughput BOOTSTRAP [RECORDS]
  python benches/kafka_clients.py latency BOOTSTRAP [RECORDS]

throughput: produces RECORDS (default 1,000,000) records of 100 bytes to a
fresh 4-partition topic with acks=all and idempotence, then consumes them
all from the start; prints records/s and MB/s of each. latency: one record
a millisecond to a fresh 1-partition topic (acks=all, linger 0), read by a
consumer tailing it; prints the produce-to-consume percentiles. Each also
prints one line `result {json}` for the benchmark harness.
"""

import json
import struct
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def fresh_topic(boot, prefix, partitions):
    name = f"{prefix}_{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": boot})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def throughput(boot, n):
    topic = fresh_topic(boot, "throughput", 4)
    value = b"x" * 100
    p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 2_000_000,
                  "queue.buffering.max.kbytes": 2_000_000})
    t = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, partition=i % 4)
                break
            except BufferError:
                p.poll(0.001)
    assert p.flush(120) == 0
    dt = time.perf_counter() - t
    produce_seconds = dt
    print(f"produce {n} x 100 B (acks=all): {n / dt:,.0f} records/s, {n * 100 / dt / 1e6:.1f} MB/s")
    c = Consumer({"bootstrap.servers": boot, "group.id": f"read_{time.time_ns()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760, "queued.min.messages": 1_000_000})
    c.assign([TopicPartition(topic, i, 0) for i in range(4)])
    got = 0
    t = time.perf_counter()
    while got < n:
        got += sum(1 for m in c.consume(100_000, 1.0) if not m.error())
    dt = time.perf_counter() - t
    c.close()
    print(f"consume {got}: {got / dt:,.0f} records/s, {got * 100 / dt / 1e6:.1f} MB/s")
    print("result " + json.dumps({"records": n, "produce_seconds": produce_seconds,
                                  "consume_seconds": dt}))


def latency(boot, n):
    topic = fresh_topic(boot, "latency", 1)
    c = Consumer({"bootstrap.servers": boot, "group.id": f"lat_{time.time_ns()}",
                  "fetch.wait.max.ms": 500})
    c.assign([TopicPartition(topic, 0, 0)])
    seen = []

    def tail():
        deadline = time.time() + 120
        while len(seen) < n and time.time() < deadline:
            m = c.poll(1.0)
            if m is not None and not m.error():
                seen.append(time.perf_counter() - struct.unpack("d", m.value()[:8])[0])

    reader = threading.Thread(target=tail)
    reader.start()
    time.sleep(1)
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 0})
    for _ in range(n):
        p.produce(topic, value=struct.pack("d", time.perf_counter()) + b"x" * 92)
        p.poll(0)
        time.sleep(0.001)
    assert p.flush(60) == 0
    reader.join()
    c.close()
    seen.sort()
    q = lambda f: seen[int(f * (len(seen) - 1))] * 1000  # noqa: E731
    print(f"produce-to-consume over {len(seen)} records: p50 {q(0.5):.1f} ms, "
          f"p99 {q(0.99):.1f} ms, max {seen[-1] * 1000:.1f} ms")
    print("result " + json.dumps({"records": len(seen), "p50_ms": q(0.5), "p99_ms": q(0.99)}))


if __name__ == "__main__":
    what, boot = sys.argv[1], sys.argv[2]
    records = int(sys.argv[3]) if len(sys.argv) > 3 else None
    if what == "throughput":
        throughput(boot, records or 1_000_000)
    elif what == "latency":
        latency(boot, records or 5_000)
    else:
        sys.exit(__doc__)
