"""Interop tests: Python's gRPC (grpcio, the C++-core client) against meseta's C gRPC layer.

The server under test is `echo-server` (tests/integration), started per test class on
127.0.0.1:0 (or a unix socket) with a private ready file. Run with Debian's interpreter:

    ECHO_SERVER=build/tests/integration/echo-server /usr/bin/python3 -m unittest -v test_interop
    /usr/bin/python3 test_interop.py build/tests/integration/echo-server [-v] [TestClass.test_x]

Stubs are generated at test time with grpc_tools.protoc from the repo's .proto files.
"""

import importlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("MESETA_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CALL_TIMEOUT = 10.0  # seconds; every call has a deadline so a broken server cannot hang the suite
START_TIMEOUT = 30.0  # sanitizer builds start slowly on small machines

# Channel options: never route loopback test traffic through an HTTP proxy from the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def echo_server_path():
    """The echo-server binary: $ECHO_SERVER, else the first argv (see __main__)."""
    return os.environ.get("ECHO_SERVER", "")


# --------------------------------------------------------------------------------------
# Stub generation (once per process).
#
# The protos are copied flat into a staging directory before compiling, so the generated
# modules are top-level (`echo_pb2`, `health_pb2`, ...) and cannot collide with the installed
# `grpc` package (a `grpc/health/v1/health_pb2.py` would be shadowed by grpcio's `grpc`).
# The proto *package* names (what goes on the wire) are unchanged.

_PROTOS = {
    "echo": "tests/proto/meseta/test/v1/echo.proto",
    "health": "proto/grpc/health/v1/health.proto",
    "reflection_v1alpha": "proto/grpc/reflection/v1alpha/reflection.proto",
    "reflection_v1": "proto/grpc/reflection/v1/reflection.proto",
}
_stubs = None
_stub_dir = None


class Stubs:
    """Generated modules, e.g. stubs.echo_pb2, stubs.echo_pb2_grpc, stubs.health_pb2."""


def load_stubs():
    global _stubs, _stub_dir
    if _stubs is not None:
        return _stubs
    from grpc_tools import protoc

    _stub_dir = tempfile.mkdtemp(prefix="meseta-interop-stubs-")
    stage = os.path.join(_stub_dir, "proto")
    os.makedirs(stage)
    for name, rel in _PROTOS.items():
        shutil.copy(os.path.join(SOURCE_DIR, rel), os.path.join(stage, name + ".proto"))
    args = ["grpc_tools.protoc", "-I" + stage, "--python_out=" + _stub_dir, "--grpc_python_out=" + _stub_dir]
    args += [os.path.join(stage, name + ".proto") for name in _PROTOS]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError("grpc_tools.protoc failed with %d: %s" % (rc, " ".join(args)))
    sys.path.insert(0, _stub_dir)
    stubs = Stubs()
    for name in _PROTOS:
        setattr(stubs, name + "_pb2", importlib.import_module(name + "_pb2"))
        setattr(stubs, name + "_pb2_grpc", importlib.import_module(name + "_pb2_grpc"))
    _stubs = stubs
    return stubs


def _cleanup_stubs():
    if _stub_dir:
        shutil.rmtree(_stub_dir, ignore_errors=True)


import atexit  # noqa: E402

atexit.register(_cleanup_stubs)


# --------------------------------------------------------------------------------------
# The server under test.


class EchoServer:
    """Starts echo-server, waits for its ready file, stops it with SIGTERM.

    `addresses` are the bound addresses from the ready file, in --listen order.
    stop() returns the exit status; a graceful shutdown must exit 0 (a sanitizer report
    or a crash at shutdown makes it non-zero).
    """

    def __init__(self, listen=("127.0.0.1:0",), extra_args=(), workdir=None):
        binary = echo_server_path()
        if not binary:
            raise unittest.SkipTest("ECHO_SERVER is not set (path to the echo-server binary)")
        if not os.access(binary, os.X_OK):
            raise unittest.SkipTest("echo-server not found at %s (build it first)" % binary)
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="meseta-echo-")
        self.ready_file = os.path.join(self.dir, "ready")
        self.log_path = os.path.join(self.dir, "echo-server.log")
        self.argv = [binary]
        for a in listen:
            self.argv += ["--listen", a]
        self.argv += ["--ready-file", self.ready_file] + list(extra_args)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        self.addresses = self._wait_ready()
        self.address = self.addresses[0]

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "echo-server exited with %s before it was ready: %s\n%s"
                    % (self.proc.returncode, " ".join(self.argv), self.log())
                )
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as f:
                    lines = [line.strip() for line in f if line.strip()]
                if lines:
                    return lines
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError("echo-server not ready after %ss: %s\n%s" % (START_TIMEOUT, " ".join(self.argv), self.log()))

    def log(self):
        if not self._log.closed:
            self._log.flush()
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                return "did not exit within %ss of SIGTERM" % timeout
        self._log.close()
        return self.proc.returncode

    def cleanup(self):
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class ServerTestCase(unittest.TestCase):
    """One echo-server per test class; subclasses set LISTEN / EXTRA_ARGS."""

    LISTEN = ("127.0.0.1:0",)
    EXTRA_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.pb = load_stubs()
        cls.server = EchoServer(cls.LISTEN, cls.EXTRA_ARGS)
        cls.channel = grpc.insecure_channel(cls.server.address, options=CHANNEL_OPTIONS)
        cls.echo = cls.pb.echo_pb2_grpc.EchoStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        status = cls.server.stop()
        log = cls.server.log()
        cls.server.cleanup()
        if status != 0:
            raise AssertionError("echo-server did not shut down cleanly on SIGTERM (%s):\n%s" % (status, log))

    def req(self, **kw):
        return self.pb.echo_pb2.EchoRequest(**kw)

    def assertRpcError(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, "details: %r" % cm.exception.details())
        return cm.exception


