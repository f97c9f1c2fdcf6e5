#!/usr/bin/python3
"""Checks deploy/compose.yaml and the Kubernetes manifests against the binaries they run.

Every MESETA_* variable and --flag must be a flag of that binary (read from its --help),
every probe, healthcheck and Service port a port the container listens on, every
advertised or dialled address reachable from other pods/containers, and the issue-13
regressions (privileged, root-owned data dirs, unreachable advertised addresses) stay out.
One line per problem: FILE: OBJECT: container NAME: FIELD: what is wrong. Exit 1 on any.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from manifests_core import Binaries, Problems, check_compose, image_runs_as_root  # noqa: E402
from manifests_k8s import check_k8s, kustomize  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."),
                    help="the checkout (default: this file's)")
    ap.add_argument("--bin", action="append", default=[], metavar="NAME=PATH",
                    help="a binary the manifests run (default NAME: the file's name)")
    ap.add_argument("--compose", help="default: ROOT/deploy/compose.yaml")
    ap.add_argument("--k8s", help="default: ROOT/deploy/k8s")
    ap.add_argument("--kubectl", default=os.environ.get("KUBECTL", "kubectl"))
    opts = ap.parse_args()
    opts.root = os.path.realpath(opts.root)
    paths = {}
    for b in opts.bin:
        name, _, path = b.rpartition("=")
        paths[name or os.path.basename(path)] = path
    binaries = Binaries(paths)
    dockerfile = os.path.join(opts.root, "deploy", "Dockerfile")
    problems = Problems()
    compose = os.path.realpath(opts.compose or os.path.join(opts.root, "deploy", "compose.yaml"))
    check_compose(compose, binaries, dockerfile, problems)
    k8s_dir = os.path.realpath(opts.k8s or os.path.join(opts.root, "deploy", "k8s"))
    docs = kustomize(opts.kubectl, k8s_dir, problems)
    if docs is not None:
        check_k8s(k8s_dir, docs, binaries, image_runs_as_root(dockerfile), problems)
    for line in problems.lines:
        print(line.replace(opts.root + os.sep, ""))
    print("check-manifests: %d problem(s)" % len(problems.lines), file=sys.stderr)
    sys.exit(1 if problems.lines else 0)


if __name__ == "__main__":
    main()
