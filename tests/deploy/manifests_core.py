#!/usr/bin/python3
"""check-manifests: binaries, containers and the Compose file (the Kubernetes part: manifests_k8s.py).

Checks deploy/compose.yaml and the Kubernetes manifests against the binaries they run.

Every MESETA_* variable and --flag must be a flag of that binary (read from its --help),
every probe, healthcheck and Service port must be a port the container listens on, every
advertised or dialled address must be reachable from other pods/containers, and the
issue-13 regressions (privileged, root-owned data dirs) must stay out.
One line per problem: FILE: OBJECT: container NAME: FIELD: what is wrong. Exit 1 on any.
"""
import ipaddress
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("check-manifests: python3-yaml is missing (apt-get install python3-yaml, scripts/setup-deps.sh)")

# Flags naming an address another process dials, per binary. advertise = reached by others.
DIALLED = {"registry", "allocator", "etcd-endpoints", "master"}
ADVERTISED = {"advertise-address"}
ETCD_DIALLED = {"advertise-client-urls", "initial-advertise-peer-urls", "initial-cluster", "endpoints"}
DATA_DIR_FLAGS = {"data-dir", "work-dir"}
# Capabilities these machines' processes lack (CAP_SYS_RESOURCE) or that ask for all of them.
UNGRANTABLE_CAPS = {"SYS_RESOURCE", "CAP_SYS_RESOURCE", "ALL"}
IMAGE_UID = 10001  # deploy/Dockerfile's USER meseta


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, where, field, msg):
        self.lines.append("%s: %s: %s" % (where, field, msg))


# ---- binaries and their flags ----

class Flag:
    def __init__(self, name, env=None, default=None, boolean=False):
        self.name, self.env, self.default, self.boolean = name, env, default, boolean


class Binary:
    def __init__(self, name, kind, flags):
        self.name, self.kind = name, kind
        self.flags = {f.name: f for f in flags}
        self.envs = {f.env: f for f in flags if f.env}

    def flag_of_arg(self, arg):
        """The Flag an argv word names, None for a word that is not a flag, False for an unknown flag."""
        if not arg.startswith("--") or arg == "--":
            return None
        name = arg[2:].split("=", 1)[0]
        f = self.flags.get(name)
        if f is None and name.startswith("no-") and self.kind == "meseta":
            f = self.flags.get(name[3:])
            if f is not None and not f.boolean:
                f = None
        return f if f is not None else False


def parse_meseta_help(text):
    """Rows start with `      --name` or `  -h, --help`; annotations follow on any line of the row."""
    rows, cur = [], None
    for line in text.splitlines():
        if re.match(r"^ {2,6}(-\w, )?--", line):
            cur = [line]
            rows.append(cur)
        elif cur is not None and line.startswith("   "):
            cur.append(line)
        else:
            cur = None
    flags = []
    for row in rows:
        t = " ".join(s.strip() for s in row)
        m = re.match(r"(?:-\w, )?--(\[no-\])?([a-z0-9][a-z0-9-]*)", t)
        if not m:
            continue
        env = re.search(r"\[env: ([A-Z0-9_]+)\]", t)
        dflt = re.search(r"\[default: ([^\]]*)\]", t)
        d = dflt.group(1) if dflt else None
        flags.append(Flag(m.group(2), env.group(1) if env else None, "" if d == '""' else d, bool(m.group(1))))
    return flags


def parse_etcd_help(text, env_prefix):
    flags = []
    for m in re.finditer(r"^\s+--([a-z0-9][a-z0-9-]*)(?:[ =]'?([^'\s\t]*)'?)?", text, re.M):
        name = m.group(1)
        env = env_prefix + name.upper().replace("-", "_") if env_prefix else None
        flags.append(Flag(name, env, m.group(2)))
    return flags


def load_binary(name, path):
    try:
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise RuntimeError("cannot run `%s --help`: %s" % (path, e))
    text = out.stdout + out.stderr
    if name == "etcd":
        return Binary(name, "etcd", parse_etcd_help(text, "ETCD_"))
    if name == "etcdctl":
        return Binary(name, "etcd", parse_etcd_help(text, "ETCDCTL_"))
    flags = parse_meseta_help(text)
    if not flags:
        raise RuntimeError("`%s --help` lists no flags (exit %d)" % (path, out.returncode))
    return Binary(name, "meseta", flags)


class Binaries:
    def __init__(self, paths):
        self.paths, self.cache = paths, {}

    def get(self, name):
        """The Binary for a command name, or a string saying why there is none."""
        base = os.path.basename(name)
        if base not in self.cache:
            path = self.paths.get(base) or (shutil.which(base) if not base.startswith("meseta") else None)
            if not path:
                self.cache[base] = ("`%s` is not a binary the check knows (pass --bin %s=PATH from the build tree)"
                                    % (base, base))
            else:
                try:
                    self.cache[base] = load_binary(base, path)
                except RuntimeError as e:
                    self.cache[base] = str(e)
        return self.cache[base]


