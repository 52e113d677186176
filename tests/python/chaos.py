"""The chaos suite: a cluster of agents over the S3-compatible server and a
PostgreSQL server of its own, every agent's connections to both through
proxies the suite controls; writers through every door (pgwire INSERT and
COPY, Flight idempotent producers that retry, Flight transactional
producers that commit or abort, Kafka idempotent and transactional
producers, each Kafka client in a process of its own: chaos_kafka.py),
consumer groups (Flight and Kafka) and a materialized view — while a nemesis kills
(SIGKILL) and restarts agents, pauses them past their leases
(SIGSTOP/SIGCONT), cuts, slows or loses packets to the object store and
the metadata store, restarts PostgreSQL (an immediate shutdown: a crash
and its recovery), and jumps agents' wall clocks (libfaketime).
Then the faults are healed and a checker reads the history:

- every acknowledged write is present exactly once, and no row twice;
- each partition's offsets are dense from 0;
- a transaction is all there (committed) or not at all (aborted, or its
  answer lost), never in part;
- every row a consumer saw is in the log at the offset it saw it;
- a group's committed offsets never go back;
- the view equals its query over the stream.

An anomaly prints the history around it: the operations that touched it
and the faults near them in time.

Run from the test command (`tests/python/test_chaos.py`, a bounded run) or
alone for as long as wanted, with the services `./scripts/test` starts:

    STREAMHOUSE_BIN=... STREAMHOUSE_TEST_PG_BIN=... STREAMHOUSE_TEST_S3_BUCKET=... \\
    AWS_ENDPOINT_URL=... python tests/python/chaos.py --seconds 3600 --report chaos.json

(`scripts/chaos SECONDS` sets those up and runs it.)
"""

import argparse
import collections
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import psycopg
import pyarrow as pa
import pyarrow.flight as flight
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_kafka import KAFKA_GROUP  # noqa: E402
from tcp_proxy import Proxy  # noqa: E402

PARTITIONS = 4
GROUP = "chaos_readers"
FAULTS = ("kill", "pause", "clock_jump", "s3_outage", "s3_slow", "s3_loss",
          "pg_outage", "pg_slow", "pg_loss", "pg_restart")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now():
    return time.monotonic()


def libfaketime():
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is not installed (scripts/setup test installs it)")
    return found[0]


