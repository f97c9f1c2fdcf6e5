#!/usr/bin/python3
"""Self-test of check-manifests.py: each case edits a copy of deploy/ one way and requires
that the checker fails with a line naming the edited item (which the unedited copy lacks).

Usage: check-manifests-selftest.py [--root DIR] --bin PATH...   (the checker's flags)
"""
import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("check_manifests", os.path.join(HERE, "check-manifests.py"))
checker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checker)


def k8s_obj(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    raise LookupError("no %s/%s in the manifests: update the self-test" % (kind, name))


def pod_spec(docs, kind, name):
    return k8s_obj(docs, kind, name)["spec"]["template"]["spec"]


def env_of(container):
    return container.setdefault("env", [])


def set_env(container, name, value):
    env = env_of(container)
    for e in env:
        if e["name"] == name:
            e.pop("valueFrom", None)
            e["value"] = value
            return
    env.append({"name": name, "value": value})


def drop_env(container, name):
    env = env_of(container)
    if not any(e["name"] == name for e in env):
        raise LookupError("container %s has no env %s: update the self-test" % (container["name"], name))
    container["env"] = [e for e in env if e["name"] != name]


def compose_service(doc, part):
    for name, svc in doc["services"].items():
        if part in name:
            return svc
    raise LookupError("compose.yaml has no service named like %s: update the self-test" % part)


def compose_set_env(svc, name, value):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict((e.split("=", 1) + [""])[:2] for e in env)
    env[name] = value
    svc["environment"] = env


def compose_probe_port(svc, port):
    test = svc["healthcheck"]["test"]
    for i in range(len(test) - 1, 0, -1):
        if ":" in test[i] and test[i].rsplit(":", 1)[1].isdigit():
            test[i] = "%s:%d" % (test[i].rsplit(":", 1)[0], port)
            return
    raise LookupError("healthcheck has no host:port: update the self-test")


def compose_drop_env(svc, name):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict((e.split("=", 1) + [""])[:2] for e in env)
    env.pop(name, None)
    svc["environment"] = env


def compose_move_data_dir(doc, new):
    """etcd's --data-dir and the named volume there, moved to a directory the image lacks."""
    svc = compose_service(doc, "etcd")
    cmd = svc["command"]
    i = next(i for i, w in enumerate(cmd) if str(w).startswith("--data-dir"))
    old = cmd[i].split("=", 1)[1] if "=" in cmd[i] else cmd[i + 1]
    cmd[i] = "--data-dir=" + new
    svc["volumes"] = [str(v).replace(":" + old, ":" + new) for v in svc["volumes"]]


def compose_agent_unreachable(doc):
    svc = compose_service(doc, "agent")
    compose_drop_env(svc, "MESETA_ADVERTISE_ADDRESS")
    compose_set_env(svc, "MESETA_HOSTNAME", "agent-x")


def cli_pod(args, env):
    """A Pod running the CLI against master-api (the manifests have none: the cases add one)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "meseta-cli", "labels": {"app": "cli"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "cli", "image": "meseta:dev", "command": ["meseta"], "args": args,
                "env": [{"name": k, "value": v} for k, v in env.items()]}]}}


RUN = ["--master", "meseta-master-api:5050", "run", "--cpus", "0.5"]

# (name, file under deploy/, edit(docs), text a new problem line must contain; None: no new line)
CASES = [
    # `meseta run`'s flags come from `meseta run --help`, their env twins are MESETA_RUN_*.
    ("cli_command_clean", "k8s/master-api.yaml",
     lambda d: d.append(cli_pod(RUN + ["--", "echo", "--not-a-flag-of-meseta"], {"MESETA_RUN_MEM": "64"})),
     None),
    ("cli_command_flag", "k8s/master-api.yaml",
     lambda d: d.append(cli_pod(RUN + ["--cpuz", "1", "--", "echo"], {})),
     "Pod/meseta-cli: container cli: args[5] `--cpuz`: not a flag of meseta run"),
    ("cli_command_env_prefix", "k8s/master-api.yaml",
     lambda d: d.append(cli_pod(RUN + ["--", "echo"], {"MESETA_MEM": "64"})),
     "Pod/meseta-cli: container cli: env MESETA_MEM: not a flag of meseta run"),
    ("cli_master_address", "k8s/master-api.yaml",
     lambda d: d.append(cli_pod(["--master", "meseta-master-api:5051", "run", "--", "echo"], {})),
     "container cli: master (args `--master`): `meseta-master-api:5051`: Service meseta-master-api has ports [5050]"),

    ("flag_env_k8s", "k8s/allocator.yaml",
     lambda d: set_env(pod_spec(d, "Deployment", "meseta-allocator")["containers"][0], "MESETA_NO_SUCH_FLAG", "1"),
     "k8s/allocator.yaml: Deployment/meseta-allocator: container allocator: env MESETA_NO_SUCH_FLAG: "
     "not a flag of meseta-allocator"),
    ("flag_arg_k8s", "k8s/registry.yaml",
     lambda d: pod_spec(d, "Deployment", "meseta-registry")["containers"][0].__setitem__("args", ["--no-such-flag=1"]),
     "container registry: args[0] `--no-such-flag`: not a flag of meseta-registry"),
    ("flag_arg_etcd", "k8s/etcd.yaml",
     lambda d: pod_spec(d, "StatefulSet", "meseta-etcd")["containers"][0]["command"].append("--no-such-flag=1"),
     "`--no-such-flag`: not a flag of etcd"),
    ("value_duration", "k8s/registry.yaml",
     lambda d: set_env(pod_spec(d, "Deployment", "meseta-registry")["containers"][0], "MESETA_SHUTDOWN_GRACE", "15"),
     "container registry: env MESETA_SHUTDOWN_GRACE: `15` is not a duration"),
    ("value_bool", "k8s/agent.yaml",
     lambda d: set_env(pod_spec(d, "DaemonSet", "meseta-agent")["containers"][0], "MESETA_KILL_CONTAINERS_ON_EXIT",
                       "always"),
     "container agent: env MESETA_KILL_CONTAINERS_ON_EXIT: `always` is not a boolean"),
    ("helper_var_unused", "k8s/master-api.yaml",
     lambda d: set_env(pod_spec(d, "Deployment", "meseta-master-api")["containers"][0], "UNUSED_VAR", "x"),
     "container master-api: env UNUSED_VAR: neither a flag of meseta-master-api nor used in a $(UNUSED_VAR)"),
    ("probe_port_k8s", "k8s/registry.yaml",
     lambda d: pod_spec(d, "Deployment", "meseta-registry")["containers"][0]["readinessProbe"]["grpc"].__setitem__(
         "port", 5059),
     "container registry: readinessProbe.grpc.port 5059: not a port the container listens on"),
    ("service_port_k8s", "k8s/master-api.yaml",
     lambda d: k8s_obj(d, "Service", "meseta-master-api")["spec"]["ports"][0].__setitem__("targetPort", 5059),
     "k8s/master-api.yaml: Service/meseta-master-api: ports grpc targetPort 5059: no container of"),
    ("address_k8s", "k8s/master-api.yaml",
     lambda d: set_env(pod_spec(d, "Deployment", "meseta-master-api")["containers"][0], "MESETA_REGISTRY",
                       "meseta-registri:5052"),
     "container master-api: registry (env MESETA_REGISTRY): `meseta-registri:5052`: `meseta-registri` is no Service"),
    ("address_port_k8s", "k8s/allocator.yaml",
     lambda d: set_env(pod_spec(d, "Deployment", "meseta-allocator")["containers"][0], "MESETA_REGISTRY",
                       "meseta-registry:5053"),
     "`meseta-registry:5053`: Service meseta-registry has ports [5052]"),
    ("address_etcd_peer", "k8s/etcd.yaml",
     lambda d: k8s_obj(d, "StatefulSet", "meseta-etcd")["spec"].__setitem__("replicas", 2),
     "initial-cluster (args `--initial-cluster`): `http://meseta-etcd-2.meseta-etcd:2380`: StatefulSet meseta-etcd "
     "has 2 replicas"),
    ("etcd_members", "k8s/etcd.yaml",
     lambda d: k8s_obj(d, "StatefulSet", "meseta-etcd")["spec"].__setitem__("replicas", 5),
     "container etcd: initial-cluster (args `--initial-cluster`): members ['meseta-etcd-0', 'meseta-etcd-1', "
     "'meseta-etcd-2'] are not the StatefulSet's pods"),
    ("kustomize_renders", "k8s/kustomization.yaml",
     lambda d: d[0]["resources"].append("missing.yaml"),
     "kubectl kustomize: does not render"),
    # The four problems, as they apply to Kubernetes.
    ("deploy_1_data_dir_owner", "k8s/etcd.yaml",
     lambda d: pod_spec(d, "StatefulSet", "meseta-etcd")["securityContext"].pop("fsGroup"),
     "container etcd: data-dir (args `--data-dir`): `/var/lib/meseta/etcd` is a volume created root-owned"),
    ("deploy_2_allocator_advertise", "k8s/allocator.yaml",
     lambda d: drop_env(pod_spec(d, "Deployment", "meseta-allocator")["containers"][0], "MESETA_ADVERTISE_ADDRESS"),
     # Before --advertise-address took the hostname for 0.0.0.0: `0.0.0.0:5053`; since, the pod's hostname.
     "container allocator: advertise-address (unset, so "),
    ("deploy_3_privileged", "k8s/agent.yaml",
     lambda d: pod_spec(d, "DaemonSet", "meseta-agent")["containers"][0]["securityContext"].__setitem__(
         "privileged", True),
     "DaemonSet/meseta-agent: container agent: securityContext.privileged: asks for every capability"),
    ("deploy_4_agent_unreachable", "k8s/agent.yaml",
     lambda d: drop_env(pod_spec(d, "DaemonSet", "meseta-agent")["containers"][0], "MESETA_ADVERTISE_ADDRESS"),
     "container agent: advertise-address (unset, so --hostname (env MESETA_HOSTNAME) and the --listen port): "
     "`$(NODE_NAME):5051`: $(NODE_NAME) is spec.nodeName, which cluster DNS does not resolve"),
    # Compose: whatever compose.yaml the tree holds.
    ("flag_env_compose", "compose.yaml",
     lambda d: compose_set_env(compose_service(d[0], "registry"), "MESETA_NO_SUCH_FLAG", "1"),
     "environment MESETA_NO_SUCH_FLAG: not a flag of meseta-registry"),
    ("probe_port_compose", "compose.yaml",
     lambda d: compose_probe_port(compose_service(d[0], "registry"), 5059),
     ":5059`: port 5059 is not one the container listens on"),
    # The four problems in Compose (3: on a service that is not privileged yet).
    ("deploy_1_compose_volume_owner", "compose.yaml",
     lambda d: compose_move_data_dir(d[0], "/var/lib/meseta/etcd-new"),
     "service etcd: data-dir (args `--data-dir`): `/var/lib/meseta/etcd-new` is on volume etcd-data, which Docker "
     "creates root-owned"),
    ("deploy_2_compose_allocator_advertise", "compose.yaml",
     lambda d: compose_set_env(compose_service(d[0], "allocator"), "MESETA_ADVERTISE_ADDRESS", "0.0.0.0:5053"),
     "advertise-address (environment MESETA_ADVERTISE_ADDRESS): `0.0.0.0:5053` cannot be dialled"),
    ("deploy_3_compose_privileged", "compose.yaml",
     lambda d: compose_service(d[0], "etcd").__setitem__("privileged", True),
     "service etcd: privileged: `privileged: true` asks for every capability"),
    ("deploy_4_compose_agent_unreachable", "compose.yaml",
     lambda d: compose_agent_unreachable(d[0]),
     "`agent-x:5051`: the CLI on the Docker host dials AgentOperator there"),
    ("address_compose", "compose.yaml",
     lambda d: compose_set_env(compose_service(d[0], "master-api"), "MESETA_REGISTRY", "registri:5052"),
     "registry (environment MESETA_REGISTRY): `registri:5052`: `registri` is no service"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    checker.add_common(ap)
    opts = ap.parse_args()
    binaries = checker.binaries_from(opts.bin)  # each --help is read once for every case

    def run(root):
        lines = checker.check(root, binaries, opts.kubectl, opts.only)
        return (1 if lines else 0), set(lines)

    failed = n = 0
    with tempfile.TemporaryDirectory(prefix="check-manifests-") as tmp:
        base = os.path.join(tmp, "base")
        shutil.copytree(os.path.join(opts.root, "deploy"), os.path.join(base, "deploy"))
        _, base_lines = run(base)
        for name, rel, edit, expect in CASES:
            if opts.only and not rel.startswith(opts.only):
                continue
            n += 1
            case = os.path.join(tmp, name)
            shutil.copytree(os.path.join(base, "deploy"), os.path.join(case, "deploy"))
            path = os.path.join(case, "deploy", rel)
            with open(path) as fh:
                docs = [d for d in yaml.safe_load_all(fh) if d]
            try:
                edit(docs)
            except (LookupError, KeyError, IndexError, StopIteration) as e:
                print("FAIL %s: cannot make the edit: %s" % (name, e))
                failed += 1
                continue
            with open(path, "w") as fh:
                yaml.safe_dump_all(docs, fh, sort_keys=False)
            rc, lines = run(case)
            new = sorted(lines - base_lines)
            hits = [line for line in new if expect in line]
            if expect is None and not new:
                print("ok   %s: no new problem" % name)
            elif expect is not None and rc == 1 and hits:
                print("ok   %s: %s" % (name, hits[0]))
            else:
                print("FAIL %s: exit %d, wanted a new line with %r; new lines: %s" % (name, rc, expect, new))
                failed += 1
    print("self-test: %d of %d cases failed" % (failed, n))
    sys.exit(1 if failed or not n else 0)


if __name__ == "__main__":
    main()
