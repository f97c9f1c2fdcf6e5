"""Mutual TLS interop: Python's gRPC against echo-server started with --tls-cert/--tls-key/--tls-ca.

Certificates are made with the openssl command in a temp dir: a CA, a server certificate
(SAN DNS:localhost, IP:127.0.0.1), a client certificate CN=framework-a from that CA, and a
client certificate with the same CN from another CA (which the server must refuse).

    ECHO_SERVER=build/tests/integration/echo-server /usr/bin/python3 -m unittest -v test_mtls
"""

import os
import shutil
import subprocess
import tempfile
import unittest

import grpc

from test_interop import CALL_TIMEOUT, CHANNEL_OPTIONS, EchoServer, load_stubs


def _openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), r.stdout.decode("utf-8", "replace")))


def _make_ca(d, name, cn):
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", name + ".key", "-out", name + ".crt", "-days", "2", "-subj", "/CN=" + cn,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d, name, cn, ca, extensions):
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn,
        cwd=d,
    )  # fmt: skip
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(extensions)
    _openssl(
        "x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
        "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-sha256", "-extfile", name + ".ext",
        cwd=d,
    )  # fmt: skip


class MutualTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl not installed")
        cls.pb = load_stubs()
        cls.dir = tempfile.mkdtemp(prefix="meseta-mtls-")
        d = cls.dir
        _make_ca(d, "ca", "meseta test CA")
        _make_ca(d, "other-ca", "some other CA")
        _make_leaf(
            d, "server", "localhost", "ca",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )  # fmt: skip
        client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        _make_leaf(d, "client", "framework-a", "ca", client_ext)
        _make_leaf(d, "rogue", "framework-a", "other-ca", client_ext)
        cls.server = EchoServer(
            extra_args=(
                "--tls-cert", cls.path("server.crt"),
                "--tls-key", cls.path("server.key"),
                "--tls-ca", cls.path("ca.crt"),
            )
        )  # fmt: skip
        cls.port = cls.server.address.rsplit(":", 1)[1]

    @classmethod
    def tearDownClass(cls):
        status = None
        log = ""
        if getattr(cls, "server", None):
            status = cls.server.stop()
            log = cls.server.log()
            cls.server.cleanup()
        shutil.rmtree(cls.dir, ignore_errors=True)
        if status not in (None, 0):
            raise AssertionError("echo-server did not shut down cleanly on SIGTERM (%s):\n%s" % (status, log))

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    @classmethod
    def read(cls, name):
        with open(cls.path(name), "rb") as f:
            return f.read()

    def channel(self, key=None, cert=None, target=None):
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.read("ca.crt"),
            private_key=self.read(key) if key else None,
            certificate_chain=self.read(cert) if cert else None,
        )
        return grpc.secure_channel(target or "localhost:" + self.port, creds, options=CHANNEL_OPTIONS)

    def identity(self, ch):
        stub = self.pb.echo_pb2_grpc.EchoStub(ch)
        return stub.Identity(self.pb.echo_pb2.EchoRequest(), timeout=CALL_TIMEOUT)

    def test_good_client_identity(self):
        with self.channel("client.key", "client.crt") as ch:
            reply = self.identity(ch)
            self.assertIn("framework-a", reply.peer_identity)
            stub = self.pb.echo_pb2_grpc.EchoStub(ch)
            self.assertEqual(stub.Unary(self.pb.echo_pb2.EchoRequest(text="tls"), timeout=CALL_TIMEOUT).text, "tls")
            replies = list(stub.Bidi(iter([self.pb.echo_pb2.EchoRequest(text="b")] * 3), timeout=CALL_TIMEOUT))
            self.assertEqual([r.index for r in replies], [0, 1, 2])

    def test_good_client_by_ip_san(self):
        with self.channel("client.key", "client.crt", target="127.0.0.1:" + self.port) as ch:
            self.assertIn("framework-a", self.identity(ch).peer_identity)

    def test_health_over_tls(self):
        with self.channel("client.key", "client.crt") as ch:
            health = self.pb.health_pb2_grpc.HealthStub(ch)
            resp = health.Check(self.pb.health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
            self.assertEqual(resp.status, self.pb.health_pb2.HealthCheckResponse.SERVING)

    def test_client_without_certificate_is_refused(self):
        with self.channel() as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                self.identity(ch)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())

    def test_client_from_other_ca_is_refused(self):
        with self.channel("rogue.key", "rogue.crt") as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                self.identity(ch)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())

    def test_plaintext_client_is_refused(self):
        with grpc.insecure_channel("127.0.0.1:" + self.port, options=CHANNEL_OPTIONS) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                self.identity(ch)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())

    def test_server_still_serves_after_refusals(self):
        for key in (None, "rogue"):
            with self.channel(key + ".key" if key else None, key + ".crt" if key else None) as ch:
                with self.assertRaises(grpc.RpcError):
                    self.identity(ch)
        with self.channel("client.key", "client.crt") as ch:
            self.assertIn("framework-a", self.identity(ch).peer_identity)


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and os.path.isfile(sys.argv[1]) and os.access(sys.argv[1], os.X_OK):
        os.environ["ECHO_SERVER"] = os.path.abspath(sys.argv.pop(1))
    unittest.main()
