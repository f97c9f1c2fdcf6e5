"""The Python example framework (examples/python/framework.py, grpcio) against a real
control plane: mini-cluster (tests/interop/mini-cluster.c) runs etcd, meseta-registry,
meseta-allocator, meseta-master-api and simulated agents that finish tasks on their own.

    MINI_CLUSTER=build/tests/interop/mini-cluster MESETA_BINARY_DIR=build \\
        /usr/bin/python3 -m unittest -v test_framework

(ctest `interop-framework-python` sets MINI_CLUSTER and the service binaries.)
Waits are bounded hang guards, never timing assertions.
"""

import importlib.util
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

# The example needs grpcio, and grpc_tools to compile meseta's .proto files.
for _module in ("grpc", "grpc_tools"):
    if importlib.util.find_spec(_module) is None:
        print("python module %s missing (python3-grpcio, python3-grpc-tools): run scripts/setup-deps.sh" % _module)
        sys.exit(77)

import grpc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("MESETA_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))
EXAMPLE = os.path.join(SOURCE_DIR, "examples", "python", "framework.py")
PYTHON = "/usr/bin/python3"  # Debian's, with python3-grpcio
START_TIMEOUT = 90.0  # the cluster under ASan on a loaded 2-core machine
RUN_TIMEOUT = 60.0
CALL_TIMEOUT = 10.0

sys.path.insert(0, os.path.dirname(EXAMPLE))
import framework  # noqa: E402  (the example: its proto loader serves the test too)


class LineReader:
    """Lines of a child's stdout, read with a deadline."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self._buf = b""

    def next_line(self, deadline):
        """The next line, or None at EOF; AssertionError past the deadline."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no output within the time allowed; so far:\n" + "\n".join(self.lines))
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                if self._buf:
                    break
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        text = line.decode("utf-8", "replace")
        self.lines.append(text)
        return text

    def unread(self):
        """What was read past the last line returned."""
        return self._buf.decode("utf-8", "replace")

    def wait_for(self, pattern, deadline):
        """Reads until a line matches pattern; returns the match."""
        while True:
            line = self.next_line(deadline)
            if line is None:
                raise AssertionError("output ended before /%s/:\n%s" % (pattern, "\n".join(self.lines)))
            m = re.search(pattern, line)
            if m:
                return m


