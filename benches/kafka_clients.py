"""Kafka measurements with librdkafka clients, against any Kafka-compatible
server.

  python benches/kafka_clients.py throughput BOOTSTRAP RECORDS SERVER_PID
  python benches/kafka_clients.py throughput-python BOOTSTRAP RECORDS SERVER_PID
  python benches/kafka_clients.py latency BOOTSTRAP RECORDS SERVER_PID

throughput: RECORDS records of 100 bytes (base64 of random bytes, so they
compress as real payloads do rather than to nothing) go to a fresh
4-partition topic from one kcat process (librdkafka in C; acks=all,
idempotent, linger 5 ms), are checked to be all there (the partitions'
high watermarks add up), then are read from the start by one kcat process
per partition, in parallel, each to the end of its partition. Prints
records/s and MB/s of each, and the CPU seconds SERVER_PID used in each.

throughput-python: the same with confluent-kafka (librdkafka 2.16) in
Python processes: two producers, then one consumer a partition (for
servers that kcat's librdkafka 2.0 cannot talk to).

latency: one record a millisecond to a fresh 1-partition topic (acks=all,
linger 0; confluent-kafka, librdkafka again), read by a consumer tailing
it; prints the produce-to-acknowledgement (delivery report) and
produce-to-consume percentiles.

Each prints one line `result {json}` for the benchmark harness.
"""

import base64
import json
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4


def fresh_topic(boot, prefix, partitions):
    name = f"{prefix}_{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": boot})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def records_file(directory, n):
    """n lines of 100 characters: base64 of random bytes."""
    data = base64.b64encode(os.urandom(75 * n))
    path = os.path.join(directory, "records")
    with open(path, "wb") as f:
        f.write(b"\n".join(data[i * 100:(i + 1) * 100] for i in range(n)))
        f.write(b"\n")
    return path


def kcat():
    path = shutil.which("kcat")
    if path is None:
        sys.exit("kcat is not installed (./scripts/setup installs it)")
    return path


def throughput(boot, n, pid):
    topic = fresh_topic(boot, "throughput", PARTITIONS)
    with tempfile.TemporaryDirectory() as d:
        path = records_file(d, n)
        cpu = cpu_seconds(pid)
        t = time.perf_counter()
        subprocess.run(
            [kcat(), "-P", "-b", boot, "-t", topic, "-X", "acks=all",
             "-X", "enable.idempotence=true", "-X", "linger.ms=5", "-X", "batch.size=1000000",
             "-X", "queue.buffering.max.messages=2000000",
             "-X", "queue.buffering.max.kbytes=2000000", "-l", path],
            check=True, timeout=600)
        produce_seconds = time.perf_counter() - t
        produce_cpu = cpu_seconds(pid) - cpu
    print(f"produce {n} x 100 B (acks=all, one kcat): {n / produce_seconds:,.0f} records/s, "
          f"{n * 100 / produce_seconds / 1e6:.1f} MB/s, server {produce_cpu:.2f} CPU-s")

    watch = Consumer({"bootstrap.servers": boot, "group.id": f"watch_{time.time_ns()}"})
    ends = [watch.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)]
    watch.close()
    assert sum(ends) == n, f"the partitions hold {sum(ends)} records, not {n}"

    cpu = cpu_seconds(pid)
    t = time.perf_counter()
    readers = [
        subprocess.Popen(
            [kcat(), "-C", "-b", boot, "-t", topic, "-p", str(p), "-o", "beginning", "-e", "-q",
             "-X", "fetch.max.bytes=52428800", "-X", "max.partition.fetch.bytes=10485760",
             "-X", "queued.min.messages=1000000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for p in range(PARTITIONS) if ends[p] > 0
    ]
    for r in readers:
        _, err = r.communicate(timeout=600)
        assert r.returncode == 0, err.decode()
    consume_seconds = time.perf_counter() - t
    consume_cpu = cpu_seconds(pid) - cpu
    print(f"consume {n} ({len(readers)} kcat, one a partition): {n / consume_seconds:,.0f} "
          f"records/s, {n * 100 / consume_seconds / 1e6:.1f} MB/s, "
          f"server {consume_cpu:.2f} CPU-s")
    print("result " + json.dumps({
        "records": n, "produce_seconds": produce_seconds, "produce_cpu": produce_cpu,
        "consume_seconds": consume_seconds, "consume_cpu": consume_cpu}))


def _produce_part(ready, boot, topic, partitions, count):
    data = base64.b64encode(os.urandom(75 * count))
    p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 2_000_000,
                  "queue.buffering.max.kbytes": 2_000_000})
    ready.wait()
    for i in range(count):
        value = data[i * 100:(i + 1) * 100]
        while True:
            try:
                p.produce(topic, value=value, partition=partitions[i % len(partitions)])
                break
            except BufferError:
                p.poll(0.001)
    assert p.flush(120) == 0