# --------------------------------------------------------------------------------------


class CallKindsTest(ServerTestCase):
    def test_unary(self):
        reply = self.echo.Unary(self.req(text="hello", payload=b"\x00\x01\xffbytes"), timeout=CALL_TIMEOUT)
        self.assertEqual(reply.text, "hello")
        self.assertEqual(reply.payload, b"\x00\x01\xffbytes")

    def test_unary_empty_request(self):
        reply = self.echo.Unary(self.req(), timeout=CALL_TIMEOUT)
        self.assertEqual(reply.text, "")
        self.assertEqual(reply.payload, b"")

    def test_unary_large_payload(self):
        payload = os.urandom(1 << 20)  # 1 MiB, under the default 4 MiB limit
        reply = self.echo.Unary(self.req(text="big", payload=payload), timeout=CALL_TIMEOUT)
        self.assertEqual(reply.payload, payload)

    def test_unary_with_call_metadata(self):
        reply, call = self.echo.Unary.with_call(
            self.req(text="md"), metadata=(("x-meseta-test", "1"),), timeout=CALL_TIMEOUT
        )
        self.assertEqual(reply.text, "md")
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_server_stream(self):
        replies = list(self.echo.ServerStream(self.req(text="tick", count=5), timeout=CALL_TIMEOUT))
        self.assertEqual([r.index for r in replies], [0, 1, 2, 3, 4])
        self.assertTrue(all(r.text == "tick" for r in replies))

    def test_server_stream_zero(self):
        call = self.echo.ServerStream(self.req(text="none", count=0), timeout=CALL_TIMEOUT)
        self.assertEqual(list(call), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_server_stream_many(self):
        n = 2000
        replies = list(self.echo.ServerStream(self.req(text="n", count=n), timeout=30))
        self.assertEqual(len(replies), n)
        self.assertEqual(replies[-1].index, n - 1)

    def test_client_stream(self):
        sizes = [0, 1, 100, 4096, 70000]
        msgs = [self.req(text="m%d" % i, payload=b"x" * s) for i, s in enumerate(sizes)]
        reply = self.echo.ClientStream(iter(msgs), timeout=CALL_TIMEOUT)
        self.assertEqual(reply.received, len(sizes))
        self.assertEqual(reply.received_bytes, sum(sizes))
        self.assertEqual(reply.text, "m4")

    def test_client_stream_empty(self):
        reply = self.echo.ClientStream(iter([]), timeout=CALL_TIMEOUT)
        self.assertEqual(reply.received, 0)
        self.assertEqual(reply.received_bytes, 0)

    def test_bidi_ping_pong(self):
        # Each reply must arrive before the next request is sent: the server echoes immediately.
        outbox = queue.Queue()

        def requests():
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item

        call = self.echo.Bidi(requests(), timeout=CALL_TIMEOUT)
        for i in range(10):
            outbox.put(self.req(text="ping %d" % i, payload=bytes([i])))
            reply = next(call)
            self.assertEqual(reply.index, i)
            self.assertEqual(reply.text, "ping %d" % i)
            self.assertEqual(reply.payload, bytes([i]))
        outbox.put(None)  # half-close
        self.assertEqual(list(call), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_bidi_batch(self):
        msgs = [self.req(text=str(i)) for i in range(50)]
        replies = list(self.echo.Bidi(iter(msgs), timeout=CALL_TIMEOUT))
        self.assertEqual([r.index for r in replies], list(range(50)))
        self.assertEqual([r.text for r in replies], [str(i) for i in range(50)])

    def test_concurrent_calls(self):
        errors = []

        def worker(k):
            try:
                for i in range(20):
                    r = self.echo.Unary(self.req(text="%d-%d" % (k, i)), timeout=CALL_TIMEOUT)
                    if r.text != "%d-%d" % (k, i):
                        errors.append("bad reply %r" % r.text)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])


