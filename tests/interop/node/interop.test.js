// Interop tests: Node's @grpc/grpc-js (a pure-JS HTTP/2 stack) against meseta's C gRPC
// layer, through the echo-server test binary.
//
//   ECHO_SERVER=build/tests/integration/echo-server node --test interop.test.js
//
// Dependencies come from `npm ci` in this directory (scripts/test.sh runs it).
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
const ECHO_SERVER = process.env.ECHO_SERVER || '';
const CALL_TIMEOUT_MS = 10000;
const START_TIMEOUT_MS = 30000;
// Never send loopback test traffic through an HTTP proxy from the environment.
const CHANNEL_OPTIONS = { 'grpc.enable_http_proxy': 0 };

const LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

function load(relPath) {
  const def = protoLoader.loadSync(path.join(SOURCE_DIR, relPath), LOADER_OPTIONS);
  return grpc.loadPackageDefinition(def);
}

const echoPkg = load('tests/proto/meseta/test/v1/echo.proto').meseta.test.v1;
const healthPkg = load('proto/grpc/health/v1/health.proto').grpc.health.v1;
const reflectionPkg = load('proto/grpc/reflection/v1alpha/reflection.proto').grpc.reflection.v1alpha;

function deadline(ms = CALL_TIMEOUT_MS) {
  return Date.now() + ms;
}

