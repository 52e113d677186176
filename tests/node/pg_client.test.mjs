// node-postgres (pg) against a running StreamHouse server, with node's own
// test runner: `STREAMHOUSE_DSN=postgresql://… node --test`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";

const dsn = process.env.STREAMHOUSE_DSN;
if (!dsn) throw new Error("STREAMHOUSE_DSN must name a running server");

const client = new pg.Client({ connectionString: dsn });

before(async () => {
  await client.connect();
  await client.query(
    `CREATE STREAM IF NOT EXISTS node_orders (
       id BIGINT NOT NULL, customer TEXT, amount DOUBLE PRECISION,
       paid BOOLEAN, placed TIMESTAMPTZ, qty INT)
     WITH (partitions = 2, key = 'customer')`,
  );
});

after(async () => {
  await client.end();
});

test("parameterized insert and typed results", async () => {
  const placed = new Date("2026-11-26T09:30:00.250Z");
  const ins = await client.query(
    "INSERT INTO node_orders VALUES ($1, $2, $3, $4, $5, $6), ($7, $8, $9, $10, $11, $12)",
    [1, "ann", 10.5, true, placed, 3, 2, "bob", 20, false, placed, 1],
  );
  assert.equal(ins.command, "INSERT");
  assert.equal(ins.rowCount, 2);

  const res = await client.query(
    "SELECT id, customer, amount, paid, placed, qty FROM node_orders WHERE amount > $1 ORDER BY id",
    [5],
  );
  assert.deepEqual(
    res.fields.map((f) => f.name),
    ["id", "customer", "amount", "paid", "placed", "qty"],
  );
  assert.equal(res.rows.length, 2);
  // pg returns int8 as a string (it may exceed a JS number), the rest typed.
  assert.deepEqual(res.rows[0], {
    id: "1", customer: "ann", amount: 10.5, paid: true, placed, qty: 3,
  });
  assert.equal(res.rows[1].customer, "bob");
  assert.equal(res.rows[1].paid, false);
});

test("a named prepared statement is reused", async () => {
  const q = {
    name: "by-customer",
    text: "SELECT count(*)::int AS n, sum(amount) AS total FROM node_orders WHERE customer = $1",
  };
  for (let i = 0; i < 5; i++) {
    const r = await client.query({ ...q, values: ["ann"] });
    assert.deepEqual(r.rows, [{ n: 1, total: 10.5 }]);
  }
  const r = await client.query({ ...q, values: ["nobody"] });
  assert.deepEqual(r.rows, [{ n: 0, total: null }]);
});

test("errors carry SQLSTATEs and the connection survives them", async () => {
  await assert.rejects(client.query("SELECT * FROM no_such_stream"), (e) => {
    assert.equal(e.code, "42P01");
    return true;
  });
  await assert.rejects(client.query("SELEC 1"), (e) => {
    assert.equal(e.code, "42601");
    return true;
  });
  await assert.rejects(client.query("SELECT nope FROM node_orders"), (e) => {
    assert.equal(e.code, "42703");
    return true;
  });
  const r = await client.query("SELECT 1 AS one");
  assert.deepEqual(r.rows, [{ one: 1 }]);
});

test("a pool runs concurrent queries", async () => {
  const pool = new pg.Pool({ connectionString: dsn, max: 4 });
  try {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        pool.query("SELECT $1::int AS v", [i + 1]),
      ),
    );
    assert.deepEqual(results.map((r) => r.rows[0].v), [1, 2, 3, 4, 5, 6, 7, 8]);
  } finally {
    await pool.end();
  }
});

test("literals and aggregates have PostgreSQL's types", async () => {
  const r = await client.query(
    "SELECT 1 AS one, 'x' AS t, 1.5::float8 AS f, count(*) AS n, pg_typeof(now()) AS tz FROM node_orders",
  );
  // int4 arrives as a number; count(*) is int8, a string in pg.
  assert.deepEqual(r.rows, [{ one: 1, t: "x", f: 1.5, n: "2", tz: "timestamp with time zone" }]);
  assert.deepEqual(
    r.fields.map((f) => f.dataTypeID),
    [23, 25, 701, 20, 25],
  );
});

test("every stream column type round-trips", async () => {
  await client.query(
    `CREATE STREAM node_types (b BOOLEAN, i2 SMALLINT, i4 INT, i8 BIGINT, f4 REAL,
       f8 DOUBLE PRECISION, n NUMERIC(12, 3), t TEXT, v VARCHAR(10), by BYTEA, d DATE,
       ts TIMESTAMP, tz TIMESTAMPTZ, j JSON)`,
  );
  const row = [
    true, 12, 34000, "5000000000", 1.5, 2.25, "12345.678", "héllo", "v",
    Buffer.from([0, 1, 255]), "2026-11-26", new Date("2026-11-26T12:30:15.250Z"),
    new Date("2026-11-26T12:30:15Z"), { a: 1, b: ["x"] },
  ];
  await client.query(
    "INSERT INTO node_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    row,
  );
  await client.query("INSERT INTO node_types (t) VALUES (NULL)");
  const got = await client.query({
    text: "SELECT * FROM node_types WHERE b",
    rowMode: "array",
    // DATE as its text, not a local-midnight Date.
    types: { getTypeParser: (oid, fmt) => (oid === 1082 ? (v) => v : pg.types.getTypeParser(oid, fmt)) },
  });
  assert.deepEqual(got.rows[0], row);
  const nulls = await client.query({ text: "SELECT * FROM node_types WHERE b IS NULL", rowMode: "array" });
  assert.deepEqual(nulls.rows[0], Array(14).fill(null));
});

test("cancel stops a running query", async () => {
  const started = Date.now();
  const query = new pg.Query(
    "SELECT count(*) FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3",
  );
  const running = new Promise((resolve, reject) => {
    query.on("error", reject);
    query.on("end", resolve);
  });
  client.query(query);
  const canceller = new pg.Client({ connectionString: dsn });
  setTimeout(() => canceller.cancel(client, query), 500);
  await assert.rejects(running, (e) => {
    assert.equal(e.code, "57014");
    return true;
  });
  assert.ok(Date.now() - started < 10000);
  const r = await client.query("SELECT 2 AS two");
  assert.deepEqual(r.rows, [{ two: 2 }]);
});

test("server settings drivers read", async () => {
  const r = await client.query("SHOW server_version");
  assert.match(r.rows[0].server_version, /^16\./);
  assert.equal(client.connectionParameters.database, "streamhouse");
});