class CompressionTest(ServerTestCase):
    def test_unary_gzip_request(self):
        payload = b"meseta " * 10000  # compressible, so gzip really applies
        reply = self.echo.Unary(
            self.req(text="gz", payload=payload), compression=grpc.Compression.Gzip, timeout=CALL_TIMEOUT
        )
        self.assertEqual(reply.text, "gz")
        self.assertEqual(reply.payload, payload)

    def test_client_stream_gzip_channel(self):
        with grpc.insecure_channel(
            self.server.address, options=CHANNEL_OPTIONS, compression=grpc.Compression.Gzip
        ) as ch:
            stub = self.pb.echo_pb2_grpc.EchoStub(ch)
            msgs = [self.req(text="c%d" % i, payload=b"a" * 5000) for i in range(6)]
            reply = stub.ClientStream(iter(msgs), timeout=CALL_TIMEOUT)
            self.assertEqual(reply.received, 6)
            self.assertEqual(reply.received_bytes, 30000)
            replies = list(stub.Bidi(iter(msgs), timeout=CALL_TIMEOUT))
            self.assertEqual(len(replies), 6)


class StatusTest(ServerTestCase):
    def test_fail_codes_and_messages(self):
        cases = [
            (grpc.StatusCode.INVALID_ARGUMENT, "field `resources[0].name` is empty"),
            (grpc.StatusCode.NOT_FOUND, "framework `f-1` not found"),
            (grpc.StatusCode.PERMISSION_DENIED, "principal `ops` may not reserve"),
            (grpc.StatusCode.FAILED_PRECONDITION, "agent is draining"),
            (grpc.StatusCode.ABORTED, "compare-and-swap lost at revision 42"),
            (grpc.StatusCode.UNAVAILABLE, "no leader is known"),
            (grpc.StatusCode.INTERNAL, "100% broken: a=b&c, \"quoted\"\ttab"),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many offers"),
        ]
        for code, message in cases:
            with self.subTest(code=code):
                err = self.assertRpcError(
                    code, self.echo.Fail, self.req(code=code.value[0], message=message), timeout=CALL_TIMEOUT
                )
                self.assertEqual(err.details(), message)

    def test_fail_utf8_message(self):
        message = "données invalides: ünïcødé ✓ 日本語 — 🚀"
        err = self.assertRpcError(
            grpc.StatusCode.INVALID_ARGUMENT, self.echo.Fail, self.req(code=3, message=message), timeout=CALL_TIMEOUT
        )
        self.assertEqual(err.details(), message)


