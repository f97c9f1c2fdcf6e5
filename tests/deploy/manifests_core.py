"""check-manifests: the binaries' flags, containers, addresses, and the Compose file.
(The Kubernetes part is manifests_k8s.py; the command is check-manifests.py.)
"""
import ipaddress
import os
import re
import shutil
import subprocess

# Flags naming an address another process dials; ADVERTISED: an address others reach this one at.
DIALLED = {"registry", "allocator", "etcd-endpoints", "master"}
ADVERTISED = {"advertise-address"}
ETCD_DIALLED = {"advertise-client-urls", "initial-advertise-peer-urls", "initial-cluster", "endpoints"}
DATA_DIR_FLAGS = {"data-dir", "work-dir"}
OWN_HOSTNAME = "<own-hostname>"  # stands for the container's own hostname in an address
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
    def __init__(self, name, env=None, default=None, boolean=False, help="", metavar=None):
        self.name, self.env, self.default, self.boolean, self.help = name, env, default, boolean, help
        self.metavar = metavar

    def bad_value(self, v):
        """Why v cannot be this flag's value (lib/src/flags.c's parse_bool, time.c's durations), or None."""
        if self.boolean and v.lower() not in BOOL_WORDS:
            return "`%s` is not a boolean (%s)" % (v, ", ".join(BOOL_WORDS))
        if self.metavar == "DURATION" and not DURATION.match(v):
            return "`%s` is not a duration (a number with a unit: ns, us, ms, s, m, h, d; e.g. 15s)" % v
        return None


BOOL_WORDS = ("true", "yes", "on", "1", "false", "no", "off", "0")
DURATION = re.compile(r"^(0|((\d+(\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h|d))+)$")


class Binary:
    def __init__(self, name, kind, flags, commands=()):
        self.name, self.kind, self.commands = name, kind, set(commands)
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
        m = re.match(r"(?:-\w, )?--(\[no-\])?([a-z0-9][a-z0-9-]*)(?: <([A-Z_]+)>)?", t)
        if not m:
            continue
        env = re.search(r"\[env: ([A-Z0-9_]+)\]", t)
        dflt = re.search(r"\[default: ([^\]]*)\]", t)
        d = dflt.group(1) if dflt else None
        flags.append(Flag(m.group(2), env.group(1) if env else None, "" if d == '""' else d, bool(m.group(1)), t,
                          m.group(3)))
    return flags


def parse_etcd_help(text, env_prefix):
    flags = []
    for m in re.finditer(r"^\s+--([a-z0-9][a-z0-9-]*)(?:[ =]'?([^'\s\t]*)'?)?", text, re.M):
        name = m.group(1)
        env = env_prefix + name.upper().replace("-", "_") if env_prefix else None
        flags.append(Flag(name, env, m.group(2)))
    return flags


def parse_commands(text):
    """The names under a help's `Commands:` heading (`run`, `task logs`...)."""
    names, inside = [], False
    for line in text.splitlines():
        if line.strip() == "Commands:":
            inside = True
        elif inside and re.match(r"^  \S", line):
            names.append(re.split(r"\s{2,}", line.strip())[0])
        elif inside and line.strip():
            inside = False
    return names