class MiniCluster:
    """mini-cluster as a child: READY gives master-api's address; closing its stdin stops it."""

    def __init__(self, agents=2, task_ms=300):
        binary = os.environ.get("MINI_CLUSTER", "")
        if not binary:
            raise unittest.SkipTest("MINI_CLUSTER is not set (path to the mini-cluster binary)")
        if not os.access(binary, os.X_OK):
            raise unittest.SkipTest("mini-cluster not found at %s (build it first)" % binary)
        self.dir = tempfile.mkdtemp(prefix="meseta-fw-py-")
        self.stderr_path = os.path.join(self.dir, "mini-cluster.stderr")
        self._stderr = open(self.stderr_path, "wb")
        argv = [binary, "--agents", str(agents), "--task-ms", str(task_ms), "--log-dir", self.dir]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self.out = LineReader(self.proc)
        try:
            m = self.out.wait_for(r"^READY (\S+)$", time.monotonic() + START_TIMEOUT)
        except AssertionError as e:
            self.stop()
            raise AssertionError("mini-cluster did not start: %s\n%s" % (e, self.stderr()))
        self.address = m.group(1)

    def stats(self):
        """The simulated agents' counters, summed (mini-cluster's `stats` command)."""
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        line = self.out.wait_for(r"^STATS (.*)$", time.monotonic() + CALL_TIMEOUT).group(1)
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split())}

    def stderr(self):
        self._stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """End of stdin stops it; its exit status (0: every service stopped cleanly)."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode


def run_example(address, *args):
    return subprocess.Popen(
        [PYTHON, EXAMPLE, "--master", address] + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


class FrameworkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pb = framework.load_protos(
            framework.default_proto_dir(), framework.SCHEDULER_PROTOS + ("meseta/v1/operator.proto",)
        )
        cls.cluster = MiniCluster(agents=2, task_ms=300)
        cls.channel = grpc.insecure_channel(cls.cluster.address, options=[("grpc.enable_http_proxy", 0)])
        cls.operator = cls.pb.operator_pb2_grpc.OperatorStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        rc = cls.cluster.stop()
        if rc != 0:
            raise AssertionError(
                "mini-cluster did not stop cleanly (%s); logs in %s:\n%s" % (rc, cls.cluster.dir, cls.cluster.stderr())
            )
        shutil.rmtree(cls.cluster.dir, ignore_errors=True)

    def frameworks(self, framework_id):
        req = self.pb.operator_pb2.GetFrameworksRequest(
            framework_ids=[self.pb.cluster_pb2.FrameworkID(value=framework_id)]
        )
        return list(self.operator.GetFrameworks(req, timeout=CALL_TIMEOUT).frameworks)

    def wait_frameworks(self, framework_id, pred):
        """GetFrameworks for one id until pred(list) holds (the view follows the allocator)."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            found = self.frameworks(framework_id)
            if pred(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError("GetFrameworks(%s) still %s" % (framework_id, found))
            time.sleep(0.05)

    def test_decline_only(self):
        proc = run_example(self.cluster.address, "--decline-only", "--name", "interop-py-decline")
        out = LineReader(proc)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            fid = out.wait_for(r"^subscribed: framework_id=(\S+) stream_id=(\S+)", deadline).group(1)
            self.assertTrue(fid)
            # Offers from the simulated agents, each declined with an OK answer (a refused
            # Decline ends the example with an error instead), twice over.
            for _ in range(2):
                n = int(out.wait_for(r"^offers: (\d+) ", deadline).group(1))
                self.assertGreaterEqual(n, 1)
                self.assertEqual(int(out.wait_for(r"^declined: (\d+) offers$", deadline).group(1)), n)

            # The Operator API shows it, subscribed.
            (fw,) = self.wait_frameworks(fid, lambda f: len(f) == 1 and f[0].connected)
            self.assertEqual(fw.framework_info.id.value, fid)
            self.assertEqual(fw.framework_info.name, "interop-py-decline")
            self.assertTrue(fw.active)

            proc.send_signal(signal.SIGINT)
            rest, err = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        output = "\n".join(out.lines) + "\n" + out.unread() + rest.decode()
        self.assertEqual(proc.returncode, 0, "output:\n%s\nstderr:\n%s" % (output, err.decode()))
        self.assertIn("teardown: framework %s removed" % fid, output)
        self.assertIn("done: stopped by SIGINT", output)
        # Torn down: no longer listed among the live frameworks.
        self.wait_frameworks(fid, lambda f: len(f) == 0)

    def test_runs_tasks_to_completion(self):
        before = self.cluster.stats()
        proc = run_example(
            self.cluster.address, "--tasks", "5", "--cpus", "0.5", "--mem", "64", "--name", "interop-py-run",
            "--cmd", "echo hello",
        )
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        out, err = out.decode(), err.decode()
        self.assertEqual(proc.returncode, 0, "output:\n%s\nstderr:\n%s" % (out, err))
        ids = ["interop-py-run-%d" % i for i in range(1, 6)]
        launched = re.findall(r"^launched: (\S+) on \S+$", out, re.M)
        self.assertEqual(sorted(launched), ids)
        finished = re.findall(r"^task (\S+): TASK_FINISHED$", out, re.M)
        self.assertEqual(sorted(set(finished)), ids)
        self.assertIn("done: all 5 tasks finished", out)
        self.assertRegex(out, r"(?m)^teardown: framework \S+ removed$")

        # Seen from the agents: 5 launches, and every status (RUNNING, FINISHED) acknowledged.
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            now = self.cluster.stats()
            acks = now["acks"] - before["acks"]
            if (acks >= 10 and now["unacked"] == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(now["run_tasks"] - before["run_tasks"], 5, now)
        self.assertGreaterEqual(acks, 10, now)
        self.assertEqual(now["unacked"], 0, now)

    def test_unreachable_master_is_an_error(self):
        proc = run_example("127.0.0.1:1", "--tasks", "1")
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 1, out.decode())
        self.assertRegex(err.decode(), r"error: the event stream broke: UNAVAILABLE")


if __name__ == "__main__":
    unittest.main()