class DeadlineTest(ServerTestCase):
    def test_deadline_exceeded(self):
        start = time.monotonic()
        self.assertRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, self.echo.Sleep, self.req(delay_ms=5000), timeout=0.3)
        self.assertLess(time.monotonic() - start, 3.0)
        # The server is still fine afterwards.
        self.assertEqual(self.echo.Unary(self.req(text="after"), timeout=CALL_TIMEOUT).text, "after")

    def test_sleep_within_deadline_reports_remaining(self):
        reply = self.echo.Sleep(self.req(delay_ms=50), timeout=5.0)
        self.assertFalse(reply.cancelled)
        self.assertGreater(reply.deadline_ms, 3000)
        self.assertLessEqual(reply.deadline_ms, 5200)  # grpc-timeout is rounded up on the wire

    def test_sleep_without_deadline(self):
        reply = self.echo.Sleep(self.req(delay_ms=10))
        self.assertEqual(reply.deadline_ms, -1)


class CancellationTest(ServerTestCase):
    def test_cancel_server_stream_mid_stream(self):
        # 100k replies: far more than the server can send before the cancel arrives, yet
        # small enough that the client drains what is already in flight quickly.
        call = self.echo.ServerStream(self.req(text="long", count=100000), timeout=60)
        got = [next(call) for _ in range(3)]
        self.assertEqual([r.index for r in got], [0, 1, 2])
        call.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in call:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.CANCELLED)
        # The server still answers new calls, of every kind.
        self.assertEqual(self.echo.Unary(self.req(text="still here"), timeout=CALL_TIMEOUT).text, "still here")
        self.assertEqual(len(list(self.echo.ServerStream(self.req(count=3), timeout=CALL_TIMEOUT))), 3)

    def test_cancel_bidi_mid_stream(self):
        outbox = queue.Queue()

        def requests():
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item

        call = self.echo.Bidi(requests(), timeout=60)
        for i in range(3):
            outbox.put(self.req(text=str(i)))
            self.assertEqual(next(call).index, i)
        call.cancel()
        outbox.put(None)
        with self.assertRaises(grpc.RpcError) as cm:
            next(call)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.CANCELLED)
        self.assertEqual(self.echo.Unary(self.req(text="ok"), timeout=CALL_TIMEOUT).text, "ok")

    def test_cancel_sleep(self):
        fut = self.echo.Sleep.future(self.req(delay_ms=10000), timeout=60)
        time.sleep(0.2)
        self.assertTrue(fut.cancel())
        self.assertEqual(self.echo.Unary(self.req(text="ok"), timeout=CALL_TIMEOUT).text, "ok")

    def test_many_cancelled_streams(self):
        for _ in range(10):
            call = self.echo.ServerStream(self.req(count=100000), timeout=60)
            next(call)
            call.cancel()
        self.assertEqual(self.echo.Unary(self.req(text="ok"), timeout=CALL_TIMEOUT).text, "ok")


class MessageLimitTest(ServerTestCase):
    EXTRA_ARGS = ("--max-message-bytes", "65536")

    def test_request_over_limit(self):
        self.assertRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            self.echo.Unary,
            self.req(payload=b"\0" * (100 * 1024)),
            timeout=CALL_TIMEOUT,
        )

    def test_stream_message_over_limit(self):
        msgs = [self.req(payload=b"a" * 1000), self.req(payload=b"b" * (100 * 1024))]
        self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.echo.ClientStream, iter(msgs), timeout=CALL_TIMEOUT)

    def test_request_under_limit_still_works(self):
        payload = b"\1" * (32 * 1024)
        self.assertEqual(self.echo.Unary(self.req(payload=payload), timeout=CALL_TIMEOUT).payload, payload)


