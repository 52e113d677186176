// kafkajs (a Kafka client written in JavaScript, its own wire code) against
// a running StreamHouse server's Kafka door, with node's test runner:
// `STREAMHOUSE_KAFKA=host:port STREAMHOUSE_DSN=postgresql://… node --test
// tests/node/kafkajs_client.mjs`. The topic admin calls, an idempotent
// gzip producer with keys and headers, a consumer group that reads it all
// and commits, and the same rows counted through SQL.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { Kafka, CompressionTypes, logLevel } from "kafkajs";
import pg from "pg";

const broker = process.env.STREAMHOUSE_KAFKA;
const dsn = process.env.STREAMHOUSE_DSN;
if (!broker || !dsn) throw new Error("STREAMHOUSE_KAFKA and STREAMHOUSE_DSN must name a running server");

const kafka = new Kafka({ clientId: "kafkajs-test", brokers: [broker], logLevel: logLevel.NOTHING });
const admin = kafka.admin();
const topic = "kafkajs_orders";
const count = 300;

after(async () => {
  await admin.disconnect();
});

test("topic admin calls", async () => {
  await admin.connect();
  assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] }), true);
  assert.ok((await admin.listTopics()).includes(topic));
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  assert.equal(meta.topics[0].partitions.length, 3);
  // Creating it again answers TOPIC_ALREADY_EXISTS, which kafkajs reports
  // as false.
  assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] }), false);
});

test("idempotent gzip produce, group consume with commits, SQL sees the rows", async () => {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = Array.from({ length: count }, (_, i) => ({
    key: `k${i % 7}`,
    value: JSON.stringify({ n: i }),
    headers: { origin: "kafkajs" },
  }));
  const sent = await producer.send({ topic, compression: CompressionTypes.GZIP, acks: -1, messages });
  assert.equal(sent.length > 0, true);
  for (const r of sent) assert.equal(r.errorCode, 0);
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: "kafkajs-readers" });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${seen.length} of ${count}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        assert.equal(message.headers.origin.toString(), "kafkajs");
        seen.push(JSON.parse(message.value.toString()).n);
        if (seen.length === count) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.commitOffsets([]);
  await consumer.disconnect();
  assert.deepEqual([...seen].sort((a, b) => a - b), Array.from({ length: count }, (_, i) => i));

  // The group's committed offsets are the partitions' ends.
  const committed = await admin.fetchOffsets({ groupId: "kafkajs-readers", topics: [topic] });
  const total = committed[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  assert.equal(total, count);
  const ends = await admin.fetchTopicOffsets(topic);
  assert.equal(ends.reduce((s, p) => s + Number(p.high), 0), count);
  const groups = await admin.describeGroups(["kafkajs-readers"]);
  assert.equal(groups.groups[0].groupId, "kafkajs-readers");

  const client = new pg.Client({ connectionString: dsn });
  await client.connect();
  const res = await client.query(
    `SELECT count(*)::bigint AS n, count(DISTINCT key)::bigint AS keys FROM ${topic}`,
  );
  await client.end();
  assert.equal(Number(res.rows[0].n), count);
  assert.equal(Number(res.rows[0].keys), 7);
});

test("deleting the topic", async () => {
  await admin.deleteTopics({ topics: [topic] });
  assert.ok(!(await admin.listTopics()).includes(topic));
});