// Starts echo-server on 127.0.0.1:0 with a private ready file; resolves to
// { proc, address, dir, output() }.
async function startServer(extraArgs = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meseta-echo-node-'));
  const readyFile = path.join(dir, 'ready');
  const args = ['--listen', '127.0.0.1:0', '--ready-file', readyFile, ...extraArgs];
  const proc = spawn(ECHO_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  let exited = null;
  proc.on('exit', (code, signal) => (exited = { code, signal }));
  const started = Date.now();
  for (;;) {
    if (exited) {
      throw new Error(`echo-server exited (${JSON.stringify(exited)}) before it was ready:\n${output}`);
    }
    if (fs.existsSync(readyFile)) {
      const lines = fs.readFileSync(readyFile, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
      if (lines.length > 0) {
        return { proc, address: lines[0], dir, output: () => output, exited: () => exited };
      }
    }
    if (Date.now() - started > START_TIMEOUT_MS) {
      proc.kill('SIGKILL');
      throw new Error(`echo-server not ready after ${START_TIMEOUT_MS} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

// SIGTERM, then wait for exit; resolves to the exit code (must be 0).
function stopServer(server) {
  return new Promise((resolve) => {
    const done = () => {
      fs.rmSync(server.dir, { recursive: true, force: true });
      const e = server.exited();
      resolve(e.code === null ? `signal ${e.signal}` : e.code);
    };
    if (server.exited()) return done();
    const timer = setTimeout(() => server.proc.kill('SIGKILL'), 20000);
    server.proc.on('exit', () => {
      clearTimeout(timer);
      done();
    });
    server.proc.kill('SIGTERM');
  });
}

function unary(client, method, request, opts = {}) {
  return new Promise((resolve, reject) => {
    client[method](request, new grpc.Metadata(), { deadline: deadline(), ...opts }, (err, reply) =>
      err ? reject(err) : resolve(reply)
    );
  });
}

function collect(call) {
  return new Promise((resolve, reject) => {
    const replies = [];
    call.on('data', (r) => replies.push(r));
    call.on('error', reject);
    call.on('end', () => resolve(replies));
  });
}

const skip = ECHO_SERVER ? false : 'ECHO_SERVER is not set (path to the echo-server binary)';

describe('echo-server from @grpc/grpc-js', { skip }, () => {
  let server;
  let echo;

  before(async () => {
    server = await startServer();
    echo = new echoPkg.Echo(server.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  });

  after(async () => {
    if (echo) echo.close();
    if (server) {
      const status = await stopServer(server);
      assert.strictEqual(status, 0, `echo-server did not shut down cleanly:\n${server.output()}`);
    }
  });

  it('unary echoes text and payload', async () => {
    const payload = Buffer.from([0, 1, 2, 255]);
    const reply = await unary(echo, 'Unary', { text: 'hello from node', payload });
    assert.strictEqual(reply.text, 'hello from node');
    assert.deepStrictEqual(Buffer.from(reply.payload), payload);
  });

  it('unary with a 1 MiB payload', async () => {
    const payload = Buffer.alloc(1 << 20, 7);
    const reply = await unary(echo, 'Unary', { text: 'big', payload });
    assert.strictEqual(reply.payload.length, payload.length);
    assert.ok(Buffer.from(reply.payload).equals(payload));
  });

  it('server stream sends count replies', async () => {
    const call = echo.ServerStream({ text: 'tick', count: 5 }, { deadline: deadline() });
    const replies = await collect(call);
    assert.deepStrictEqual(replies.map((r) => r.index), [0, 1, 2, 3, 4]);
    assert.ok(replies.every((r) => r.text === 'tick'));
  });

  it('client stream counts messages and bytes', async () => {
    const sizes = [0, 10, 1000, 70000];
    const reply = await new Promise((resolve, reject) => {
      const call = echo.ClientStream({ deadline: deadline() }, (err, r) => (err ? reject(err) : resolve(r)));
      sizes.forEach((n, i) => call.write({ text: `m${i}`, payload: Buffer.alloc(n, 1) }));
      call.end();
    });
    assert.strictEqual(reply.received, sizes.length);
    assert.strictEqual(reply.received_bytes, sizes.reduce((a, b) => a + b, 0));
    assert.strictEqual(reply.text, 'm3');
  });

  it('bidi echoes each message as it arrives', async () => {
    const call = echo.Bidi({ deadline: deadline() });
    const replies = [];
    const ended = new Promise((resolve, reject) => {
      call.on('error', reject);
      call.on('end', resolve);
    });
    for (let i = 0; i < 5; i++) {
      const next = new Promise((resolve) => call.once('data', resolve));
      call.write({ text: `ping ${i}` });
      const r = await next; // the reply comes before the next request is written
      replies.push(r);
    }
    call.end();
    await ended;
    assert.deepStrictEqual(replies.map((r) => r.index), [0, 1, 2, 3, 4]);
    assert.deepStrictEqual(replies.map((r) => r.text), ['ping 0', 'ping 1', 'ping 2', 'ping 3', 'ping 4']);
  });

  it('Fail answers with the given status and message', async () => {
    const cases = [
      [grpc.status.INVALID_ARGUMENT, 'field `name` is empty'],
      [grpc.status.NOT_FOUND, 'no such framework'],
      [grpc.status.ABORTED, 'compare-and-swap lost'],
      [grpc.status.UNAVAILABLE, 'no leader is known'],
      [grpc.status.PERMISSION_DENIED, 'données refusées ✓ 日本語'],
    ];
    for (const [code, message] of cases) {
      await assert.rejects(unary(echo, 'Fail', { code, message }), (err) => {
        assert.strictEqual(err.code, code);
        assert.strictEqual(err.details, message);
        return true;
      });
    }
  });

  it('deadline shorter than Sleep gives DEADLINE_EXCEEDED', async () => {
    const start = Date.now();
    await assert.rejects(unary(echo, 'Sleep', { delay_ms: 5000 }, { deadline: Date.now() + 300 }), (err) => {
      assert.strictEqual(err.code, grpc.status.DEADLINE_EXCEEDED);
      return true;
    });
    assert.ok(Date.now() - start < 3000);
    const reply = await unary(echo, 'Sleep', { delay_ms: 20 }, { deadline: Date.now() + 5000 });
    assert.ok(reply.deadline_ms > 3000 && reply.deadline_ms <= 5200, `deadline_ms=${reply.deadline_ms}`);
  });

  it('cancelling a server stream leaves the server serving', async () => {
    const call = echo.ServerStream({ text: 'long', count: 200000 }, { deadline: deadline(60000) });
    const status = await new Promise((resolve) => {
      let n = 0;
      call.on('data', () => {
        if (++n === 3) call.cancel();
      });
      call.on('error', (err) => resolve(err.code));
      call.on('end', () => resolve('end'));
    });
    assert.strictEqual(status, grpc.status.CANCELLED);
    const reply = await unary(echo, 'Unary', { text: 'still here' });
    assert.strictEqual(reply.text, 'still here');
  });

  it('unknown method is UNIMPLEMENTED', async () => {
    const client = new grpc.Client(server.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    try {
      const err = await new Promise((resolve) => {
        client.makeUnaryRequest(
          '/meseta.test.v1.Echo/Nope',
          (x) => x,
          (x) => x,
          Buffer.alloc(0),
          new grpc.Metadata(),
          { deadline: deadline() },
          (e) => resolve(e)
        );
      });
      assert.ok(err, 'expected an error');
      assert.strictEqual(err.code, grpc.status.UNIMPLEMENTED);
    } finally {
      client.close();
    }
  });

  it('health Check', async () => {
    const health = new healthPkg.Health(server.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    try {
      assert.strictEqual((await unary(health, 'Check', { service: '' })).status, 'SERVING');
      assert.strictEqual((await unary(health, 'Check', { service: 'meseta.test.v1.Echo' })).status, 'SERVING');
      await assert.rejects(unary(health, 'Check', { service: 'no.such.Service' }), (err) => {
        assert.strictEqual(err.code, grpc.status.NOT_FOUND);
        return true;
      });
    } finally {
      health.close();
    }
  });

  it('health Watch follows SetHealth', async () => {
    const health = new healthPkg.Health(server.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    try {
      const call = health.Watch({ service: 'node.watched' }, { deadline: deadline() });
      const seen = [];
      const flips = [1, 2]; // SERVING, then NOT_SERVING, set through the echo service
      await new Promise((resolve, reject) => {
        call.on('error', (err) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
        call.on('data', async (r) => {
          seen.push(r.status);
          const code = flips.shift();
          if (code === undefined) {
            call.cancel();
            return;
          }
          try {
            await unary(echo, 'SetHealth', { text: 'node.watched', code });
          } catch (err) {
            reject(err);
          }
        });
      });
      assert.deepStrictEqual(seen, ['SERVICE_UNKNOWN', 'SERVING', 'NOT_SERVING']);
    } finally {
      health.close();
    }
  });

  it('reflection lists the services', async () => {
    const refl = new reflectionPkg.ServerReflection(
      server.address,
      grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS
    );
    try {
      const call = refl.ServerReflectionInfo({ deadline: deadline() });
      const done = collect(call);
      call.write({ list_services: '' });
      call.write({ file_containing_symbol: 'meseta.test.v1.Echo' });
      call.write({ file_containing_symbol: 'no.such.Symbol' });
      call.end();
      const [list, file, missing] = await done;

      assert.strictEqual(list.message_response, 'list_services_response');
      const names = list.list_services_response.service.map((s) => s.name);
      for (const want of [
        'meseta.test.v1.Echo',
        'grpc.health.v1.Health',
        'grpc.reflection.v1alpha.ServerReflection',
        'grpc.reflection.v1.ServerReflection',
      ]) {
        assert.ok(names.includes(want), `${want} missing from ${names}`);
      }

      assert.strictEqual(file.message_response, 'file_descriptor_response');
      const blobs = file.file_descriptor_response.file_descriptor_proto;
      assert.ok(blobs.length >= 1);
      assert.ok(blobs.some((b) => Buffer.from(b).includes('meseta.test.v1')));

      assert.strictEqual(missing.message_response, 'error_response');
      assert.strictEqual(missing.error_response.error_code, 5);
    } finally {
      refl.close();
    }
  });
});