class PrivatePg:
    """A PostgreSQL server of the suite's own, which the nemesis restarts
    (the shared one serves the other tests). As root, it runs as the
    postgres user."""

    def __init__(self, workdir):
        self.bin = os.environ["STREAMHOUSE_TEST_PG_BIN"]
        # Under /tmp, not the work directory: the postgres user must reach it.
        self.dir = tempfile.mkdtemp(prefix="chaos-pg-")
        os.chmod(self.dir, 0o777)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")   # copied to `workdir` at the end
        self.workdir = workdir
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "streamhouse")
        self.start()

    def _run(self, program, *args):
        done = subprocess.run(self.as_pg + [os.path.join(self.bin, program), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr}")

    @property
    def url(self):
        return f"postgresql://streamhouse@127.0.0.1:{self.port}"

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "start", "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=300")

    def crash(self):
        """An immediate shutdown: connections cut, no checkpoint, recovery
        from the WAL at the next start — a crash."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def close(self):
        with contextlib.suppress(Exception):
            self.crash()
        with contextlib.suppress(OSError):
            shutil.copy(self.log, os.path.join(self.workdir, "postgres.log"))
        shutil.rmtree(self.dir, ignore_errors=True)


class Agent:
    """One server process, its doors on fixed ports (kept across restarts),
    its object store and metadata store behind proxies of its own."""

    def __init__(self, n, workdir, metadata_db, s3_url, s3_target, pg_target):
        self.n = n
        self.dir = os.path.join(workdir, f"agent{n}")
        os.makedirs(self.dir)
        # The wall clock's offset, as libfaketime reads it (every second).
        self.clock_file = os.path.join(workdir, f"agent{n}.clock")
        self.jump_clock(0)
        self.log = open(os.path.join(workdir, f"agent{n}.log"), "a")
        self.s3 = Proxy(s3_target[1])
        self.pg = Proxy(pg_target[1])
        self.s3.start()
        self.pg.start()
        self.ports = {d: free_port() for d in ("pg", "flight", "http", "kafka")}
        self.metadata = metadata_db.replace(
            f"{pg_target[0]}:{pg_target[1]}", f"127.0.0.1:{self.pg.port}")
        self.s3_url = s3_url
        self.proc = None
        self.paused = False
        self.lock = threading.Lock()

    @property
    def dsn(self):
        return f"postgresql://streamhouse@127.0.0.1:{self.ports['pg']}/streamhouse"

    @property
    def flight_uri(self):
        return f"grpc://127.0.0.1:{self.ports['flight']}"

    @property
    def kafka(self):
        return f"127.0.0.1:{self.ports['kafka']}"

    def jump_clock(self, seconds):
        """Sets the agent's wall clock `seconds` away from the real one
        (monotonic time, which timers run on, is left alone)."""
        with open(self.clock_file + ".tmp", "w") as f:
            f.write(f"{seconds:+d}s\n")
        os.replace(self.clock_file + ".tmp", self.clock_file)

    def start(self):
        """Starts the process; tried again while it does not come up (its
        ports still held by the one before)."""
        for _ in range(20):
            if self._spawn():
                return
            time.sleep(0.5)
        raise RuntimeError(f"agent {self.n} does not start: see agent{self.n}.log")

    def _spawn(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMHOUSE_")}
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{self.s3.port}"
        env.update(LD_PRELOAD=libfaketime(), FAKETIME_TIMESTAMP_FILE=self.clock_file,
                   FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_CACHE_DURATION="1")
        self.proc = subprocess.Popen(
            [os.environ["STREAMHOUSE_BIN"], "server",
             "--data-dir", self.dir,
             "--pg-addr", f"127.0.0.1:{self.ports['pg']}",
             "--flight-addr", f"127.0.0.1:{self.ports['flight']}",
             "--http-addr", f"127.0.0.1:{self.ports['http']}",
             "--kafka-addr", f"127.0.0.1:{self.ports['kafka']}",
             "--metadata", self.metadata,
             "--object-store", self.s3_url,
             "--checkpoint-interval", "1s"],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        ready = False
        for line in self.proc.stdout:
            if line.startswith("Press Ctrl-C"):
                ready = True
                break
        if not ready:
            self.proc.wait()
            return False
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.paused = False
        return True

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self):
        if self.paused:
            self.resume()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in (self.s3, self.pg):
            with contextlib.suppress(Exception):
                p.stop()
        self.log.close()


class History:
    """Operations and faults, each with its start and end time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.faults = []
        self.seen = []          # (member, partition, offset, id) a consumer read
        self.commits = []       # (t, partition, offset) committed offsets read back
        self.client_deaths = []  # (client, exit code) Kafka client processes that died
        self.t0 = now()

    def op(self, **op):
        with self.lock:
            self.ops.append(op)

    def fault(self, **f):
        with self.lock:
            self.faults.append(f)

    def around(self, t0, t1, margin=3.0):
        return [f for f in self.faults
                if f["t0"] - margin <= t1 and f.get("t1", f["t0"]) + margin >= t0]


