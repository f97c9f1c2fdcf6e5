// The Node example framework (examples/node/framework.js, @grpc/grpc-js) against a real
// control plane: mini-cluster (tests/interop/mini-cluster.c) runs etcd, meseta-registry,
// meseta-allocator, meseta-master-api and simulated agents that finish tasks on their own.
//
//   MINI_CLUSTER=build/tests/interop/mini-cluster MESETA_BINARY_DIR=build node --test framework.test.js
//
// (ctest `interop-framework-node` sets MINI_CLUSTER and the service binaries.) The example
// finds @grpc/grpc-js through NODE_PATH=this directory's node_modules. Waits are bounded
// hang guards, never timing assertions.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

if (!fs.existsSync(path.join(__dirname, 'node_modules', '@grpc', 'grpc-js'))) {
  console.error('tests/interop/node: node_modules is missing; run scripts/test.sh (it runs npm ci here)');
  process.exit(77);
}

const { spawn } = require('node:child_process');
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const SOURCE_DIR = process.env.MESETA_SOURCE_DIR || path.resolve(__dirname, '..', '..', '..');
const EXAMPLE = path.join(SOURCE_DIR, 'examples', 'node', 'framework.js');
const MINI_CLUSTER = process.env.MINI_CLUSTER || '';
const START_TIMEOUT_MS = 90000; // the cluster under ASan on a loaded 2-core machine
const RUN_TIMEOUT_MS = 60000;
const CALL_TIMEOUT_MS = 10000;

const operatorPkg = grpc.loadPackageDefinition(
  protoLoader.loadSync('meseta/v1/operator.proto', {
    includeDirs: [path.join(SOURCE_DIR, 'proto')],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  })
).meseta.v1;

// A child process whose stdout is read line by line; waitFor(re) resolves with the match
// of the first line from now on that matches, or rejects at EOF or after timeoutMs.
function child(argv, opts = {}) {
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  const c = { proc, lines: [], stderr: '', exit: null, waiters: [] };
  let partial = '';
  let seen = 0;
  const pump = () => {
    for (const w of [...c.waiters]) {
      while (w.next < c.lines.length) {
        const m = c.lines[w.next++].match(w.re);
        if (m) {
          c.waiters.splice(c.waiters.indexOf(w), 1);
          clearTimeout(w.timer);
          seen = w.next; // the next waitFor starts after this line
          w.resolve(m);
          break;
        }
      }
      if (c.exit && c.waiters.includes(w)) {
        c.waiters.splice(c.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.reject(new Error(`${argv[0]} exited (${JSON.stringify(c.exit)}) before /${w.re.source}/:\n${c.output()}`));
      }
    }
  };
  proc.stdout.on('data', (d) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop();
    c.lines.push(...parts);
    pump();
  });
  proc.stderr.on('data', (d) => (c.stderr += d));
  c.exited = new Promise((resolve) =>
    proc.on('close', (code, signal) => {
      if (partial) c.lines.push(partial);
      c.exit = { code, signal };
      pump();
      resolve(c.exit);
    })
  );
  c.output = () => `${c.lines.join('\n')}\nstderr:\n${c.stderr}`;
  c.waitFor = (re, timeoutMs = RUN_TIMEOUT_MS) =>
    new Promise((resolve, reject) => {
      const w = { re, next: seen, resolve, reject };
      w.timer = setTimeout(() => {
        c.waiters.splice(c.waiters.indexOf(w), 1);
        reject(new Error(`no line /${re.source}/ within ${timeoutMs} ms:\n${c.output()}`));
      }, timeoutMs);
      c.waiters.push(w);
      pump();
    });
  // Resolves to the exit; SIGKILL if it takes longer than timeoutMs.
  c.wait = async (timeoutMs = RUN_TIMEOUT_MS) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    const e = await c.exited;
    clearTimeout(timer);
    return e;
  };
  return c;
}

function runExample(address, ...args) {
  return child([process.execPath, EXAMPLE, '--master', address, ...args], {
    env: { ...process.env, NODE_PATH: path.join(__dirname, 'node_modules') },
  });
}

function getFrameworks(operator, frameworkId) {
  return new Promise((resolve, reject) =>
    operator.GetFrameworks(
      { framework_ids: [{ value: frameworkId }] },
      { deadline: Date.now() + CALL_TIMEOUT_MS },
      (err, reply) => (err ? reject(err) : resolve(reply.frameworks))
    )
  );
}