# ---- one container, from either format ----

class Container:
    """argv: the command words after the binary; env: name -> value, or ("field", fieldPath)."""

    def __init__(self, where, binary, argv, env, env_field):
        self.where, self.binary, self.argv, self.env = where, binary, argv, env
        self.env_field = env_field  # "env" (k8s) or "environment" (compose)

    def value(self, flag):
        """(value, source field) of a flag: its last --flag, else its env var, else the default."""
        val = None
        for i, a in enumerate(self.argv):
            if a == "--" + flag.name and not flag.boolean and i + 1 < len(self.argv):
                val = (self.argv[i + 1], "args `--%s`" % flag.name)
            elif a.startswith("--%s=" % flag.name):
                val = (a.split("=", 1)[1], "args `--%s`" % flag.name)
        if val:
            return val
        v = self.env.get(flag.env) if flag.env else None
        if isinstance(v, str) and v:
            return v, "%s %s" % (self.env_field, flag.env)
        if flag.default:
            return flag.default, "default of --%s" % flag.name
        return None, None

    def listeners(self):
        """Ports this container listens on."""
        if not isinstance(self.binary, Binary):
            return set()
        ports = set()
        names = ("listen-client-urls", "listen-peer-urls") if self.binary.kind == "etcd" else ("listen",)
        for n in names:
            f = self.binary.flags.get(n)
            if f:
                v, _ = self.value(f)
                for a in split_list(v or ""):
                    p = host_port(a)[1]
                    if p:
                        ports.add(p)
        return ports


def split_list(v):
    return [s.strip() for s in v.split(",") if s.strip()]


