"""check-manifests: the Kubernetes part (manifests rendered by `kubectl kustomize`)."""
import os
import re
import shutil
import subprocess

import yaml

from manifests_core import (DATA_DIR_FLAGS, IMAGE_UID, OWN_HOSTNAME, UNGRANTABLE_CAPS, Binary, Container, check_flags,
                            dialled_addresses, host_port, unspecified_or_loopback)

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod")
REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
POD_IP_FIELDS = ("status.podIP", "status.podIPs")


def kustomize(kubectl, k8s_dir, problems):
    """The rendered objects, or None (with the reason among the problems) when kustomize cannot run."""
    exe = shutil.which(kubectl)
    if not exe:
        problems.add(k8s_dir, "kubectl kustomize", "`%s` not found: Debian's kubernetes-client package has "
                     "kubectl (apt-get install kubernetes-client); the check cannot render the manifests" % kubectl)
        return None
    out = subprocess.run([exe, "kustomize", k8s_dir], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        problems.add(k8s_dir, "kubectl kustomize", "does not render: %s" % out.stderr.strip())
        return None
    try:
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    except yaml.YAMLError as e:
        problems.add(k8s_dir, "kubectl kustomize", "renders YAML that does not parse: %s" % e)
        return None


def source_files(k8s_dir):
    """(kind, name) -> the file under k8s_dir that declares it."""
    files = {}
    try:
        with open(os.path.join(k8s_dir, "kustomization.yaml")) as fh:
            res = (yaml.safe_load(fh) or {}).get("resources") or []
    except (OSError, yaml.YAMLError):
        res = []
    for r in res:
        p = os.path.join(k8s_dir, r)
        try:
            with open(p) as fh:
                for d in yaml.safe_load_all(fh):
                    if d:
                        files[(d.get("kind"), d.get("metadata", {}).get("name"))] = p
        except (OSError, yaml.YAMLError):
            pass
    return files


class Pod:
    def __init__(self, obj, where):
        self.obj, self.where = obj, where
        self.kind, self.name = obj["kind"], obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        tmpl = obj if self.kind == "Pod" else spec.get("template") or {}
        self.labels = (tmpl.get("metadata") or {}).get("labels") or {}
        self.spec = tmpl.get("spec") or {}
        self.replicas = spec.get("replicas", 1)
        self.service_name = spec.get("serviceName")
        self.claims = {(c.get("metadata") or {}).get("name") for c in spec.get("volumeClaimTemplates") or []}
        self.containers = []


class K8sContainer(Container):
    def __init__(self, pod, spec, binaries):
        self.pod, self.spec = pod, spec
        where = "%s: %s/%s: container %s" % (pod.where, pod.kind, pod.name, spec.get("name"))
        self.fields, env, self.problems = {}, {}, []
        for e in spec.get("env") or []:
            vf = e.get("valueFrom")
            if vf and "fieldRef" in vf:
                self.fields[e["name"]] = vf["fieldRef"].get("fieldPath")
                env[e["name"]] = "$(%s)" % e["name"]
            elif vf:
                env[e["name"]] = "<%s>" % next(iter(vf))
            else:
                v = str(e.get("value", ""))
                for ref in REF.findall(v):
                    if ref not in env:
                        self.problems.append(("env %s" % e["name"], "$(%s) is not an earlier env var of this "
                                              "container, so Kubernetes leaves it as written" % ref))
                env[e["name"]] = REF.sub(lambda m: env.get(m.group(1), m.group(0)), v)
        words = [str(w) for w in (spec.get("command") or []) + (spec.get("args") or [])]
        fields = (["command[%d]" % i for i in range(len(spec.get("command") or []))] +
                  ["args[%d]" % i for i in range(len(spec.get("args") or []))])
        for w in words:
            for ref in REF.findall(w):
                if ref not in env:
                    self.problems.append(("command/args", "$(%s) is no env var of this container" % ref))
        words = [REF.sub(lambda m: env.get(m.group(1), m.group(0)), w) for w in words]
        self.used = set()
        for e in spec.get("env") or []:
            self.used.update(REF.findall(str(e.get("value", ""))))
        for w in (spec.get("command") or []) + (spec.get("args") or []):
            self.used.update(REF.findall(str(w)))
        if not spec.get("command"):  # the image's ENTRYPOINT is empty: say which binary runs
            self.problems.append(("command", "none: the image has no ENTRYPOINT, so name the binary"))
            words, fields = ["<none>"] + words, ["command[0]"] + fields
        super().__init__(where, binaries, words, fields, env, "env")
        self.ports = {p.get("name"): p.get("containerPort") for p in spec.get("ports") or []}

    def resolve_port(self, port):
        return self.ports.get(port) if isinstance(port, str) and not port.isdigit() else int(port)


def selects(service, pod):
    sel = (service.get("spec") or {}).get("selector") or {}
    return bool(sel) and all(pod.labels.get(k) == v for k, v in sel.items())


def check_k8s(k8s_dir, docs, binaries, image_root, problems):
    files = source_files(k8s_dir)

    def where(o):
        return files.get((o.get("kind"), o["metadata"]["name"]), k8s_dir + " (rendered)")

    services = {o["metadata"]["name"]: o for o in docs if o.get("kind") == "Service"}
    pods = []
    for o in docs:
        if o.get("kind") in WORKLOADS:
            pod = Pod(o, where(o))
            pod.containers = [K8sContainer(pod, c, binaries) for c in pod.spec.get("containers") or []]
            pods.append(pod)
    conts = [c for p in pods for c in p.containers]
    for c in conts:
        for field, msg in c.problems:
            problems.add(c.where, field, msg)
        check_flags(c, c.used, problems)
        check_security(c, problems)
        check_data_dirs(c, image_root, problems)
        check_ports(c, problems)
        check_etcd_members(c, problems)
        for flag, addr, src, adv in dialled_addresses(c):
            check_address(c, "%s (%s)" % (flag, src), addr, adv, services, pods, problems)
    for name, svc in services.items():
        check_service(where(svc), name, svc, pods, problems)


def check_security(c, problems):
    sc = c.spec.get("securityContext") or {}
    if sc.get("privileged"):
        problems.add(c.where, "securityContext.privileged", "asks for every capability, and these machines lack "
                     "CAP_SYS_RESOURCE (\"unable to apply caps\"): add capabilities by name")
    for cap in (sc.get("capabilities") or {}).get("add") or []:
        if str(cap).upper() in UNGRANTABLE_CAPS:
            problems.add(c.where, "securityContext.capabilities.add %s" % cap, "not grantable on these machines")


def run_as(c, image_root):
    for sc in (c.spec.get("securityContext") or {}, c.pod.spec.get("securityContext") or {}):
        if "runAsUser" in sc:
            return int(sc["runAsUser"])
    return 0 if image_root else IMAGE_UID


def check_data_dirs(c, image_root, problems):
    """A non-root container's data dir must be on a volume it can write (issue 13, point 1)."""
    if not isinstance(c.binary, Binary):
        return
    uid = run_as(c, image_root)
    if uid == 0:
        return
    mounts = sorted(c.spec.get("volumeMounts") or [], key=lambda m: -len(m.get("mountPath", "")))
    vols = {v.get("name"): v for v in c.pod.spec.get("volumes") or []}
    fs_group = (c.pod.spec.get("securityContext") or {}).get("fsGroup")
    for n in sorted(DATA_DIR_FLAGS & set(c.binary.flags)):
        path, src = c.value(c.binary.flags[n])
        if not path or path.startswith("$"):
            continue
        field = "%s (%s)" % (n, src)
        m = next((m for m in mounts if (path + "/").startswith(m["mountPath"].rstrip("/") + "/")), None)
        if m is None:
            if (c.spec.get("securityContext") or {}).get("readOnlyRootFilesystem"):
                problems.add(c.where, field, "`%s` is on the read-only root filesystem: mount a volume there" % path)
            continue
        if m.get("readOnly"):
            problems.add(c.where, field, "`%s` is mounted read-only" % path)
        v = vols.get(m["name"], {})
        if "hostPath" in v:
            problems.add(c.where, field, "`%s` is a hostPath (root-owned on the node) and uid %d cannot write it"
                         % (path, uid))
        elif ("persistentVolumeClaim" in v or m["name"] in c.pod.claims) and fs_group is None:
            problems.add(c.where, field, "`%s` is a volume created root-owned and uid %d cannot write it: set the "
                         "pod's securityContext.fsGroup" % (path, uid))


def check_etcd_members(c, problems):
    """A StatefulSet of etcd members named $(POD_NAME): --initial-cluster lists exactly its pods."""
    b = c.binary
    if not isinstance(b, Binary) or b.name != "etcd" or c.pod.kind != "StatefulSet":
        return
    name, _ = c.value(b.flags["name"])
    m = REF.fullmatch(name or "")
    if not m or c.fields.get(m.group(1)) != "metadata.name":
        return
    cluster, src = c.value(b.flags["initial-cluster"])
    members = {e.split("=", 1)[0] for e in (cluster or "").split(",") if "=" in e}
    pods = {"%s-%d" % (c.pod.name, i) for i in range(int(c.pod.replicas))}
    if members != pods:
        problems.add(c.where, "initial-cluster (%s)" % src, "members %s are not the StatefulSet's pods %s"
                     % (sorted(members), sorted(pods)))


def check_ports(c, problems):
    listens = c.listeners()
    host_net = c.pod.spec.get("hostNetwork")
    for p in c.spec.get("ports") or []:
        if p.get("containerPort") not in listens:
            problems.add(c.where, "ports %s" % p.get("name", p.get("containerPort")),
                         "containerPort %s is not one it listens on %s" % (p.get("containerPort"), sorted(listens)))
        if host_net and p.get("hostPort") not in (None, p.get("containerPort")):
            problems.add(c.where, "ports %s" % p.get("name"), "hostPort differs from containerPort on hostNetwork")
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        pr = c.spec.get(kind)
        if not pr:
            continue
        for mech in ("grpc", "httpGet", "tcpSocket"):
            if mech in pr:
                raw = pr[mech].get("port")
                port = c.resolve_port(raw)
                if port not in listens:
                    problems.add(c.where, "%s.%s.port %s" % (kind, mech, raw),
                                 "not a port the container listens on %s" % sorted(listens))


def split_service_host(host):
    """(service, namespace-less) for svc, svc.ns, svc.ns.svc, svc.ns.svc.cluster.local; else None."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] != "svc":
        return None
    return parts[0] if len(parts) <= 2 or parts[2:] in (["svc"], ["svc", "cluster", "local"]) else None


def headless_pod(host, services, pods):
    """The (pod, service) a <pod>.<headless service> name resolves to, or a reason string."""
    parts = host.split(".", 1)
    if len(parts) < 2:
        return None
    svc_name = split_service_host(parts[1])
    svc = services.get(svc_name) if svc_name else None
    if not svc:
        return None
    if (svc.get("spec") or {}).get("clusterIP") != "None":
        return "`%s` is not headless, so `%s` has no DNS name" % (svc_name, host)
    m = re.match(r"^(.*)-(\d+)$", parts[0])
    for p in pods:
        if p.kind == "StatefulSet" and m and p.name == m.group(1) and p.service_name == svc_name:
            if int(m.group(2)) >= int(p.replicas):
                return "StatefulSet %s has %s replicas, so no pod %s" % (p.name, p.replicas, parts[0])
            return (p, svc)
    return "no StatefulSet with serviceName %s makes a pod named %s" % (svc_name, parts[0])


def check_address(c, field, addr, advertised, services, pods, problems):
    host, port = host_port(addr)
    own = set(c.listeners())
    m = REF.fullmatch(host)
    if host == OWN_HOSTNAME:
        problems.add(c.where, field, "`%s`: the %s's hostname is not in cluster DNS: advertise $(POD_IP) from the "
                     "downward API, or a name under a headless Service" % (
                         addr, "node" if c.pod.spec.get("hostNetwork") else "pod"))
    elif unspecified_or_loopback(host):
        problems.add(c.where, field, "`%s` cannot be dialled from another pod" % addr)
    elif m:
        fp = c.fields.get(m.group(1))
        ok_host = fp in POD_IP_FIELDS or (fp == "status.hostIP" and c.pod.spec.get("hostNetwork"))
        if fp == "status.hostIP" and not ok_host:
            problems.add(c.where, field, "`%s`: $(%s) is the node's IP, but the pod is not on the node's network "
                         "(hostNetwork)" % (addr, m.group(1)))
        elif not ok_host:
            problems.add(c.where, field,
                         "`%s`: $(%s) is %s, which cluster DNS does not resolve" % (addr, m.group(1), fp))
        elif not advertised:
            problems.add(c.where, field, "`%s` dials this pod itself" % addr)
        elif port not in own:
            problems.add(c.where, field, "`%s`: this container listens on %s" % (addr, sorted(own)))
    elif re.match(r"^\$\(([A-Za-z_0-9]+)\)\.", host):
        var = host[2:host.index(")")]
        svc_name = split_service_host(host.split(".", 1)[1])
        svc = services.get(svc_name)
        if c.fields.get(var) != "metadata.name" or c.pod.kind != "StatefulSet" or c.pod.service_name != svc_name:
            problems.add(c.where, field,
                         "`%s`: only a StatefulSet pod's own name under its serviceName resolves" % addr)
        elif not svc or (svc.get("spec") or {}).get("clusterIP") != "None":
            problems.add(c.where, field, "`%s`: %s is no headless Service" % (addr, svc_name))
        elif port not in own:
            problems.add(c.where, field, "`%s`: this container listens on %s" % (addr, sorted(own)))
    else:
        hp = headless_pod(host, services, pods)
        if isinstance(hp, str):
            problems.add(c.where, field, "`%s`: %s" % (addr, hp))
        elif hp:
            listens = {p for tc in hp[0].containers for p in tc.listeners()}
            if port not in listens:
                problems.add(c.where, field, "`%s`: pods of %s listen on %s" % (addr, hp[0].name, sorted(listens)))
        else:
            svc = services.get(split_service_host(host) or "")
            if not svc:
                problems.add(c.where, field, "`%s`: `%s` is no Service in the manifests" % (addr, host))
                return
            spec = svc.get("spec") or {}
            if spec.get("clusterIP") == "None":
                listens = {p for pod in pods if selects(svc, pod) for tc in pod.containers for p in tc.listeners()}
                if port not in listens:
                    problems.add(c.where, field,
                                 "`%s`: headless %s's pods listen on %s" % (addr, host, sorted(listens)))
            elif port not in {p.get("port") for p in spec.get("ports") or []}:
                problems.add(c.where, field, "`%s`: Service %s has ports %s" % (
                    addr, host, sorted(p.get("port") for p in spec.get("ports") or [])))


def check_service(where, name, svc, pods, problems):
    w = "%s: Service/%s" % (where, name)
    chosen = [p for p in pods if selects(svc, p)]
    if not chosen:
        problems.add(w, "spec.selector", "selects no pod of the manifests")
    for sp in (svc.get("spec") or {}).get("ports") or []:
        target = sp.get("targetPort", sp.get("port"))
        for pod in chosen:
            found = False
            for c in pod.containers:
                port = c.resolve_port(target)
                if port is not None and port in c.listeners():
                    found = True
            if not found:
                problems.add(w, "ports %s targetPort %s" % (sp.get("name", sp.get("port")), target),
                             "no container of %s/%s listens there" % (pod.kind, pod.name))