class Suite:
    def __init__(self, seconds, agents, seed, workdir):
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.seed = seed
        self.workdir = workdir
        self.history = History()
        self.stopping = threading.Event()
        self.ids = iter(range(1, 1 << 62))
        self.ids_lock = threading.Lock()
        self.blocks = iter(range(1 << 40, 1 << 62, 1 << 32))   # Kafka clients' ids
        self.kafka_procs = []
        self.pg = PrivatePg(workdir)
        bucket = os.environ["STREAMHOUSE_TEST_S3_BUCKET"]
        name = f"chaos_{int(time.time() * 1e6)}"
        with psycopg.connect(f"{self.pg.url}/postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        s3 = urllib.parse.urlparse(os.environ["AWS_ENDPOINT_URL"])
        self.agents = [
            Agent(i, workdir, f"{self.pg.url}/{name}", f"s3://{bucket}/{name}",
                  (s3.hostname, s3.port), ("127.0.0.1", self.pg.port))
            for i in range(agents)
        ]

    # -- helpers -------------------------------------------------------------

    def next_ids(self, n):
        with self.ids_lock:
            return [next(self.ids) for _ in range(n)]

    def live(self):
        up = [a for a in self.agents if a.alive()]
        return self.rng.choice(up) if up else None

    def sql(self, query, agent=None, timeout=60):
        """`query`'s rows through any live agent, retried until it answers."""
        deadline = now() + timeout
        while True:
            a = agent or self.live()
            try:
                if a is None:
                    raise RuntimeError("no live agent")
                with psycopg.connect(a.dsn, autocommit=True, connect_timeout=5) as c:
                    cur = c.execute(query)
                    return cur.fetchall() if cur.description else []
            except Exception:
                if now() > deadline:
                    raise
                time.sleep(0.5)

    # -- workloads -----------------------------------------------------------

    def pg_writer(self, name, copy):
        conn, agent = None, None
        while not self.stopping.is_set():
            if conn is None:
                agent, conn = self.attach(
                    lambda a: psycopg.connect(a.dsn, autocommit=True, connect_timeout=5))
                if conn is None:
                    continue
            ids = self.next_ids(20)
            t0, error = now(), None
            try:
                if copy:
                    with conn.cursor().copy("COPY events (id, src) FROM STDIN") as cp:
                        for i in ids:
                            cp.write_row((i, "copy"))
                else:
                    values = ", ".join(f"({i}, 'insert')" for i in ids)
                    conn.execute(f"INSERT INTO events (id, src) VALUES {values}")
            except Exception as e:
                error = str(e)[:200]
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            self.record(t0, name, "copy" if copy else "insert", ids,
                        "unknown" if error else "ok", agent, error)
            if error:
                time.sleep(0.1)

    def idempotent_producer(self, name):
        """Flight DoPut as an idempotent producer: a batch whose answer is
        lost is sent again with the same sequence, through any agent, until
        acknowledged (then written exactly once) or given up."""
        seq = 0
        while not self.stopping.is_set():
            seq += 1
            ids = self.next_ids(50)
            batch = pa.record_batch({"id": pa.array(ids, pa.int64()),
                                     "src": pa.array(["flight"] * len(ids))})
            meta = pa.py_buffer(json.dumps({"producer_id": name, "sequence": seq}).encode())
            t0, outcome, tries, agent = now(), "unknown", 0, None
            while tries < 40 and outcome != "ok":
                tries += 1
                agent = self.live()
                if agent is None:
                    time.sleep(0.3)
                    continue
                try:
                    client = flight.connect(agent.flight_uri)
                    opts = flight.FlightCallOptions(timeout=15)
                    w, r = client.do_put(flight.FlightDescriptor.for_path("streams", "events"),
                                         batch.schema, options=opts)
                    w.write_with_metadata(batch, meta)
                    w.done_writing()
                    ack = r.read()
                    w.close()
                    client.close()
                    if ack is not None:
                        outcome = "ok"
                except Exception:
                    time.sleep(0.3)
            self.record(t0, name, "flight", ids, outcome, agent, None, tries=tries)

    def transactional_producer(self, name):
        """Flight transactions: stage two batches, then commit (or abort one
        time in five), all through the agent that started the producer."""
        epoch, agent, client = None, None, None
        while not self.stopping.is_set():
            if epoch is None:
                agent, started = self.attach(lambda a: self._init_transactions(a, name))
                if started is None:
                    continue
                client, epoch = started
            ids = self.next_ids(30)
            abort = self.rng.random() < 0.2
            t0 = now()
            meta = pa.py_buffer(json.dumps({"transactional_id": name, "epoch": epoch}).encode())
            try:
                for part in (ids[:15], ids[15:]):
                    batch = pa.record_batch({"id": pa.array(part, pa.int64()),
                                             "src": pa.array(["txn"] * len(part))})
                    w, r = client.do_put(flight.FlightDescriptor.for_path("streams", "events"),
                                         batch.schema,
                                         options=flight.FlightCallOptions(timeout=15))
                    w.write_with_metadata(batch, meta)
                    w.done_writing()
                    while r.read() is not None:
                        pass
                    w.close()
                kind = "abort_transaction" if abort else "commit_transaction"
                self._action(client, kind, {"transactional_id": name, "epoch": epoch})
                outcome, error = ("aborted" if abort else "ok"), None
            except Exception as e:
                outcome, error, epoch = "unknown", str(e)[:200], None
            self.record(t0, name, "txn", ids, outcome, agent, error)

    def kafka_client(self, kind, name):
        """A Kafka client (`chaos_kafka.py KIND NAME`) in a process of its
        own, its history read from its output; started again if it dies.
        An operation it started and did not finish is unknown."""
        here = os.path.dirname(os.path.abspath(__file__))
        bootstrap = ",".join(a.kafka for a in self.agents)
        while not self.stopping.is_set():
            with self.ids_lock:
                first = next(self.blocks)
            proc = subprocess.Popen(
                [sys.executable, os.path.join(here, "chaos_kafka.py"), kind, name, bootstrap,
                 str(first), str(self.rng.randrange(1 << 32))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.kafka_procs.append(proc)
            started = {}    # id -> when its operation started, until it ends
            for line in proc.stdout:
                line = json.loads(line)
                if "start" in line:
                    started.update((i, now()) for i in line["start"])
                elif "op" in line:
                    op = line["op"]
                    for i in op["ids"]:
                        started.pop(i, None)
                    self.history.op(**op)
                elif "seen" in line:
                    with self.history.lock:
                        self.history.seen.extend(tuple(s) for s in line["seen"])
            code = proc.wait()
            by_start = collections.defaultdict(list)
            for i, t0 in started.items():
                by_start[t0].append(i)
            for t0, ids in by_start.items():
                self.record(t0, name, "ktxn" if kind == "transactional" else "kafka", ids,
                            "unknown", None, f"client process ended ({code})")
            if not self.stopping.is_set():
                self.history.client_deaths.append((name, code))
                time.sleep(0.5)

    def attach(self, connect):
        """A live agent and `connect(agent)`'s answer; (None, None) after a
        short wait when there is none or it does not answer."""
        agent = self.live()
        if agent is not None:
            try:
                return agent, connect(agent)
            except Exception:
                pass
        time.sleep(0.3)
        return None, None

    def _init_transactions(self, agent, name):
        """A Flight client of `agent` and the new epoch of producer `name`."""
        client = flight.connect(agent.flight_uri)
        (r,) = self._action(client, "init_transactions", {"transactional_id": name})
        return client, r["epoch"]

    def record(self, t0, proc, door, ids, outcome, agent, error, **more):
        """One operation of the history, ended now."""
        op = dict(t0=t0, t1=now(), proc=proc, door=door, ids=ids, outcome=outcome,
                  agent=agent.n if agent else None, **more)
        if error:
            op["error"] = error
        self.history.op(**op)

    @staticmethod
    def _action(client, kind, body):
        results = client.do_action(flight.Action(kind, json.dumps(body).encode()),
                                   options=flight.FlightCallOptions(timeout=15))
        return [json.loads(r.body.to_pybytes()) for r in results]

    def consumer(self, member):
        """A group member: reads its partitions from the committed offsets,
        notes every row it saw, commits after each batch."""
        while not self.stopping.is_set():
            agent = self.live()
            if agent is None:
                time.sleep(0.3)
                continue
            try:
                client = flight.connect(agent.flight_uri)
                self._action(client, "join_group",
                             {"group": GROUP, "stream": "events", "member": member,
                              "session_timeout_ms": 6000})
                ticket = {"stream": "events", "group": GROUP, "member": member}
                reader = client.do_get(flight.Ticket(json.dumps(ticket).encode()),
                                       options=flight.FlightCallOptions(timeout=15))
                for chunk in reader:
                    rows = chunk.data.to_pylist()
                    last = {}
                    for r in rows:
                        last[r["_partition"]] = r["_offset"] + 1
                    with self.history.lock:
                        self.history.seen.extend(
                            (member, r["_partition"], r["_offset"], r["id"]) for r in rows)
                    (a,) = self._action(client, "heartbeat", {"group": GROUP, "member": member})
                    self._action(client, "commit_offsets", {
                        "group": GROUP, "stream": "events", "member": member,
                        "generation": a["generation"],
                        "offsets": {str(p): o for p, o in last.items()}})
                    if self.stopping.is_set():
                        break
                time.sleep(0.2)
            except Exception:
                time.sleep(0.3)

    def committed_sampler(self):
        """Reads the groups' committed offsets back, in order."""
        while not self.stopping.is_set():
            try:
                rows = self.sql("SELECT \"group\", partition, committed "
                                "FROM streamhouse.consumer_groups "
                                f"WHERE \"group\" IN ('{GROUP}', '{KAFKA_GROUP}')", timeout=5)
                t = now()
                with self.history.lock:
                    self.history.commits.extend(
                        (t, (g, p), o) for g, p, o in rows if o is not None)
            except Exception:
                pass
            time.sleep(0.5)

    # -- the nemesis ---------------------------------------------------------

    def nemesis(self):
        # Every kind once first (in a random order), then any.
        first = self.rng.sample(FAULTS, len(FAULTS))

        def gap():
            # Short gaps until each kind has run once, so a bounded run has
            # them all.
            if self.history_count() < len(first):
                return self.rng.uniform(0.5, 1.0)
            return self.rng.uniform(1.0, 3.0)

        while not self.stopping.wait(gap()):
            done = self.history_count()
            kind = first[done] if done < len(first) else self.rng.choice(FAULTS)
            agent = self.rng.choice(self.agents)
            # Shorter in the first round, so a bounded run has every kind.
            length = self.rng.uniform(1.0, 2.0 if done < len(first) else 4.0)
            t0, more = now(), {}
            if kind == "kill":
                agent.kill()
                self.stopping.wait(self.rng.uniform(0.5, 2.0))
                agent.start()
            elif kind == "pause":
                # Past the agent's heartbeat timeout (10 s) half the time.
                length = self.rng.choice([length, 11.0 + length])
                agent.pause()
                self.stopping.wait(length)
                agent.resume()
            elif kind == "clock_jump":
                # Past the leases (10 s) either way, or within them.
                more["seconds"] = self.rng.choice([-60, -12, -3, 3, 12, 60])
                agent.jump_clock(more["seconds"])
                self.stopping.wait(length + 1.0)     # read within a second
                agent.jump_clock(0)
            elif kind == "pg_restart":
                agent = None                         # every agent's metadata store
                self.pg.crash()
                self.stopping.wait(length)
                self.pg.start()
            elif kind in ("s3_outage", "pg_outage"):
                proxy = agent.s3 if kind == "s3_outage" else agent.pg
                proxy.stop()
                self.stopping.wait(length)
                proxy.start()
            elif kind in ("s3_loss", "pg_loss"):
                proxy = agent.s3 if kind == "s3_loss" else agent.pg
                proxy.loss = more["loss"] = self.rng.choice([0.02, 0.1, 0.3])
                self.stopping.wait(length)
                proxy.loss = 0.0
            else:
                proxy = agent.s3 if kind == "s3_slow" else agent.pg
                proxy.delay = self.rng.choice([0.02, 0.05, 0.2])
                self.stopping.wait(length)
                proxy.delay = 0.0
            self.history.fault(kind=kind, agent=agent.n if agent else None,
                               t0=t0, t1=now(), **more)

    def history_count(self):
        with self.history.lock:
            return len(self.history.faults)

    # -- the run -------------------------------------------------------------

    def run(self):
        for a in self.agents:
            a.start()
        self.sql("CREATE STREAM events (id BIGINT NOT NULL, src TEXT NOT NULL) "
                 f"WITH (partitions = {PARTITIONS})", agent=self.agents[0])
        self.sql("CREATE MATERIALIZED VIEW chaos_counts AS "
                 "SELECT src, count(*) AS n, sum(id) AS total FROM events GROUP BY src",
                 agent=self.agents[0])

        def worker(fn, *args):
            return threading.Thread(target=fn, args=args,
                                    name=f"{fn.__name__}({', '.join(map(str, args))})")

        workers = [
            worker(self.pg_writer, "insert-1", False),
            worker(self.pg_writer, "insert-2", False),
            worker(self.pg_writer, "copy-1", True),
            worker(self.idempotent_producer, "idem-1"),
            worker(self.idempotent_producer, "idem-2"),
            worker(self.transactional_producer, "txn-1"),
            worker(self.consumer, "reader-1"),
            worker(self.consumer, "reader-2"),
            worker(self.kafka_client, "producer", "kafka-1"),
            worker(self.kafka_client, "producer", "kafka-2"),
            worker(self.kafka_client, "transactional", "ktxn-1"),
            worker(self.kafka_client, "consumer", "kafka-reader-1"),
            worker(self.kafka_client, "consumer", "kafka-reader-2"),
            worker(self.committed_sampler),
        ]
        nemesis = threading.Thread(target=self.nemesis)
        for w in workers + [nemesis]:
            w.daemon = True
            w.start()
        time.sleep(self.seconds)
        self.stopping.set()
        for proc in self.kafka_procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        nemesis.join()
        # Heal: every proxy up and fast, every clock right, every agent running.
        for a in self.agents:
            a.s3.delay = a.pg.delay = a.s3.loss = a.pg.loss = 0.0
            a.jump_clock(0)
            with contextlib.suppress(OSError):
                a.s3.start()
            with contextlib.suppress(OSError):
                a.pg.start()
            if a.paused:
                a.resume()
            if a.proc.poll() is not None:
                a.start()
        deadline = now() + 120
        for w in workers:
            w.join(timeout=max(0.0, deadline - now()))
        stuck = [w.name for w in workers if w.is_alive()]
        return self.check(stuck)

    # -- the checker ---------------------------------------------------------

    def check(self, stuck):
        h = self.history
        anomalies = []

        def anomaly(what, ops=(), t=None):
            ops = list(ops)
            t0 = min([o["t0"] for o in ops] + ([t] if t else []), default=h.t0)
            t1 = max([o["t1"] for o in ops] + ([t] if t else []), default=now())
            anomalies.append({
                "anomaly": what,
                "ops": [{k: (v if k != "ids" else f"{v[0]}..{v[-1]} ({len(v)})")
                         for k, v in o.items()} | {"at": round(o["t0"] - h.t0, 3)}
                        for o in ops[:5]],
                "faults": [f | {"at": round(f["t0"] - h.t0, 3)} for f in h.around(t0, t1)],
            })

        if stuck:
            anomaly(f"workers still running after the faults healed: {stuck}")
        rows = self.sql("SELECT _partition, _offset, id FROM events", timeout=120)
        present = collections.Counter(r[2] for r in rows)
        at = {(r[0], r[1]): r[2] for r in rows}
        by_id = {}
        for op in h.ops:
            for i in op["ids"]:
                by_id[i] = op
        for i, n in present.items():
            if n > 1:
                anomaly(f"id {i} present {n} times", [by_id[i]] if i in by_id else [])
        for op in h.ops:
            there = sum(1 for i in op["ids"] if present.get(i))
            if op["outcome"] == "ok" and there < len(op["ids"]):
                lost = [i for i in op["ids"] if not present.get(i)]
                anomaly(f"acknowledged {op['door']} write lost {len(lost)} rows "
                        f"(first {lost[0]})", [op])
            if op["door"] in ("txn", "ktxn") and 0 < there < len(op["ids"]):
                anomaly(f"transaction half visible: {there} of {len(op['ids'])} rows", [op])
            if op["outcome"] == "aborted" and there:
                anomaly(f"aborted transaction visible: {there} rows", [op])
        for p in range(PARTITIONS):
            offsets = sorted(o for (q, o) in at if q == p)
            if offsets != list(range(len(offsets))):
                holes = sorted(set(range(offsets[-1] + 1)) - set(offsets))[:5] if offsets else []
                anomaly(f"partition {p} offsets not dense: missing {holes}")
        for member, p, o, i in h.seen:
            if at.get((p, o)) != i:
                anomaly(f"{member} saw id {i} at {p}/{o}, the log holds {at.get((p, o))} there",
                        [by_id[i]] if i in by_id else [])
        last = {}
        for t, (g, p), o in h.commits:
            if o < last.get((g, p), 0):
                anomaly(f"offset of group {g} partition {p} went back from {last[(g, p)]} "
                        f"to {o}", t=t)
            last[(g, p)] = max(o, last.get((g, p), 0))
        view_ok = self.view_converges()
        if view_ok is not True:
            anomaly(f"view chaos_counts differs from its query: {view_ok}")

        faults = collections.Counter(f["kind"] for f in h.faults)
        acked = [op for op in h.ops if op["outcome"] == "ok"]
        return {
            "seconds": self.seconds,
            "seed": self.seed,
            "agents": len(self.agents),
            "faults": dict(faults),
            "writes_acknowledged": len(acked),
            "rows_acknowledged": sum(len(op["ids"]) for op in acked),
            "writes_by_door": dict(collections.Counter(op["door"] for op in acked)),
            "writes_unknown": sum(1 for op in h.ops if op["outcome"] == "unknown"),
            "writes_unknown_by_door": dict(collections.Counter(
                op["door"] for op in h.ops if op["outcome"] == "unknown")),
            "errors_by_door": {d: collections.Counter(
                op["error"][:80] for op in h.ops if op["door"] == d and op.get("error")
            ).most_common(3) for d in {op["door"] for op in h.ops}},
            "transactions_aborted": sum(1 for op in h.ops if op["outcome"] == "aborted"),
            "rows_in_log": len(rows),
            "rows_seen_by_consumers": len(h.seen),
            "rows_seen_by_member": dict(collections.Counter(m for m, *_ in h.seen)),
            "client_processes_died": h.client_deaths,
            "anomalies": anomalies,
        }

    def view_converges(self, within=90):
        query = "SELECT src, count(*), sum(id) FROM events GROUP BY src ORDER BY src"
        deadline = now() + within
        while True:
            want = self.sql(query, timeout=60)
            got = self.sql("SELECT src, n, total FROM chaos_counts ORDER BY src", timeout=60)
            if [tuple(r) for r in got] == [tuple(r) for r in want]:
                return True
            if now() > deadline:
                return f"view {got} vs query {want}"
            time.sleep(1)

    def close(self):
        for proc in self.kafka_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for a in self.agents:
            a.stop()
        self.pg.close()


def run(seconds, agents=2, seed=None, workdir=None):
    """One run; its report (see `Suite.check`)."""
    seed = seed if seed is not None else random.randrange(1 << 32)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory())
        suite = Suite(seconds, agents, seed, workdir)
        try:
            return suite.run()
        finally:
            suite.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--seed", type=int)
    p.add_argument("--report", help="write the report here as JSON")
    p.add_argument("--workdir", help="keep the agents' data and logs here")
    a = p.parse_args()
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    report = run(a.seconds, a.agents, a.seed, a.workdir)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if a.report:
        with open(a.report, "w") as f:
            f.write(text)
    sys.exit(1 if report["anomalies"] else 0)


if __name__ == "__main__":
    main()
