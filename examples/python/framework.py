#!/usr/bin/python3
"""A small meseta framework in Python (grpcio): runs N shell tasks, or declines every offer.

    framework.py --master 127.0.0.1:5050 --tasks 5 --cmd 'echo hello; sleep 1'
    framework.py --master 127.0.0.1:5050 --decline-only        # until Ctrl-C / SIGTERM

It subscribes through meseta.v1.Scheduler (served by meseta-master-api), then reacts to
the events of its stream:

  SUBSCRIBED  remember framework_id and stream_id (every other call names both)
  OFFERS      launch pending tasks on offers that fit them (Accept with a LAUNCH), decline
              the rest; with --decline-only, decline everything
  UPDATE      acknowledge it when it carries a uuid (else the agent sends it again);
              count TASK_FINISHED; any other terminal state is a failure
  ERROR       the control plane ended the stream for good

When all tasks finished (or on SIGINT / SIGTERM) it tears the framework down and exits:
0 when every task finished (or a --decline-only run was stopped), 1 on a failed task, a
refused call or a broken stream, 2 on bad usage. Each line it prints starts with what it
is about (`subscribed`, `offers`, `declined`, `launched`, `task`, `done`, `error`), so
a script can follow it.

The Python modules for meseta's .proto files are generated when it starts, with
grpc_tools.protoc (Debian: python3-grpc-tools), into a temporary directory: see
README.md beside this file.
"""

import argparse
import atexit
import getpass
import importlib
import os
import shutil
import signal
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
CALL_TIMEOUT = 10.0  # seconds, for each unary call

# The protos a framework needs (scheduler.proto and what it imports).
SCHEDULER_PROTOS = (
    "meseta/v1/resources.proto",
    "meseta/v1/cluster.proto",
    "meseta/v1/tasks.proto",
    "meseta/v1/scheduler.proto",
)


def default_proto_dir():
    """$MESETA_PROTO_DIR, else the repository's proto/ (this file is examples/python/)."""
    return os.environ.get("MESETA_PROTO_DIR") or os.path.normpath(os.path.join(HERE, "..", "..", "proto"))


def load_protos(proto_dir, files=SCHEDULER_PROTOS):
    """Generates Python modules for `files` (paths under proto_dir) and imports them.

    Returns a namespace whose attributes are the modules by their base name, e.g.
    `pb.scheduler_pb2`, `pb.scheduler_pb2_grpc`, `pb.tasks_pb2`. The modules are written
    to a temporary directory removed at exit; they import each other as `meseta.v1.*`.
    """
    from grpc_tools import protoc

    import grpc_tools

    for f in files:
        if not os.path.isfile(os.path.join(proto_dir, f)):
            raise SystemExit("error: %s not found under %s (set --proto-dir or MESETA_PROTO_DIR)" % (f, proto_dir))
    out = tempfile.mkdtemp(prefix="meseta-py-protos-")
    atexit.register(shutil.rmtree, out, True)
    # grpc_tools ships the well-known types (google/protobuf/duration.proto...) here.
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", "-I" + proto_dir, "-I" + well_known, "--python_out=" + out, "--grpc_python_out=" + out]
    if protoc.main(args + list(files)) != 0:
        raise SystemExit("error: grpc_tools.protoc could not compile %s" % " ".join(files))
    sys.path.insert(0, out)
    pb = argparse.Namespace()
    for f in files:
        base = os.path.splitext(f)[0]
        module = base.replace("/", ".")
        name = os.path.basename(base)
        setattr(pb, name + "_pb2", importlib.import_module(module + "_pb2"))
        setattr(pb, name + "_pb2_grpc", importlib.import_module(module + "_pb2_grpc"))
    return pb


class Stop(Exception):
    """SIGINT or SIGTERM: tear down and leave."""


class Failed(Exception):
    """Something the framework cannot go on after; the message says what."""