def host_port(addr):
    """(host, port) of host:port, [v6]:port or scheme://host:port/; port None when absent."""
    a = re.sub(r"^[a-z][a-z0-9+.-]*://", "", addr).split("/", 1)[0]
    m = re.match(r"^\[([^\]]*)\](?::(\d+))?$", a) or re.match(r"^([^:]*)(?::(\d+))?$", a)
    if not m:
        return a, None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def unspecified_or_loopback(host):
    if host in ("", "localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_unspecified or ip.is_loopback
    except ValueError:
        return False


def check_flags(c, used_vars, problems, env_prefix_checked=("MESETA_",)):
    """Every --flag and flag-like env var is one of the binary's; helper vars are used."""
    b = c.binary
    if not isinstance(b, Binary):
        problems.add(c.where, "command", b)
        return
    for i, a in enumerate(c.argv):
        if b.flag_of_arg(a) is False:
            problems.add(c.where, "args[%d] `%s`" % (i, a.split("=", 1)[0]), "not a flag of %s" % b.name)
    prefixes = ("ETCD_",) if b.kind == "etcd" and b.name == "etcd" else env_prefix_checked
    for name in c.env:
        if name in b.envs:
            continue
        if any(name.startswith(p) for p in prefixes):
            problems.add(c.where, "%s %s" % (c.env_field, name), "not a flag of %s (see `%s --help`)" % (b.name, b.name))
        elif used_vars is not None and name not in used_vars:
            problems.add(c.where, "%s %s" % (c.env_field, name),
                         "neither a flag of %s nor used in a $(%s) expansion" % (b.name, name))


def dialled_addresses(c):
    """(flag name, address, source, advertised?) for every address this container names for others."""
    b = c.binary
    if not isinstance(b, Binary):
        return []
    out = []
    if b.kind == "etcd":
        for n in ETCD_DIALLED:
            f = b.flags.get(n)
            v, src = c.value(f) if f else (None, None)
            if v and src and not src.startswith("default"):
                for a in split_list(v):
                    a = a.split("=", 1)[1] if n == "initial-cluster" and "=" in a else a
                    out.append((n, a, src, "advertise" in n))
            elif n.startswith("advertise-client") and f:
                out.append((n, v or "", src or "default", True))
        return out
    for n in sorted(DIALLED | ADVERTISED):
        f = b.flags.get(n)
        if not f:
            continue
        v, src = c.value(f)
        if v:
            for a in split_list(v):
                out.append((n, a, src, n in ADVERTISED))
        elif n in ADVERTISED and "listen" in b.flags and b.name != "meseta-agent":
            lv, lsrc = c.value(b.flags["listen"])
            first = split_list(lv or "")[:1]
            out.append((n, first[0] if first else "", "unset, so the first --listen (%s)" % lsrc, True))
    if b.name == "meseta-agent" and not (b.flags.get("advertise-address") and c.value(b.flags["advertise-address"])[0]):
        # AgentOperator is reached at hostname:port of the first listen address.
        hv, hsrc = c.value(b.flags["hostname"])
        lv, _ = c.value(b.flags["listen"])
        first = split_list(lv or "")[:1]
        port = host_port(first[0])[1] if first else None
        out.append(("hostname", "%s:%s" % (hv or "", port), hsrc or "unset (the container's own hostname)", True))
    return out


def image_runs_as_root(dockerfile):
    """Whether deploy/Dockerfile's last USER is root (or absent)."""
    try:
        with open(dockerfile) as fh:
            users = re.findall(r"^USER\s+(\S+)", fh.read(), re.M)
    except OSError:
        return False
    return not users or users[-1] in ("root", "0")


# ---- Compose ----

def compose_command(svc, dockerfile):
    ep = svc.get("entrypoint")
    cmd = svc.get("command") or []
    if isinstance(ep, str):
        ep = ep.split()
    if isinstance(cmd, str):
        cmd = cmd.split()
    words = (ep or []) + list(cmd)
    if words and not str(words[0]).startswith("-"):
        return str(words[0]), [str(w) for w in words[1:]]
    try:
        with open(dockerfile) as fh:
            eps = re.findall(r"^ENTRYPOINT\s+\[([^\]]*)\]", fh.read(), re.M)
        ep = [w.strip().strip('"') for w in eps[-1].split(",") if w.strip()] if eps else []
    except OSError:
        ep = []
    if ep:
        return ep[0], ep[1:] + [str(w) for w in words]
    return None, [str(w) for w in words]


def compose_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict((e.split("=", 1) + [""])[:2] for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def check_compose(path, binaries, dockerfile, problems):
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as e:
        problems.add(path, "-", "cannot read: %s" % e)
        return
    services = doc.get("services") or {}
    conts, names = {}, {}
    for sname, svc in services.items():
        where = "%s: service %s" % (path, sname)
        prog, argv = compose_command(svc, dockerfile)
        b = binaries.get(prog) if prog else "no command, and deploy/Dockerfile has no ENTRYPOINT"
        c = Container(where, b, argv, compose_env(svc), "environment")
        conts[sname] = (c, svc)
        names[sname] = sname
        for alias in [svc.get("hostname"), svc.get("container_name")]:
            if alias:
                names[alias] = sname
        for net in (svc.get("networks") or {}).values() if isinstance(svc.get("networks"), dict) else []:
            for alias in (net or {}).get("aliases", []):
                names[alias] = sname

    for sname, (c, svc) in conts.items():
        check_flags(c, None, problems)
        if svc.get("privileged"):
            problems.add(c.where, "privileged", "`privileged: true` asks for every capability, and these machines "
                         "lack CAP_SYS_RESOURCE (\"unable to apply caps\"): list cap_add by name")
        for cap in svc.get("cap_add") or []:
            if str(cap).upper() in UNGRANTABLE_CAPS:
                problems.add(c.where, "cap_add %s" % cap, "not grantable on these machines")
        listens = c.listeners()
        for p in svc.get("ports") or []:
            cport = int(str(p).split("/")[0].split(":")[-1]) if not isinstance(p, dict) else int(p.get("target"))
            if cport not in listens:
                problems.add(c.where, "ports `%s`" % p, "container port %d is not one it listens on %s" % (cport, sorted(listens)))
        hc = (svc.get("healthcheck") or {}).get("test")
        if isinstance(hc, list) and hc and hc[0] in ("CMD", "CMD-SHELL") and hc[0] == "CMD":
            check_compose_probe(c, [str(w) for w in hc[1:]], listens, binaries, problems)
        for flag, addr, src, adv in dialled_addresses(c):
            field = "%s (%s)" % (flag, src)
            host, port = host_port(addr)
            if unspecified_or_loopback(host) or host == "None":
                problems.add(c.where, field, "`%s` cannot be dialled from another container" % addr)
                continue
            target = names.get(host)
            if target is None:
                problems.add(c.where, field, "`%s`: `%s` is no service, hostname or alias in the file" % (addr, host))
                continue
            tc, tsvc = conts[target]
            if port not in tc.listeners():
                problems.add(c.where, field, "`%s`: service %s listens on %s, not %s" % (addr, target, sorted(tc.listeners()), port))
            if adv and host == target and int(tsvc.get("scale") or 1) > 1:
                problems.add(c.where, field, "`%s` names all %s replicas of %s, not this one" % (addr, tsvc.get("scale"), target))


def check_compose_probe(c, words, listens, binaries, problems):
    field = "healthcheck test"
    b = binaries.get(words[0])
    if not isinstance(b, Binary):
        problems.add(c.where, field, b)
        return
    addrs = []
    for i, w in enumerate(words[1:]):
        f = b.flag_of_arg(w)
        if f is False:
            problems.add(c.where, "%s `%s`" % (field, w.split("=", 1)[0]), "not a flag of %s" % b.name)
        elif f and f.name == "endpoints":
            addrs += split_list(w.split("=", 1)[1] if "=" in w else words[i + 2])
        elif f is None and b.kind == "meseta" and re.search(r":\d+$", w) and (i == 0 or not words[i].startswith("--")):
            addrs.append(w)
    if not addrs:
        problems.add(c.where, field, "names no address to probe")
    for a in addrs:
        host, port = host_port(a)
        if port not in listens:
            problems.add(c.where, "%s `%s`" % (field, a), "port %s is not one the container listens on %s" % (port, sorted(listens)))