def _consume_part(ready, boot, topic, partition, count):
    c = Consumer({"bootstrap.servers": boot, "group.id": f"read_{time.time_ns()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760, "queued.min.messages": 1_000_000})
    ready.wait()
    c.assign([TopicPartition(topic, partition, 0)])
    got = 0
    while got < count:
        got += sum(1 for m in c.consume(100_000, 1.0) if not m.error())
    c.close()


def _in_processes(jobs):
    """Runs (function, args) jobs in their own processes; the wall time
    from when all are ready (their records made, their clients created)
    to when the last ends."""
    ready = multiprocessing.Barrier(len(jobs) + 1)
    procs = [multiprocessing.Process(target=f, args=(ready, *a)) for f, a in jobs]
    for p in procs:
        p.start()
    ready.wait()
    t = time.perf_counter()
    for p in procs:
        p.join()
        assert p.exitcode == 0, f"a client process failed ({p.exitcode})"
    return time.perf_counter() - t


def throughput_python(boot, n, pid):
    """As throughput, with confluent-kafka processes: two producers (each
    half the partitions and half the records), then one consumer a
    partition."""
    topic = fresh_topic(boot, "throughput", PARTITIONS)
    half = n // 2
    cpu = cpu_seconds(pid)
    produce_seconds = _in_processes([
        (_produce_part, (boot, topic, [0, 2], half)),
        (_produce_part, (boot, topic, [1, 3], n - half)),
    ])
    produce_cpu = cpu_seconds(pid) - cpu
    print(f"produce {n} x 100 B (acks=all, two confluent-kafka processes): "
          f"{n / produce_seconds:,.0f} records/s, {n * 100 / produce_seconds / 1e6:.1f} MB/s, "
          f"server {produce_cpu:.2f} CPU-s")
    watch = Consumer({"bootstrap.servers": boot, "group.id": f"watch_{time.time_ns()}"})
    ends = [watch.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)]
    watch.close()
    held = sum(ends)
    if held != n:
        print(f"acknowledged {n} records, but the partitions' high watermarks add up to {held}")
    cpu = cpu_seconds(pid)
    consume_seconds = _in_processes([
        (_consume_part, (boot, topic, p, ends[p])) for p in range(PARTITIONS) if ends[p] > 0
    ])
    consume_cpu = cpu_seconds(pid) - cpu
    print(f"consume {held} (one confluent-kafka process a partition): "
          f"{held / consume_seconds:,.0f} records/s, "
          f"{held * 100 / consume_seconds / 1e6:.1f} MB/s, server {consume_cpu:.2f} CPU-s")
    print("result " + json.dumps({
        "records": n, "held": held, "produce_seconds": produce_seconds,
        "produce_cpu": produce_cpu, "consume_seconds": consume_seconds,
        "consume_cpu": consume_cpu}))


def latency(boot, n, pid):
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
    cpu = cpu_seconds(pid)
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 0})
    acks = []

    def acked(err, msg):
        if err is None:
            acks.append(time.perf_counter() - struct.unpack("d", msg.value()[:8])[0])

    for _ in range(n):
        p.produce(topic, value=struct.pack("d", time.perf_counter()) + b"x" * 92,
                  on_delivery=acked)
        p.poll(0)
        time.sleep(0.001)
    unacknowledged = p.flush(60)
    reader.join()
    c.close()
    used = cpu_seconds(pid) - cpu
    if not seen:
        sys.exit(f"no record was read ({unacknowledged} of {n} unacknowledged after 60 s)")
    if len(seen) < n:
        print(f"read {len(seen)} of {n} records; {unacknowledged} unacknowledged after 60 s")
    if not acks:
        sys.exit(f"no record was acknowledged ({unacknowledged} of {n} after 60 s)")
    seen.sort()
    acks.sort()
    q = lambda xs, f: xs[int(f * (len(xs) - 1))] * 1000  # noqa: E731
    print(f"produce-to-ack over {len(acks)} records: p50 {q(acks, 0.5):.1f} ms, "
          f"p99 {q(acks, 0.99):.1f} ms, max {acks[-1] * 1000:.1f} ms")
    print(f"produce-to-consume over {len(seen)} records: p50 {q(seen, 0.5):.1f} ms, "
          f"p99 {q(seen, 0.99):.1f} ms, max {seen[-1] * 1000:.1f} ms")
    print("result " + json.dumps({"records": len(seen), "sent": n, "p50_ms": q(seen, 0.5),
                                  "p99_ms": q(seen, 0.99), "ack_p50_ms": q(acks, 0.5),
                                  "ack_p99_ms": q(acks, 0.99), "cpu": used}))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    what, boot, records, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if what == "throughput":
        throughput(boot, records, pid)
    elif what == "throughput-python":
        throughput_python(boot, records, pid)
    elif what == "latency":
        latency(boot, records, pid)
    else:
        sys.exit(__doc__)