class Framework:
    def __init__(self, args, pb, channel):
        self.args = args
        self.pb = pb
        self.sched = pb.scheduler_pb2_grpc.SchedulerStub(channel)
        self.framework_id = None  # a meseta.v1.FrameworkID, from SUBSCRIBED
        self.stream_id = ""
        self.pending = ["%s-%d" % (args.name, i) for i in range(1, args.tasks + 1)]
        self.finished = set()

    # -- calls ------------------------------------------------------------------------

    def call(self, name, **fields):
        """One unary Scheduler call for this framework; a refusal is a Failed."""
        request = getattr(self.pb.scheduler_pb2, name + "Request")(
            framework_id=self.framework_id, stream_id=self.stream_id, **fields
        )
        try:
            return getattr(self.sched, name)(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            raise Failed("%s failed: %s: %s" % (name, e.code().name, e.details()))

    def filters(self):
        tasks_pb2 = self.pb.tasks_pb2
        f = tasks_pb2.Filters()
        f.refuse_duration.FromNanoseconds(int(self.args.refuse_seconds * 1e9))
        return f

    # -- the stream -------------------------------------------------------------------

    def subscribe(self):
        cluster_pb2 = self.pb.cluster_pb2
        info = cluster_pb2.FrameworkInfo(user=self.args.user, name=self.args.name, roles=[self.args.role])
        request = self.pb.scheduler_pb2.SubscribeRequest(framework_info=info)
        return self.sched.Subscribe(request)  # no deadline: the stream lives as long as we do

    def run(self):
        """Consumes the stream; returns when all tasks finished, raises Failed or Stop."""
        stream = self.subscribe()
        try:
            for event in stream:
                kind = event.WhichOneof("event")
                handler = getattr(self, "on_" + kind, None)
                if handler:
                    handler(getattr(event, kind))
                if self.args.tasks and len(self.finished) == self.args.tasks:
                    print("done: all %d tasks finished" % self.args.tasks, flush=True)
                    return
            raise Failed("the event stream ended")
        except grpc.RpcError as e:
            raise Failed("the event stream broke: %s: %s" % (e.code().name, e.details()))
        finally:
            # Teardown needs the stream still open (it names the stream), so it comes first.
            self.teardown()
            stream.cancel()

    def teardown(self):
        if self.framework_id is None:
            return
        try:
            self.call("Teardown")
            print("teardown: framework %s removed" % self.framework_id.value, flush=True)
        except Failed as e:
            print("teardown: %s" % e, file=sys.stderr, flush=True)

    # -- events -----------------------------------------------------------------------

    def on_subscribed(self, ev):
        self.framework_id = ev.framework_id
        self.stream_id = ev.stream_id
        print(
            "subscribed: framework_id=%s stream_id=%s heartbeat=%.0fs"
            % (ev.framework_id.value, ev.stream_id, ev.heartbeat_interval.ToNanoseconds() / 1e9),
            flush=True,
        )

    def on_offers(self, ev):
        offers = list(ev.offers)
        print("offers: %d (%s)" % (len(offers), ", ".join(o.hostname for o in offers)), flush=True)
        unused = []
        for offer in offers:
            tasks = self.tasks_for(offer)
            if not tasks:
                unused.append(offer)
                continue
            op = self.pb.tasks_pb2.Offer.Operation(launch=self.pb.tasks_pb2.Offer.Operation.Launch(task_infos=tasks))
            self.call("Accept", offer_ids=[offer.id], operations=[op], filters=self.filters())
            for t in tasks:
                print("launched: %s on %s" % (t.task_id.value, offer.hostname), flush=True)
        if unused:
            self.call("Decline", offer_ids=[o.id for o in unused], filters=self.filters())
            print("declined: %d offers" % len(unused), flush=True)

    def tasks_for(self, offer):
        """As many pending tasks as fit in the offer (none with --decline-only)."""
        if self.args.decline_only:
            return []
        free = {}
        for r in offer.resources:
            if r.HasField("scalar"):
                free[r.name] = free.get(r.name, 0.0) + r.scalar.value
        tasks = []
        while self.pending and free.get("cpus", 0) >= self.args.cpus and free.get("mem", 0) >= self.args.mem:
            free["cpus"] -= self.args.cpus
            free["mem"] -= self.args.mem
            tasks.append(self.task_info(self.pending.pop(0), offer))
        return tasks

    def task_info(self, task_id, offer):
        tasks_pb2, res_pb2 = self.pb.tasks_pb2, self.pb.resources_pb2
        role = offer.allocation_info.role

        def scalar(name, value):
            return res_pb2.Resource(
                name=name,
                type=res_pb2.Value.SCALAR,
                scalar=res_pb2.Value.Scalar(value=value),
                allocation_info=res_pb2.Resource.AllocationInfo(role=role),
            )

        # CommandInfo.shell absent means true: `value` runs with /bin/sh -c.
        return tasks_pb2.TaskInfo(
            name=task_id,
            task_id=self.pb.cluster_pb2.TaskID(value=task_id),
            agent_id=offer.agent_id,
            resources=[scalar("cpus", self.args.cpus), scalar("mem", self.args.mem)],
            command=tasks_pb2.CommandInfo(value=self.args.cmd),
        )

    def on_update(self, ev):
        status = ev.status
        state = self.pb.tasks_pb2.TaskState.Name(status.state)
        task_id = status.task_id.value
        print("task %s: %s%s" % (task_id, state, (" (%s)" % status.message) if status.message else ""), flush=True)
        if status.uuid:
            self.call("Acknowledge", agent_id=status.agent_id, task_id=status.task_id, uuid=status.uuid)
        if state == "TASK_FINISHED":
            self.finished.add(task_id)
        elif state in ("TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE",
                       "TASK_GONE_BY_OPERATOR"):
            raise Failed("task %s ended %s: %s" % (task_id, state, status.message or "(no message)"))

    def on_rescind(self, ev):
        print("rescind: offer %s" % ev.offer_id.value, flush=True)

    def on_failure(self, ev):
        print("failure: agent %s executor %s" % (ev.agent_id.value, ev.executor_id.value), flush=True)

    def on_error(self, ev):
        raise Failed("the control plane ended the stream: %s" % ev.message)


def parse_args(argv):
    p = argparse.ArgumentParser(description="A small meseta framework: runs N shell tasks, or declines every offer.")
    p.add_argument("--master", default=os.environ.get("MESETA_MASTER", "127.0.0.1:5050"),
                   help="meseta-master-api address, host:port (default: $MESETA_MASTER or 127.0.0.1:5050)")
    p.add_argument("--tasks", type=int, default=1, help="how many tasks to run (default: 1)")
    p.add_argument("--cmd", default="echo hello from meseta", help="each task's shell command")
    p.add_argument("--cpus", type=float, default=0.1, help="cpus per task (default: 0.1)")
    p.add_argument("--mem", type=float, default=32, help="memory per task in MiB (default: 32)")
    p.add_argument("--decline-only", action="store_true",
                   help="launch nothing: decline every offer until SIGINT or SIGTERM")
    p.add_argument("--role", default="*", help="the framework's role (default: *)")
    p.add_argument("--name", default="example-py", help="the framework's name, also the task id prefix")
    p.add_argument("--user", default=getpass.getuser(),
                   help="the Unix user tasks run as (default: yours, as Mesos frameworks do)")
    p.add_argument("--refuse-seconds", type=float, default=1.0,
                   help="how long declined resources stay away from this framework (default: 1)")
    p.add_argument("--proto-dir", default=default_proto_dir(),
                   help="where meseta/v1/*.proto are (default: $MESETA_PROTO_DIR or the repository's proto/)")
    args = p.parse_args(argv)
    if args.tasks < 1 and not args.decline_only:
        p.error("--tasks must be at least 1")
    if args.cpus <= 0 or args.mem <= 0:
        p.error("--cpus and --mem must be above 0")
    if args.decline_only:
        args.tasks = 0
    return args


def main(argv=None):
    args = parse_args(argv)
    pb = load_protos(args.proto_dir)

    def stop(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    # Loopback clusters must not go through an HTTP proxy from the environment.
    channel = grpc.insecure_channel(args.master, options=[("grpc.enable_http_proxy", 0)])
    try:
        Framework(args, pb, channel).run()
        return 0
    except Stop as s:
        if args.decline_only:
            print("done: stopped by %s" % s, flush=True)
            return 0
        print("error: stopped by %s before all tasks finished" % s, file=sys.stderr, flush=True)
        return 1
    except Failed as e:
        print("error: %s" % e, file=sys.stderr, flush=True)
        return 1
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