class UnknownMethodTest(ServerTestCase):
    def test_unknown_method_is_unimplemented_immediately(self):
        nope = self.channel.unary_unary("/meseta.test.v1.Echo/Nope")
        start = time.monotonic()
        self.assertRpcError(grpc.StatusCode.UNIMPLEMENTED, nope, b"", timeout=CALL_TIMEOUT)
        self.assertLess(time.monotonic() - start, 2.0, "UNIMPLEMENTED must not wait for the deadline")

    def test_unknown_service(self):
        nope = self.channel.unary_unary("/no.such.Service/Method")
        self.assertRpcError(grpc.StatusCode.UNIMPLEMENTED, nope, b"\x0a\x01x", timeout=CALL_TIMEOUT)

    def test_unknown_streaming_method(self):
        nope = self.channel.stream_stream("/meseta.test.v1.Echo/NopeStream")
        call = nope(iter([b"", b""]), timeout=CALL_TIMEOUT)
        with self.assertRaises(grpc.RpcError) as cm:
            list(call)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertEqual(self.echo.Unary(self.req(text="ok"), timeout=CALL_TIMEOUT).text, "ok")


class HealthTest(ServerTestCase):
    def setUp(self):
        self.health = self.pb.health_pb2_grpc.HealthStub(self.channel)
        self.H = self.pb.health_pb2.HealthCheckResponse

    def check(self, service):
        return self.health.Check(self.pb.health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT).status

    def test_check_overall_and_echo(self):
        self.assertEqual(self.check(""), self.H.SERVING)
        self.assertEqual(self.check("meseta.test.v1.Echo"), self.H.SERVING)

    def test_check_unknown_service(self):
        self.assertRpcError(
            grpc.StatusCode.NOT_FOUND,
            self.health.Check,
            self.pb.health_pb2.HealthCheckRequest(service="no.such.Service"),
            timeout=CALL_TIMEOUT,
        )

    def test_watch_follows_set_health(self):
        svc = "meseta.test.v1.Echo"
        watch = self.health.Watch(self.pb.health_pb2.HealthCheckRequest(service=svc), timeout=30)
        try:
            self.assertEqual(next(watch).status, self.H.SERVING)
            self.echo.SetHealth(self.req(text=svc, code=2), timeout=CALL_TIMEOUT)
            self.assertEqual(next(watch).status, self.H.NOT_SERVING)
            self.assertEqual(self.check(svc), self.H.NOT_SERVING)
            self.echo.SetHealth(self.req(text=svc, code=1), timeout=CALL_TIMEOUT)
            self.assertEqual(next(watch).status, self.H.SERVING)
            self.assertEqual(self.check(svc), self.H.SERVING)
        finally:
            watch.cancel()
            self.echo.SetHealth(self.req(text=svc, code=1), timeout=CALL_TIMEOUT)

    def test_watch_unknown_service(self):
        watch = self.health.Watch(self.pb.health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=30)
        try:
            self.assertEqual(next(watch).status, self.H.SERVICE_UNKNOWN)
        finally:
            watch.cancel()


# --------------------------------------------------------------------------------------
# Reflection.
#
# The reflection messages themselves come from proto/grpc/reflection/{v1alpha,v1}/reflection.proto
# compiled with grpc_tools.protoc (see load_stubs); nothing below uses the Echo proto or its
# generated module except the one assertion that compares against it explicitly.

ECHO_SERVICES = {
    "meseta.test.v1.Echo",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
}


