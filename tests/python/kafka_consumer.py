"""A Kafka consumer group member in its own process, for the group tests.

Usage: kafka_consumer.py BOOTSTRAP GROUP TOPIC

Prints one JSON line per event: {"assigned": [partitions]} after each
rebalance, {"record": [partition, offset, value]} per record, and commits
each record's offset synchronously before printing it (so a record the
test has seen is committed). Runs until killed or its stdin closes.
"""

import json
import select
import sys

from confluent_kafka import Consumer


def main():
    bootstrap, group, topic = sys.argv[1:4]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    })

    def assigned(_consumer, partitions):
        print(json.dumps({"assigned": sorted(p.partition for p in partitions)}), flush=True)

    consumer.subscribe([topic], on_assign=assigned)
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready and not sys.stdin.readline():
            consumer.close()
            print(json.dumps({"closed": True}), flush=True)
            return
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            print(json.dumps({"error": str(msg.error())}), flush=True)
            continue
        consumer.commit(message=msg, asynchronous=False)
        print(json.dumps({"record": [msg.partition(), msg.offset(), msg.value().decode()]}),
              flush=True)


if __name__ == "__main__":
    main()
