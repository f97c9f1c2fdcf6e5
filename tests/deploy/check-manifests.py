#!/usr/bin/python3
"""Checks deploy/compose.yaml and the Kubernetes manifests against the binaries they run.

Every MESETA_* variable and --flag must be a flag of that binary (read from its --help),
every probe, healthcheck and Service port a port the container listens on, every
advertised or dialled address reachable from other pods/containers, and the issue-13
regressions (privileged, root-owned data dirs, unreachable advertised addresses) stay out.
One line per problem: FILE: OBJECT: container NAME: FIELD: what is wrong. Exit 1 on any.
"""
import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("yaml") is None:
    sys.exit("check-manifests: python3-yaml is missing (apt-get install python3-yaml; scripts/setup-deps.sh has it)")
from manifests_compose import check_compose  # noqa: E402
from manifests_core import Binaries, Problems, image_runs_as_root  # noqa: E402
from manifests_k8s import check_k8s, kustomize  # noqa: E402


def check(root, binaries, kubectl="kubectl", only=None, compose=None, k8s_dir=None):
    """The problem lines for the checkout at root (paths in them relative to root)."""
    root = os.path.realpath(root)
    dockerfile = os.path.join(root, "deploy", "Dockerfile")
    problems = Problems()
    if only in (None, "compose"):
        check_compose(os.path.realpath(compose or os.path.join(root, "deploy", "compose.yaml")), binaries,
                      dockerfile, problems)
    if only in (None, "k8s"):
        k8s_dir = os.path.realpath(k8s_dir or os.path.join(root, "deploy", "k8s"))
        docs = kustomize(kubectl, k8s_dir, problems)
        if docs is not None:
            check_k8s(k8s_dir, docs, binaries, image_runs_as_root(dockerfile), problems)
    return [line.replace(root + os.sep, "") for line in problems.lines]


def binaries_from(specs):
    """Binaries from --bin NAME=PATH or PATH words (NAME: the file's name)."""
    paths = {}
    for b in specs:
        name, _, path = b.rpartition("=")
        paths[name or os.path.basename(path)] = path
    return Binaries(paths)


def add_common(ap):
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."),
                    help="the checkout (default: this file's)")
    ap.add_argument("--bin", action="append", default=[], metavar="[NAME=]PATH",
                    help="a meseta binary the manifests run, from the build tree (etcd, etcdctl: from PATH)")
    ap.add_argument("--kubectl", default=os.environ.get("KUBECTL", "kubectl"))
    ap.add_argument("--only", choices=("compose", "k8s"), help="check one of the two")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(ap)
    ap.add_argument("--compose", help="default: ROOT/deploy/compose.yaml")
    ap.add_argument("--k8s", help="default: ROOT/deploy/k8s")
    opts = ap.parse_args()
    lines = check(opts.root, binaries_from(opts.bin), opts.kubectl, opts.only, opts.compose, opts.k8s)
    for line in lines:
        print(line)
    print("check-manifests: %d problem(s)" % len(lines), file=sys.stderr)
    sys.exit(1 if lines else 0)


if __name__ == "__main__":
    main()
