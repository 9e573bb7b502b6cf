// node-postgres through phigate, against a protected table (encrypted columns, a row
// policy) and a pass-through table. Run by tests/conformance.rs with PROXY_* set.
// Prints one line per check, then 'N passed, N failed'; exits 1 when a check failed.
'use strict';
const { Client, Pool } = require('pg');
const Cursor = require('pg-cursor');
const assert = require('assert');

const config = {
  host: process.env.PROXY_HOST,
  port: Number(process.env.PROXY_PORT),
  user: process.env.PROXY_USER,
  password: process.env.PROXY_PASSWORD,
  database: process.env.PROXY_DB,
};
// node-postgres sends a JS Date as '1906-12-09T00:00:00.000+00:00' (in UTC here)
process.env.TZ = 'UTC';
const BORN = new Date(Date.UTC(1906, 11, 9));

const checks = [];
const check = (name, f) => checks.push([name, f]);

async function reset(c) {
  await c.query('DELETE FROM patients');
  await c.query('DELETE FROM notes');
}

check('parameters, JS Dates, lookups, update, delete', async () => {
  const c = new Client(config);
  await c.connect();
  await reset(c);
  const ins = await c.query(
    'INSERT INTO patients (clinic_id, ssn, full_name, birth_date) VALUES ($1, $2, $3, $4) RETURNING id',
    [3, '123-45-6789', 'Grace', BORN]);
  assert.strictEqual(ins.rowCount, 1);
  const found = await c.query('SELECT full_name, birth_date FROM patients WHERE ssn = $1', ['123-45-6789']);
  assert.strictEqual(found.rows.length, 1);
  assert.strictEqual(found.rows[0].full_name, 'Grace');
  assert.strictEqual(found.rows[0].birth_date.toISOString(), BORN.toISOString());
  const byDate = await c.query('SELECT id FROM patients WHERE birth_date = $1', [BORN]);
  assert.strictEqual(byDate.rows.length, 1);
  const up = await c.query('UPDATE patients SET full_name = $1 WHERE ssn = $2', ['G.', '123-45-6789']);
  assert.strictEqual(up.rowCount, 1);
  const del = await c.query('DELETE FROM patients WHERE ssn = $1', ['123-45-6789']);
  assert.strictEqual(del.rowCount, 1);
  await c.end();
});

check('named prepared statements, reused past the first execution', async () => {
  const c = new Client(config);
  await c.connect();
  await reset(c);
  for (let i = 0; i < 6; i++) {
    await c.query({
      name: 'add-patient',
      text: 'INSERT INTO patients (clinic_id, ssn, full_name) VALUES ($1, $2, $3)',
      values: [3, `000-00-000${i}`, `P${i}`],
    });
  }
  for (let i = 0; i < 6; i++) {
    const r = await c.query({ name: 'find', text: 'SELECT full_name FROM patients WHERE ssn = $1', values: [`000-00-000${i}`] });
    assert.deepStrictEqual(r.rows, [{ full_name: `P${i}` }]);
  }
  await c.end();
});

check('pool and cursor', async () => {
  const pool = new Pool({ ...config, max: 3 });
  await reset(pool);
  await Promise.all([1, 2, 3, 4, 5].map((i) =>
    pool.query('INSERT INTO patients (clinic_id, ssn) VALUES ($1, $2)', [3, `111-11-111${i}`])));
  const c = await pool.connect();
  const cursor = c.query(new Cursor('SELECT ssn FROM patients WHERE ssn LIKE $1 ORDER BY id', ['%']));
  const rows = await cursor.read(100).catch((e) => e);
  // LIKE on an encrypted column is refused; the cursor reports it and the client goes on
  assert.ok(rows instanceof Error, 'LIKE on an encrypted column must be refused');
  await cursor.close().catch(() => {});
  const cursor2 = c.query(new Cursor('SELECT ssn FROM patients ORDER BY id'));
  const got = await cursor2.read(100);
  assert.strictEqual(got.length, 5);
  await cursor2.close();
  c.release();
  await pool.end();
});

check('NOTIFY carries the driver\'s own backend pid', async () => {
  const c = new Client(config);
  await c.connect();
  const got = new Promise((resolve) => c.on('notification', resolve));
  await c.query('LISTEN jobs');
  await c.query("NOTIFY jobs, 'x'");
  const n = await got;
  assert.strictEqual(n.processId, c.processID);
  const pid = await c.query('SELECT pg_backend_pid() AS pid');
  assert.strictEqual(pid.rows[0].pid, c.processID);
  await c.end();
});

check('rowMode array, binary results, two statements in one query, a refusal inside a transaction', async () => {
  const c = new Client(config);
  await c.connect();
  await reset(c);
  const multi = await c.query(
    "INSERT INTO patients (clinic_id, ssn, full_name) VALUES (3, '444-44-4444', 'Zoë 漢字'); " +
    "SELECT full_name FROM patients WHERE ssn = '444-44-4444'");
  assert.strictEqual(multi.length, 2);
  assert.deepStrictEqual(multi[1].rows, [{ full_name: 'Zoë 漢字' }]);
  const arrays = await c.query({ text: 'SELECT ssn, full_name FROM patients WHERE ssn = $1', values: ['444-44-4444'], rowMode: 'array' });
  assert.deepStrictEqual(arrays.rows, [['444-44-4444', 'Zoë 漢字']]);
  const binary = await c.query({ text: 'SELECT clinic_id, full_name FROM patients WHERE ssn = $1', values: ['444-44-4444'], binary: true });
  assert.strictEqual(binary.rows[0].full_name.toString(), 'Zoë 漢字');
  await c.query('BEGIN');
  await c.query('UPDATE patients SET full_name = $1 WHERE ssn = $2', ['changed', '444-44-4444']);
  const refused = await c.query("SELECT id FROM patients WHERE full_name LIKE 'c%'").catch((e) => e);
  assert.strictEqual(refused.code, '0A000');
  await c.query('ROLLBACK');
  const after = await c.query('SELECT full_name FROM patients WHERE ssn = $1', ['444-44-4444']);
  assert.deepStrictEqual(after.rows, [{ full_name: 'Zoë 漢字' }]);
  await c.end();
});

check('pass-through table', async () => {
  const c = new Client(config);
  await c.connect();
  await c.query('INSERT INTO notes (body, created) VALUES ($1, $2)', ['hello', BORN]);
  const r = await c.query('SELECT body FROM notes');
  assert.deepStrictEqual(r.rows, [{ body: 'hello' }]);
  await c.end();
});

(async () => {
  let passed = 0;
  let failed = 0;
  for (const [name, f] of checks) {
    try {
      await f();
      passed++;
      console.log(`ok     ${name}`);
    } catch (e) {
      failed++;
      console.log(`FAILED ${name}\n${e && e.stack ? e.stack : e}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
