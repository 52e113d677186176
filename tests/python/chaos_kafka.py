"""The chaos suite's Kafka clients (confluent-kafka), each in a process of
its own so that a fault inside the client library cannot take the suite's
history with it.

    chaos_kafka.py KIND NAME BOOTSTRAP FIRST_ID SEED

KIND is `producer` (idempotent), `transactional` or `consumer`. The
process runs until its standard input closes and writes one JSON object
per line to standard output:

- `{"start": [ids]}` before it sends rows with those ids;
- `{"op": {...}}` once their outcome is known (the fields of
  `chaos.Suite.record`: t0, t1, proc, door, ids, outcome, error);
- `{"seen": [[member, partition, offset, id], ...]}` for rows a consumer
  read, written before it commits their offsets.

Ids are taken from FIRST_ID upwards. Times are `time.monotonic()`, which
every process of the machine shares. A start with no op after it (the
process died) is an operation whose outcome is unknown; `chaos.Suite`
records it so.
"""

import contextlib
import json
import logging
import random
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

PARTITIONS = 4
KAFKA_GROUP = "chaos_kafka_readers"

_quiet = logging.getLogger("chaos.kafka")   # librdkafka's logs, dropped
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def now():
    return time.monotonic()


class Client:
    """What a worker needs: its ids, its output and when to stop."""

    def __init__(self, name, bootstrap, first_id, seed):
        self.name = name
        self.bootstrap = bootstrap
        self.ids = iter(range(first_id, first_id + (1 << 32)))
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.out = threading.Lock()

    def emit(self, **line):
        text = json.dumps(line)
        with self.out:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def next_ids(self, n):
        ids = [next(self.ids) for _ in range(n)]
        self.emit(start=ids)
        return ids

    def record(self, t0, door, ids, outcome, error):
        op = dict(t0=t0, t1=now(), proc=self.name, door=door, ids=ids, outcome=outcome,
                  agent=None)
        if error:
            op["error"] = error
        self.emit(op=op)

    def config(self, **more):
        return {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 10000,
                "reconnect.backoff.max.ms": 1000, "error_cb": lambda e: None,
                "logger": _quiet, **more}


def producer(c):
    """An idempotent producer: 20 JSON rows, then a flush; each row is
    acknowledged by its delivery report (librdkafka retries within
    `message.timeout.ms`). A fatal error starts a new producer."""
    p = None
    while not c.stopping.is_set():
        if p is None:
            p = Producer(c.config(**{"enable.idempotence": True, "linger.ms": 5,
                                     "message.timeout.ms": 30000}))
        ids = c.next_ids(20)
        reports = {}
        t0, error = now(), None
        try:
            for i in ids:
                p.produce("events", json.dumps({"id": i, "src": "kafka"}).encode(),
                          on_delivery=lambda err, _msg, i=i: reports.__setitem__(i, err))
            p.flush(45)
        except (KafkaException, BufferError) as e:
            error = str(e)[:200]
        errors = [e for e in reports.values() if e is not None]
        if errors:
            error = error or str(errors[0])[:200]
        ok = [i for i in ids if i in reports and reports[i] is None]
        rest = [i for i in ids if i not in ok]
        if ok:
            c.record(t0, "kafka", ok, "ok", None)
        if rest:
            c.record(t0, "kafka", rest, "unknown", error)
        if any(e.fatal() for e in errors) or (rest and not errors):
            # Fatal, or the flush timed out: a new producer (and id).
            with contextlib.suppress(Exception):
                p.flush(1)
            p = None


def transactional(c):
    """A transactional producer: 20 JSON rows per transaction spread over
    the partitions (so they reach agents other than its coordinator), one
    transaction in five aborted. A commit that raises leaves its outcome
    unknown (the commit may have landed before the answer was lost); an
    error the transaction cannot go on from starts a new producer (a new
    epoch, which fences the old one)."""
    p = None
    while not c.stopping.is_set():
        if p is None:
            try:
                p = Producer(c.config(**{"transactional.id": c.name, "linger.ms": 5,
                                         "transaction.timeout.ms": 30000,
                                         "message.timeout.ms": 30000}))
                p.init_transactions(30)
            except Exception:
                p = None
                time.sleep(0.5)
                continue
        ids = c.next_ids(20)
        abort = c.rng.random() < 0.2
        t0, outcome, error = now(), "unknown", None
        try:
            p.begin_transaction()
            for k, i in enumerate(ids):
                p.produce("events", json.dumps({"id": i, "src": "ktxn"}).encode(),
                          partition=k % PARTITIONS)
            if abort:
                p.abort_transaction(30)
                outcome = "aborted"
            else:
                p.commit_transaction(30)
                outcome = "ok"
        except (KafkaException, BufferError) as e:
            error = str(e)[:200]
            if abort:
                # Never committed, whatever failed.
                outcome = "aborted"
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is not None and err.txn_requires_abort():
                try:
                    p.abort_transaction(30)
                except Exception:
                    p = None
            else:
                p = None
        c.record(t0, "ktxn", ids, outcome, error)


def consumer(c):
    """A group member (classic protocol, manual commits after each batch),
    writing every row it saw; rejoins after an error."""
    while not c.stopping.is_set():
        k = Consumer(c.config(**{"group.id": KAFKA_GROUP, "client.id": c.name,
                                 "auto.offset.reset": "earliest",
                                 "enable.auto.commit": False,
                                 "session.timeout.ms": 10000,
                                 "heartbeat.interval.ms": 1000}))
        try:
            k.subscribe(["events"])
            while not c.stopping.is_set():
                batch = [m for m in k.consume(500, timeout=1) if not m.error()]
                if not batch:
                    continue
                c.emit(seen=[[c.name, m.partition(), m.offset(), json.loads(m.value())["id"]]
                             for m in batch])
                with contextlib.suppress(KafkaException):
                    k.commit(asynchronous=False)
        except Exception:
            time.sleep(0.3)
        finally:
            with contextlib.suppress(Exception):
                k.close()


def main():
    kind, name, bootstrap, first_id, seed = sys.argv[1:6]
    c = Client(name, bootstrap, int(first_id), int(seed))

    def until_stdin_closes():
        sys.stdin.read()
        c.stopping.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    {"producer": producer, "transactional": transactional, "consumer": consumer}[kind](c)


if __name__ == "__main__":
    main()
