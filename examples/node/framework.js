#!/usr/bin/env node
// A small meseta framework in Node (@grpc/grpc-js): runs N shell tasks, or declines
// every offer.
//
//   node framework.js --master 127.0.0.1:5050 --tasks 5 --cmd 'echo hello; sleep 1'
//   node framework.js --master 127.0.0.1:5050 --decline-only     # until Ctrl-C / SIGTERM
//
// It subscribes through meseta.v1.Scheduler (served by meseta-master-api) and reacts to
// the events of its stream, one at a time:
//
//   subscribed  remember framework_id and stream_id (every other call names both)
//   offers      launch pending tasks on offers that fit them (Accept with a launch),
//               decline the rest; with --decline-only, decline everything
//   update      acknowledge it when it carries a uuid (else the agent sends it again);
//               count TASK_FINISHED; any other terminal state is a failure
//   error       the control plane ended the stream for good
//
// When all tasks finished (or on SIGINT / SIGTERM) it tears the framework down and
// exits: 0 when every task finished (or a --decline-only run was stopped), 1 on a failed
// task, a refused call or a broken stream, 2 on bad usage. Each line it prints starts
// with what it is about (subscribed, offers, declined, launched, task, done, error).
//
// The .proto files are read at start-up by @grpc/proto-loader from the repository's
// proto/ (or --proto-dir / $MESETA_PROTO_DIR): no generated code. See README.md.
'use strict';

const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
let grpc;
let protoLoader;
try {
  grpc = require('@grpc/grpc-js');
  protoLoader = require('@grpc/proto-loader');
} catch (e) {
  console.error(`error: ${e.message.split('\n')[0]}: run \`npm ci\` in ${__dirname} (or set NODE_PATH)`);
  process.exit(1);
}

const CALL_TIMEOUT_MS = 10000; // for each unary call

const USAGE = `usage: framework.js [--master ADDR] [--tasks N] [--cmd CMD] [--cpus C] [--mem MIB]
                    [--decline-only] [--role ROLE] [--name NAME] [--user USER]
                    [--refuse-seconds S] [--proto-dir DIR]

  --master          meseta-master-api address (default: $MESETA_MASTER or 127.0.0.1:5050)
  --tasks           how many tasks to run (default: 1)
  --cmd             each task's shell command (default: echo hello from meseta)
  --cpus, --mem     per task (default: 0.1 cpus, 32 MiB)
  --decline-only    launch nothing: decline every offer until SIGINT or SIGTERM
  --role, --name    the framework's role (default: *) and name (default: example-node,
                    also the task id prefix)
  --user            the Unix user tasks run as (default: yours)
  --refuse-seconds  how long declined resources stay away from this framework (default: 1)
  --proto-dir       where meseta/v1/*.proto are (default: $MESETA_PROTO_DIR or the
                    repository's proto/)`;

const TERMINAL_FAILURES = new Set([
  'TASK_FAILED',
  'TASK_KILLED',
  'TASK_ERROR',
  'TASK_LOST',
  'TASK_DROPPED',
  'TASK_GONE',
  'TASK_GONE_BY_OPERATOR',
]);

class Failed extends Error {}

function usageError(msg) {
  console.error(`error: ${msg}\n${USAGE}`);
  process.exit(2);
}

function parseOptions(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        master: { type: 'string', default: process.env.MESETA_MASTER || '127.0.0.1:5050' },
        tasks: { type: 'string', default: '1' },
        cmd: { type: 'string', default: 'echo hello from meseta' },
        cpus: { type: 'string', default: '0.1' },
        mem: { type: 'string', default: '32' },
        'decline-only': { type: 'boolean', default: false },
        role: { type: 'string', default: '*' },
        name: { type: 'string', default: 'example-node' },
        user: { type: 'string', default: os.userInfo().username },
        'refuse-seconds': { type: 'string', default: '1' },
        'proto-dir': {
          type: 'string',
          default: process.env.MESETA_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto'),
        },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (e) {
    usageError(e.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const number = (name) => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || values[name] === '') usageError(`--${name}: \`${values[name]}\` is not a number`);
    return n;
  };
  const opts = {
    master: values.master,
    tasks: number('tasks'),
    cmd: values.cmd,
    cpus: number('cpus'),
    mem: number('mem'),
    declineOnly: values['decline-only'],
    role: values.role,
    name: values.name,
    user: values.user,
    refuseSeconds: number('refuse-seconds'),
    protoDir: values['proto-dir'],
  };
  if (opts.declineOnly) opts.tasks = 0;
  else if (!Number.isInteger(opts.tasks) || opts.tasks < 1) usageError('--tasks must be a whole number, at least 1');
  if (opts.cpus <= 0 || opts.mem <= 0) usageError('--cpus and --mem must be above 0');
  return opts;
}