def reflect(channel, rpb, rpb_grpc, requests):
    """Sends reflection requests on one stream; returns the responses, in order."""
    stub = rpb_grpc.ServerReflectionStub(channel)
    return list(stub.ServerReflectionInfo(iter(requests), timeout=CALL_TIMEOUT))


def _message_class(pool, full_name):
    """A message class from a descriptor pool, on any python3-protobuf version.

    Debian 12 has protobuf 4.21, whose API is MessageFactory(pool).GetPrototype(desc);
    4.22+ adds message_factory.GetMessageClass(desc) and later removes GetPrototype.
    """
    from google.protobuf import message_factory

    desc = pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


class ReflectionTest(ServerTestCase):
    def _both_versions(self):
        return [
            ("v1alpha", self.pb.reflection_v1alpha_pb2, self.pb.reflection_v1alpha_pb2_grpc),
            ("v1", self.pb.reflection_v1_pb2, self.pb.reflection_v1_pb2_grpc),
        ]

    def test_list_services(self):
        for version, rpb, rpb_grpc in self._both_versions():
            with self.subTest(version=version):
                (resp,) = reflect(self.channel, rpb, rpb_grpc, [rpb.ServerReflectionRequest(list_services="")])
                self.assertEqual(resp.WhichOneof("message_response"), "list_services_response", str(resp))
                names = {s.name for s in resp.list_services_response.service}
                self.assertTrue(ECHO_SERVICES <= names, "missing: %s" % (ECHO_SERVICES - names))

    def test_file_containing_symbol(self):
        from google.protobuf import descriptor_pb2

        symbols = [
            "meseta.test.v1.Echo",
            "meseta.test.v1.Echo.Unary",
            "meseta.test.v1.EchoRequest",
            "meseta.test.v1.EchoReply",
        ]
        for version, rpb, rpb_grpc in self._both_versions():
            reqs = [rpb.ServerReflectionRequest(file_containing_symbol=s) for s in symbols]
            resps = reflect(self.channel, rpb, rpb_grpc, reqs)
            self.assertEqual(len(resps), len(symbols))
            for sym, resp in zip(symbols, resps):
                with self.subTest(version=version, symbol=sym):
                    self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", str(resp))
                    files = [
                        descriptor_pb2.FileDescriptorProto.FromString(b)
                        for b in resp.file_descriptor_response.file_descriptor_proto
                    ]
                    echo_files = [f for f in files if f.package == "meseta.test.v1"]
                    self.assertEqual(len(echo_files), 1, [f.name for f in files])
                    f = echo_files[0]
                    self.assertTrue(f.name.endswith("echo.proto"), f.name)
                    self.assertEqual([s.name for s in f.service], ["Echo"])
                    self.assertIn("EchoRequest", [m.name for m in f.message_type])

    def test_descriptor_matches_proto(self):
        # The served descriptor must carry the streaming flags (protobuf-c drops them, so the
        # server must serve the real descriptor set) and the right input/output types.
        from google.protobuf import descriptor_pb2

        rpb, rpb_grpc = self.pb.reflection_v1alpha_pb2, self.pb.reflection_v1alpha_pb2_grpc
        (resp,) = reflect(self.channel, rpb, rpb_grpc, [rpb.ServerReflectionRequest(file_containing_symbol="meseta.test.v1.Echo")])
        fdp = next(
            descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in resp.file_descriptor_response.file_descriptor_proto
            if descriptor_pb2.FileDescriptorProto.FromString(b).package == "meseta.test.v1"
        )
        methods = {m.name: m for m in fdp.service[0].method}
        expected = self.pb.echo_pb2.DESCRIPTOR.services_by_name["Echo"]
        self.assertEqual(set(methods), {m.name for m in expected.methods})
        flags = {name: (m.client_streaming, m.server_streaming) for name, m in methods.items()}
        self.assertEqual(flags["Unary"], (False, False))
        self.assertEqual(flags["ServerStream"], (False, True))
        self.assertEqual(flags["ClientStream"], (True, False))
        self.assertEqual(flags["Bidi"], (True, True))
        self.assertEqual(methods["Unary"].input_type, ".meseta.test.v1.EchoRequest")
        self.assertEqual(methods["Unary"].output_type, ".meseta.test.v1.EchoReply")

    def test_health_symbol_resolves(self):
        rpb, rpb_grpc = self.pb.reflection_v1_pb2, self.pb.reflection_v1_pb2_grpc
        (resp,) = reflect(
            self.channel, rpb, rpb_grpc, [rpb.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")]
        )
        self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", str(resp))

    def test_unknown_symbol(self):
        for version, rpb, rpb_grpc in self._both_versions():
            with self.subTest(version=version):
                (resp,) = reflect(
                    self.channel, rpb, rpb_grpc, [rpb.ServerReflectionRequest(file_containing_symbol="no.such.Thing")]
                )
                self.assertEqual(resp.WhichOneof("message_response"), "error_response", str(resp))
                self.assertEqual(resp.error_response.error_code, 5)  # NOT_FOUND

    def test_original_request_echoed(self):
        rpb, rpb_grpc = self.pb.reflection_v1alpha_pb2, self.pb.reflection_v1alpha_pb2_grpc
        req = rpb.ServerReflectionRequest(host="h", list_services="")
        (resp,) = reflect(self.channel, rpb, rpb_grpc, [req])
        self.assertEqual(resp.original_request.list_services, "")
        self.assertEqual(resp.original_request.WhichOneof("message_request"), "list_services")


class ReflectionOnlyClientTest(ServerTestCase):
    """A client that knows nothing about Echo: it discovers the service over reflection,
    builds a descriptor pool from the FileDescriptorProtos the server sends, and calls it.

    It uses the generated reflection v1alpha module (compiled from the repo's
    proto/grpc/reflection/v1alpha/reflection.proto) for the reflection stream itself, and
    google.protobuf's descriptor machinery; it never reads echo.proto or echo_pb2.
    """

    def _discover(self):
        from google.protobuf import descriptor_pb2, descriptor_pool

        rpb, rpb_grpc = self.pb.reflection_v1alpha_pb2, self.pb.reflection_v1alpha_pb2_grpc
        (listing,) = reflect(self.channel, rpb, rpb_grpc, [rpb.ServerReflectionRequest(list_services="")])
        services = [s.name for s in listing.list_services_response.service]
        target = next(s for s in services if s.endswith(".Echo"))
        (resp,) = reflect(self.channel, rpb, rpb_grpc, [rpb.ServerReflectionRequest(file_containing_symbol=target)])
        blobs = list(resp.file_descriptor_response.file_descriptor_proto)
        self.assertTrue(blobs, str(resp))

        # Add files dependencies-first (the server may send them in any order).
        pool = descriptor_pool.DescriptorPool()
        pending = {descriptor_pb2.FileDescriptorProto.FromString(b).name: b for b in blobs}
        deps = {name: set(descriptor_pb2.FileDescriptorProto.FromString(b).dependency) for name, b in pending.items()}
        added = set()
        while pending:
            ready = [n for n in pending if deps[n] <= added]
            self.assertTrue(ready, "unresolvable dependencies among %s" % sorted(pending))
            for n in ready:
                pool.AddSerializedFile(pending.pop(n))
                added.add(n)
        return pool, pool.FindServiceByName(target)

    def test_unary_from_reflection_alone(self):
        pool, service = self._discover()
        method = service.methods_by_name["Unary"]
        Request = _message_class(pool, method.input_type.full_name)
        Reply = _message_class(pool, method.output_type.full_name)
        call = self.channel.unary_unary(
            "/%s/%s" % (service.full_name, method.name),
            request_serializer=Request.SerializeToString,
            response_deserializer=Reply.FromString,
        )
        request = Request()
        request.text = "discovered"
        request.payload = b"\x01\x02"
        reply = call(request, timeout=CALL_TIMEOUT)
        self.assertEqual(reply.text, "discovered")
        self.assertEqual(reply.payload, b"\x01\x02")

    def test_server_stream_from_reflection_alone(self):
        pool, service = self._discover()
        method = service.methods_by_name["ServerStream"]
        Request = _message_class(pool, method.input_type.full_name)
        Reply = _message_class(pool, method.output_type.full_name)
        call = self.channel.unary_stream(
            "/%s/%s" % (service.full_name, method.name),
            request_serializer=Request.SerializeToString,
            response_deserializer=Reply.FromString,
        )
        request = Request()
        request.text = "s"
        request.count = 3
        self.assertEqual([r.index for r in call(request, timeout=CALL_TIMEOUT)], [0, 1, 2])


class UnixSocketTest(ServerTestCase):
    """Two listeners: a unix socket and loopback TCP; the ready file lists both."""

    @classmethod
    def setUpClass(cls):
        cls.sockdir = tempfile.mkdtemp(prefix="meseta-sock-")
        cls.sock = os.path.join(cls.sockdir, "echo.sock")
        cls.LISTEN = ("unix:" + cls.sock, "127.0.0.1:0")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.sockdir, ignore_errors=True)

    def test_ready_file_lists_both(self):
        self.assertEqual(len(self.server.addresses), 2, self.server.addresses)
        self.assertIn(self.sock, self.server.addresses[0])
        self.assertRegex(self.server.addresses[1], r"^127\.0\.0\.1:[1-9][0-9]*$")

    def test_calls_over_unix_socket(self):
        with grpc.insecure_channel("unix:" + self.sock, options=CHANNEL_OPTIONS) as ch:
            stub = self.pb.echo_pb2_grpc.EchoStub(ch)
            self.assertEqual(stub.Unary(self.req(text="over unix"), timeout=CALL_TIMEOUT).text, "over unix")
            self.assertEqual(len(list(stub.ServerStream(self.req(count=4), timeout=CALL_TIMEOUT))), 4)
            reply = stub.ClientStream(iter([self.req(payload=b"abc")] * 3), timeout=CALL_TIMEOUT)
            self.assertEqual((reply.received, reply.received_bytes), (3, 9))

    def test_calls_over_tcp_listener(self):
        with grpc.insecure_channel(self.server.addresses[1], options=CHANNEL_OPTIONS) as ch:
            stub = self.pb.echo_pb2_grpc.EchoStub(ch)
            self.assertEqual(stub.Unary(self.req(text="over tcp"), timeout=CALL_TIMEOUT).text, "over tcp")


class ShutdownTest(unittest.TestCase):
    """SIGTERM while a stream is open: the server shuts down gracefully and exits 0."""

    def test_sigterm_with_open_stream(self):
        pb = load_stubs()
        server = EchoServer(extra_args=("--grace-ms", "500"))
        try:
            with grpc.insecure_channel(server.address, options=CHANNEL_OPTIONS) as ch:
                stub = pb.echo_pb2_grpc.EchoStub(ch)
                self.assertEqual(stub.Unary(pb.echo_pb2.EchoRequest(text="x"), timeout=CALL_TIMEOUT).text, "x")
                call = stub.ServerStream(pb.echo_pb2.EchoRequest(count=100000), timeout=60)
                next(call)
                status = server.stop()
                self.assertEqual(status, 0, server.log())
                with self.assertRaises(grpc.RpcError):
                    for _ in call:
                        pass
        finally:
            server.stop()
            server.cleanup()


if __name__ == "__main__":
    # `test_interop.py /path/to/echo-server [unittest args]`
    if len(sys.argv) > 1 and os.path.isfile(sys.argv[1]) and os.access(sys.argv[1], os.X_OK):
        os.environ["ECHO_SERVER"] = os.path.abspath(sys.argv.pop(1))
    unittest.main()