// GetFrameworks for one id until pred(list) holds (the view follows the allocator).
async function waitFrameworks(operator, frameworkId, pred) {
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  for (;;) {
    const found = await getFrameworks(operator, frameworkId);
    if (pred(found)) return found;
    if (Date.now() > deadline) throw new Error(`GetFrameworks(${frameworkId}) still ${JSON.stringify(found)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The simulated agents' counters, summed (mini-cluster's `stats` command).
async function stats(cluster) {
  cluster.proc.stdin.write('stats\n');
  const line = (await cluster.waitFor(/^STATS (.*)$/, CALL_TIMEOUT_MS))[1];
  return Object.fromEntries(line.split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
}

const skip = MINI_CLUSTER ? false : 'MINI_CLUSTER is not set (path to the mini-cluster binary)';

describe('the Node example framework on a mini-cluster', { skip }, () => {
  let cluster;
  let dir;
  let address;
  let operator;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meseta-fw-node-'));
    cluster = child([MINI_CLUSTER, '--agents', '2', '--task-ms', '300', '--log-dir', dir]);
    address = (await cluster.waitFor(/^READY (\S+)$/, START_TIMEOUT_MS))[1];
    operator = new operatorPkg.Operator(address, grpc.credentials.createInsecure(), {
      'grpc.enable_http_proxy': 0,
    });
  });

  after(async () => {
    if (operator) operator.close();
    if (!cluster) return;
    cluster.proc.stdin.end(); // end of stdin stops it
    const e = await cluster.wait();
    const why = `mini-cluster did not stop cleanly (logs in ${dir}):\n${cluster.output()}`;
    assert.deepStrictEqual(e, { code: 0, signal: null }, why);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('subscribes, receives offers and declines them', async () => {
    const fw = runExample(address, '--decline-only', '--name', 'interop-node-decline');
    try {
      const fid = (await fw.waitFor(/^subscribed: framework_id=(\S+) stream_id=(\S+)/))[1];
      assert.ok(fid);
      // Offers from the simulated agents, each declined with an OK answer (a refused
      // Decline ends the example with an error instead), twice over.
      for (let i = 0; i < 2; i++) {
        const n = Number((await fw.waitFor(/^offers: (\d+) /))[1]);
        assert.ok(n >= 1);
        assert.strictEqual(Number((await fw.waitFor(/^declined: (\d+) offers$/))[1]), n);
      }

      // The Operator API shows it, subscribed.
      const [f] = await waitFrameworks(operator, fid, (l) => l.length === 1 && l[0].connected);
      assert.strictEqual(f.framework_info.id.value, fid);
      assert.strictEqual(f.framework_info.name, 'interop-node-decline');
      assert.ok(f.active);

      fw.proc.kill('SIGINT');
      const e = await fw.wait();
      assert.deepStrictEqual(e, { code: 0, signal: null }, fw.output());
      assert.ok(fw.lines.includes(`teardown: framework ${fid} removed`), fw.output());
      assert.ok(fw.lines.includes('done: stopped by SIGINT'), fw.output());
      // Torn down: no longer listed among the live frameworks.
      await waitFrameworks(operator, fid, (l) => l.length === 0);
    } finally {
      fw.proc.kill('SIGKILL');
    }
  });

  it('runs tasks to completion', async () => {
    const before = await stats(cluster);
    const args = ['--tasks', '5', '--cpus', '0.5', '--mem', '64', '--name', 'interop-node-run', '--cmd', 'echo hi'];
    const fw = runExample(address, ...args);
    const e = await fw.wait();
    assert.deepStrictEqual(e, { code: 0, signal: null }, fw.output());
    const ids = [1, 2, 3, 4, 5].map((i) => `interop-node-run-${i}`);
    const launched = fw.lines.map((l) => l.match(/^launched: (\S+) on \S+$/)).filter(Boolean).map((m) => m[1]);
    assert.deepStrictEqual(launched.sort(), ids, fw.output());
    const finished = new Set(
      fw.lines.map((l) => l.match(/^task (\S+): TASK_FINISHED$/)).filter(Boolean).map((m) => m[1])
    );
    assert.deepStrictEqual([...finished].sort(), ids, fw.output());
    assert.ok(fw.lines.includes('done: all 5 tasks finished'), fw.output());
    assert.ok(fw.lines.some((l) => /^teardown: framework \S+ removed$/.test(l)), fw.output());

    // Seen from the agents: 5 launches, and every status (RUNNING, FINISHED) acknowledged.
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    let now;
    for (;;) {
      now = await stats(cluster);
      if ((now.acks - before.acks >= 10 && now.unacked === 0) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.strictEqual(now.run_tasks - before.run_tasks, 5, JSON.stringify(now));
    assert.ok(now.acks - before.acks >= 10, JSON.stringify(now));
    assert.strictEqual(now.unacked, 0, JSON.stringify(now));
  });

  it('an unreachable master is an error', async () => {
    const fw = runExample('127.0.0.1:1', '--tasks', '1');
    const e = await fw.wait();
    assert.strictEqual(e.code, 1, fw.output());
    assert.match(fw.stderr, /error: the event stream broke: UNAVAILABLE/);
  });
});