// The Scheduler service, from meseta's own .proto files. Field names as in the .proto
// (keepCase), enums as their names, oneofs tell which field is set, bytes as Buffers.
function loadScheduler(protoDir) {
  const file = path.join(protoDir, 'meseta', 'v1', 'scheduler.proto');
  if (!fs.existsSync(file)) {
    throw new Failed(`${file} not found (set --proto-dir or MESETA_PROTO_DIR)`);
  }
  const def = protoLoader.loadSync('meseta/v1/scheduler.proto', {
    includeDirs: [protoDir],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).meseta.v1.Scheduler;
}

class Framework {
  constructor(opts, client) {
    this.opts = opts;
    this.client = client;
    this.frameworkId = null; // { value }, from SUBSCRIBED
    this.streamId = '';
    this.pending = [];
    for (let i = 1; i <= opts.tasks; i++) this.pending.push(`${opts.name}-${i}`);
    this.finished = new Set();
  }

  // One unary Scheduler call for this framework; a refusal is a Failed.
  call(method, fields = {}) {
    const request = { framework_id: this.frameworkId, stream_id: this.streamId, ...fields };
    return new Promise((resolve, reject) => {
      this.client[method](request, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, reply) =>
        err ? reject(new Failed(`${method} failed: ${grpc.status[err.code]}: ${err.details}`)) : resolve(reply)
      );
    });
  }

  filters() {
    const s = this.opts.refuseSeconds;
    return { refuse_duration: { seconds: Math.floor(s), nanos: Math.round((s % 1) * 1e9) } };
  }

  // Consumes the stream; resolves when all tasks finished, rejects with Failed, or with
  // the stream's CANCELLED error after stop().
  async run() {
    const info = { user: this.opts.user, name: this.opts.name, roles: [this.opts.role] };
    this.stream = this.client.Subscribe({ framework_info: info }); // no deadline: lives as long as we do
    try {
      for await (const event of this.stream) {
        // Leaving this loop ends the stream, and Teardown needs it open: tear down first.
        try {
          const handler = this[`on_${event.event}`];
          if (handler) await handler.call(this, event[event.event]);
        } catch (e) {
          await this.teardown();
          throw e;
        }
        if (this.opts.tasks && this.finished.size === this.opts.tasks) {
          console.log(`done: all ${this.opts.tasks} tasks finished`);
          await this.teardown();
          return;
        }
      }
      throw new Failed('the event stream ended');
    } catch (e) {
      if (e instanceof Failed || this.stopping) throw e;
      throw new Failed(`the event stream broke: ${grpc.status[e.code] || ''}: ${e.details || e.message}`);
    } finally {
      await this.teardown();
      this.stream.cancel();
    }
  }

  // SIGINT / SIGTERM: tear down while the stream is still open, then end it.
  async stop(signal) {
    this.stopping = signal;
    await this.teardown();
    if (this.stream) this.stream.cancel();
  }

  // Teardown names the stream, so it comes before the stream is cancelled. Once only:
  // later callers wait for the same call.
  teardown() {
    if (!this.frameworkId) return Promise.resolve();
    if (!this.tornDown) {
      this.tornDown = this.call('Teardown').then(
        () => console.log(`teardown: framework ${this.frameworkId.value} removed`),
        (e) => console.error(`teardown: ${e.message}`)
      );
    }
    return this.tornDown;
  }

  on_subscribed(ev) {
    this.frameworkId = ev.framework_id;
    this.streamId = ev.stream_id;
    const hb = ev.heartbeat_interval ? Number(ev.heartbeat_interval.seconds) : 0;
    console.log(`subscribed: framework_id=${ev.framework_id.value} stream_id=${ev.stream_id} heartbeat=${hb}s`);
  }

  async on_offers(ev) {
    const offers = ev.offers;
    console.log(`offers: ${offers.length} (${offers.map((o) => o.hostname).join(', ')})`);
    const unused = [];
    for (const offer of offers) {
      const tasks = this.tasksFor(offer);
      if (tasks.length === 0) {
        unused.push(offer);
        continue;
      }
      const op = { launch: { task_infos: tasks } };
      await this.call('Accept', { offer_ids: [offer.id], operations: [op], filters: this.filters() });
      for (const t of tasks) console.log(`launched: ${t.task_id.value} on ${offer.hostname}`);
    }
    if (unused.length > 0) {
      await this.call('Decline', { offer_ids: unused.map((o) => o.id), filters: this.filters() });
      console.log(`declined: ${unused.length} offers`);
    }
  }

  // As many pending tasks as fit in the offer (none with --decline-only).
  tasksFor(offer) {
    if (this.opts.declineOnly) return [];
    const free = {};
    for (const r of offer.resources) {
      if (r.scalar) free[r.name] = (free[r.name] || 0) + r.scalar.value;
    }
    const tasks = [];
    const { cpus, mem } = this.opts;
    while (this.pending.length > 0 && (free.cpus || 0) >= cpus && (free.mem || 0) >= mem) {
      free.cpus -= cpus;
      free.mem -= mem;
      tasks.push(this.taskInfo(this.pending.shift(), offer));
    }
    return tasks;
  }

  taskInfo(taskId, offer) {
    const role = offer.allocation_info ? offer.allocation_info.role : this.opts.role;
    const scalar = (name, value) => ({
      name,
      type: 'SCALAR',
      scalar: { value },
      allocation_info: { role },
    });
    // CommandInfo.shell absent means true: `value` runs with /bin/sh -c.
    return {
      name: taskId,
      task_id: { value: taskId },
      agent_id: offer.agent_id,
      resources: [scalar('cpus', this.opts.cpus), scalar('mem', this.opts.mem)],
      command: { value: this.opts.cmd },
    };
  }

  async on_update(ev) {
    const s = ev.status;
    const taskId = s.task_id.value;
    console.log(`task ${taskId}: ${s.state}${s.message ? ` (${s.message})` : ''}`);
    if (s.uuid && s.uuid.length > 0) {
      await this.call('Acknowledge', { agent_id: s.agent_id, task_id: s.task_id, uuid: s.uuid });
    }
    if (s.state === 'TASK_FINISHED') this.finished.add(taskId);
    else if (TERMINAL_FAILURES.has(s.state)) {
      throw new Failed(`task ${taskId} ended ${s.state}: ${s.message || '(no message)'}`);
    }
  }

  on_rescind(ev) {
    console.log(`rescind: offer ${ev.offer_id.value}`);
  }

  on_failure(ev) {
    const executor = ev.executor_id ? ev.executor_id.value : '';
    console.log(`failure: agent ${ev.agent_id ? ev.agent_id.value : ''} executor ${executor}`);
  }

  on_error(ev) {
    throw new Failed(`the control plane ended the stream: ${ev.message}`);
  }
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  let Scheduler;
  try {
    Scheduler = loadScheduler(opts.protoDir);
  } catch (e) {
    console.error(`error: ${e.message}`);
    return 1;
  }
  // Loopback clusters must not go through an HTTP proxy from the environment.
  const client = new Scheduler(opts.master, grpc.credentials.createInsecure(), { 'grpc.enable_http_proxy': 0 });
  const fw = new Framework(opts, client);
  const onSignal = (signal) => fw.stop(signal);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await fw.run();
    return 0;
  } catch (e) {
    if (fw.stopping) {
      if (opts.declineOnly) {
        console.log(`done: stopped by ${fw.stopping}`);
        return 0;
      }
      console.error(`error: stopped by ${fw.stopping} before all tasks finished`);
      return 1;
    }
    console.error(`error: ${e.message}`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    client.close();
  }
}

main().then((code) => {
  process.exitCode = code;
});