def load_binary(name, path, command=()):
    try:
        out = subprocess.run([path] + list(command) + ["--help"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise RuntimeError("cannot run `%s --help`: %s" % (path, e))
    text = out.stdout + out.stderr
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError("`%s --help` exits %d: %s" % (" ".join([path] + list(command)), out.returncode, tail))
    if name == "etcd":
        return Binary(name, "etcd", parse_etcd_help(text, "ETCD_"))
    if name == "etcdctl":
        return Binary(name, "etcd", parse_etcd_help(text, "ETCDCTL_"))
    flags = parse_meseta_help(text)
    if not flags:
        raise RuntimeError("`%s --help` lists no flags" % " ".join([path] + list(command)))
    return Binary(" ".join([name] + list(command)), "meseta", flags, parse_commands(text))


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

    def command(self, name, argv):
        """(Binary or reason, words of argv naming a command) for `prog [global flags] [command] ...`:
        a command's flags are read from `prog command --help` (their env twins carry the
        command's prefix, e.g. MESETA_RUN_), the program's global flags stay valid."""
        b = self.get(name)
        if not isinstance(b, Binary) or not b.commands:
            return b, (0, 0)
        i = 0
        while i < len(argv) and argv[i].startswith("--") and argv[i] != "--":
            f = b.flag_of_arg(argv[i])
            i += 2 if f and not f.boolean and "=" not in argv[i] else 1
        for n in (2, 1):
            words = argv[i:i + n]
            if len(words) == n and " ".join(words) in b.commands:
                key = (os.path.basename(name),) + tuple(words)
                if key not in self.cache:
                    try:
                        sub = load_binary(key[0], self.paths.get(key[0]) or shutil.which(key[0]), words)
                        self.cache[key] = Binary(sub.name, "meseta", list(sub.flags.values()) +
                                                 list(b.flags.values()), sub.commands)
                    except RuntimeError as e:
                        self.cache[key] = str(e)
                return self.cache[key], (i, n)
        return b, (0, 0)


# ---- one container, from either format ----

class Container:
    """argv: the words after the binary (and its command), up to `--`; arg_fields: where each
    word was written (`command[2]`, `args[0]`); env: name -> value (downward-API values are
    left as `$(NAME)`)."""

    def __init__(self, where, binaries, words, fields, env, env_field):
        self.where, self.env = where, env
        self.env_field = env_field  # "env" (k8s) or "environment" (compose)
        self.binary, (i, n) = binaries.command(words[0], words[1:])
        argv, fields = words[1:], fields[1:]
        argv, fields = argv[:i] + argv[i + n:], fields[:i] + fields[i + n:]
        end = argv.index("--") if "--" in argv else len(argv)
        self.argv, self.arg_fields = argv[:end], fields[:end]

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
    for i, (field, a) in enumerate(zip(c.arg_fields, c.argv)):
        f = b.flag_of_arg(a)
        if f is False:
            problems.add(c.where, "%s `%s`" % (field, a.split("=", 1)[0]), "not a flag of %s" % b.name)
        elif f and ("=" in a or (not f.boolean and i + 1 < len(c.argv))):
            why = f.bad_value(a.split("=", 1)[1] if "=" in a else c.argv[i + 1])
            if why:
                problems.add(c.where, "%s `%s`" % (field, a.split("=", 1)[0]), why)
    prefixes = ("ETCD_",) if b.kind == "etcd" and b.name == "etcd" else env_prefix_checked
    for name, v in c.env.items():
        if name in b.envs:
            why = b.envs[name].bad_value(v) if v and not v.startswith(("$(", "<")) else None
            if why:
                problems.add(c.where, "%s %s" % (c.env_field, name), why)
            continue
        if any(name.startswith(p) for p in prefixes):
            problems.add(c.where, "%s %s" % (c.env_field, name),
                         "not a flag of %s (see `%s --help`)" % (b.name, b.name))
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
        elif n in ADVERTISED and "listen" in b.flags:
            out.append(default_advertised(c, f))
    if b.name == "meseta-agent" and "advertise-address" not in b.flags:
        out.append(default_advertised(c, None))
    return out


def default_advertised(c, f):
    """(flag, address, source, True) a service advertises without --advertise-address: its first
    listen address; the agent, and services whose help says so, put their hostname (--hostname,
    else the machine's: OWN_HOSTNAME) in place of an unspecified host."""
    b = c.binary
    lv, lsrc = c.value(b.flags["listen"])
    first = (split_list(lv or "") or [""])[0]
    host, port = host_port(first)
    name = f.name if f else "hostname"
    by_name = b.name == "meseta-agent" or (f is not None and "hostname" in f.help)
    if not (by_name and unspecified_or_loopback(host) and not ipaddress_is_loopback(host)):
        return (name, first, "unset, so the first --listen (%s)" % lsrc, True)
    hf = b.flags.get("hostname")
    hv, hsrc = c.value(hf) if hf else (None, None)
    if hv:
        return (name, "%s:%s" % (hv, port), "unset, so --hostname (%s) and the --listen port" % hsrc, True)
    return (name, "%s:%s" % (OWN_HOSTNAME, port), "unset, so this container's hostname and the --listen port", True)


def ipaddress_is_loopback(host):
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def image_runs_as_root(dockerfile):
    """Whether deploy/Dockerfile's last USER is root (or absent)."""
    try:
        with open(dockerfile) as fh:
            users = re.findall(r"^USER\s+(\S+)", fh.read(), re.M)
    except OSError:
        return False
    return not users or users[-1] in ("root", "0")
