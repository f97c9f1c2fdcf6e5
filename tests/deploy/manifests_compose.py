"""check-manifests: the Compose part (deploy/compose.yaml)."""
import os
import re
import shlex

import yaml

from manifests_core import (DATA_DIR_FLAGS, OWN_HOSTNAME, UNGRANTABLE_CAPS, Binary, Container, check_flags,
                            dialled_addresses, host_port, split_list, unspecified_or_loopback)


def compose_command(svc, dockerfile):
    """(words, where each was written): entrypoint (the service's, else the image's) + command."""
    def words_of(key):
        v = svc.get(key)
        v = v.split() if isinstance(v, str) else list(v or [])
        return [str(w) for w in v], ["%s[%d]" % (key, i) for i in range(len(v))]
    ep, ep_f = words_of("entrypoint")
    cmd, cmd_f = words_of("command")
    if not ep and (not cmd or cmd[0].startswith("-")):
        try:
            with open(dockerfile) as fh:
                eps = re.findall(r"^ENTRYPOINT\s+\[([^\]]*)\]", fh.read(), re.M)
            ep = [w.strip().strip('"') for w in eps[-1].split(",") if w.strip()] if eps else []
        except OSError:
            ep = []
        ep_f = ["Dockerfile ENTRYPOINT[%d]" % i for i in range(len(ep))]
    return ep + cmd, ep_f + cmd_f


def compose_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict((e.split("=", 1) + [""])[:2] for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def interpolate(v):
    """Compose's ${NAME:-default}, ${NAME-default}, ${NAME}, $NAME and $$, from this environment."""
    if isinstance(v, dict):
        return {k: interpolate(x) for k, x in v.items()}
    if isinstance(v, list):
        return [interpolate(x) for x in v]
    if not isinstance(v, str):
        return v

    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        val = os.environ.get(name)
        if m.group(2) == ":-":
            return val if val else m.group(3)
        if m.group(2) == "-":
            return val if val is not None else m.group(3)
        return val or ""
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, v)


def image_dirs(dockerfile):
    """(owner of each directory the image's last stage makes, {user name: uid}, the last USER)."""
    try:
        with open(dockerfile) as fh:
            text = fh.read()
    except OSError:
        return {}, {}, None
    text = text[[m.start() for m in re.finditer(r"^FROM\s", text, re.M)][-1]:] if "FROM" in text else text
    owners, uids, user = {}, {}, "root"
    for line in re.sub(r"\\\n", " ", text).splitlines():
        m = re.match(r"^(RUN|USER)\s+(.*)", line.strip())
        if m and m.group(1) == "USER":
            user = m.group(2).split(":")[0]
        elif m:
            for cmd in re.split(r"&&|;|\|\|", m.group(2)):
                try:
                    w = shlex.split(cmd)
                except ValueError:
                    continue
                if not w:
                    continue
                if w[0] == "useradd" and "--uid" in w:
                    uids[w[-1]] = w[w.index("--uid") + 1]
                elif w[0] in ("install", "mkdir") and ("-d" in w or w[0] == "mkdir"):
                    owner, rest, skip = user, [], False
                    for i, a in enumerate(w[1:], 1):
                        if skip:
                            skip = False
                        elif a in ("-o", "--owner"):
                            owner, skip = w[i + 1], True
                        elif a in ("-g", "-m", "--group", "--mode"):
                            skip = True
                        elif not a.startswith("-"):
                            rest.append(a)
                    owners.update({p.rstrip("/"): owner for p in rest})
                elif w[0] == "chown":
                    args = [a for a in w[1:] if not a.startswith("-")]
                    owners.update({p.rstrip("/"): args[0].split(":")[0] for p in args[1:]})
    return owners, uids, user


def check_volume_owner(c, svc, image, problems):
    """A non-root service's data dir on a named volume: Docker creates the volume root-owned
    unless the image has that directory, owned by the service's user (issue 13, point 1)."""
    owners, uids, image_user = image
    user = str(svc.get("user") or image_user or "root").split(":")[0]
    if user in ("root", "0") or not isinstance(c.binary, Binary):
        return
    for n in sorted(DATA_DIR_FLAGS & set(c.binary.flags)):
        path, src = c.value(c.binary.flags[n])
        if not path:
            continue
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                source, target = v.get("source"), v.get("target")
            else:
                source, target = (str(v).split(":") + [""])[:2]
            if not target or not source or source[0] in "/.~" or not (path + "/").startswith(target + "/"):
                continue
            owner = owners.get(target.rstrip("/"))
            if owner not in (user, uids.get(user)) and uids.get(owner) != user:
                problems.add(c.where, "%s (%s)" % (n, src),
                             "`%s` is on volume %s, which Docker creates root-owned unless deploy/Dockerfile "
                             "makes %s owned by %s (it makes it %s): %s cannot write it"
                             % (path, source, target, user, "owned by " + owner if owner else "not at all", user))


def check_compose(path, binaries, dockerfile, problems):
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as e:
        problems.add(path, "-", "cannot read: %s" % e)
        return
    services = interpolate(doc.get("services") or {})
    image = image_dirs(dockerfile)
    conts, names = {}, {}
    for sname, svc in services.items():
        where = "%s: service %s" % (path, sname)
        words, fields = compose_command(svc, dockerfile)
        if not words:
            problems.add(where, "command", "no command, and deploy/Dockerfile has no ENTRYPOINT")
            continue
        c = Container(where, binaries, words, fields, compose_env(svc), "environment")
        conts[sname] = (c, svc)
        names[sname] = sname
        if svc.get("container_name"):  # Docker's DNS answers it; not `hostname:`
            names[svc["container_name"]] = sname
        for net in (svc.get("networks") or {}).values() if isinstance(svc.get("networks"), dict) else []:
            for alias in (net or {}).get("aliases", []):
                names[alias] = sname

    for sname, (c, svc) in conts.items():
        check_flags(c, None, problems)
        check_volume_owner(c, svc, image, problems)
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
                problems.add(c.where, "ports `%s`" % p,
                             "container port %d is not one it listens on %s" % (cport, sorted(listens)))
        hc = (svc.get("healthcheck") or {}).get("test")
        if hc and hc != ["NONE"] and not (svc.get("healthcheck") or {}).get("disable"):
            check_compose_probe(c, healthcheck_commands(hc), listens, binaries, problems)
        for flag, addr, src, adv in dialled_addresses(c):
            field = "%s (%s)" % (flag, src)
            host, port = host_port(addr)
            if adv and c.binary.name == "meseta-agent":
                # Read by the CLI on the Docker host (meseta run prints task output from it).
                if not host_published(c, svc, host, port):
                    problems.add(c.where, field, "`%s`: the CLI on the Docker host dials AgentOperator there; "
                                 "publish the port on 127.0.0.1 and advertise 127.0.0.1:PORT" % addr)
                continue
            if unspecified_or_loopback(host):
                problems.add(c.where, field, "`%s` cannot be dialled from another container" % addr)
                continue
            if host == OWN_HOSTNAME:
                if not svc.get("hostname"):
                    continue  # Docker's DNS answers a container's short id, its default hostname
                host = svc["hostname"]
            target = names.get(host)
            if target is None:
                problems.add(c.where, field, "`%s`: `%s` is no service, container_name or alias in the file" % (addr, host))
                continue
            tc, tsvc = conts[target]
            if port not in tc.listeners():
                problems.add(c.where, field,
                             "`%s`: service %s listens on %s, not %s" % (addr, target, sorted(tc.listeners()), port))
            if adv and host == target and int(tsvc.get("scale") or 1) > 1:
                problems.add(c.where, field,
                             "`%s` names all %s replicas of %s, not this one" % (addr, tsvc.get("scale"), target))


def healthcheck_commands(hc):
    """The probe's commands, each a list of words: a CMD list as it is, a shell form split at
    its operators (`test -s F && meseta-probe ADDR` is two commands)."""
    if isinstance(hc, str):
        hc = ["CMD-SHELL", hc]
    if hc[0] == "CMD":
        return [[str(w) for w in hc[1:]]]
    cmds, cur = [], []
    for w in shlex.split(" ".join(str(x) for x in hc[1:]), posix=True):
        if w in ("&&", "||", ";", "|", "!"):
            cmds.append(cur)
            cur = []
        else:
            cur.append(w)
    return [cmd for cmd in cmds + [cur] if cmd]


def host_published(c, svc, host, port):
    """Whether the agent's advertised address is one the Docker host reaches through `ports`:
    the CLI on the host reads task output there (until that moves behind master-api)."""
    if not unspecified_or_loopback(host) or port not in c.listeners():
        return False
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            hip, hport, cport = p.get("host_ip", ""), p.get("published"), p.get("target")
        else:
            parts = str(p).split("/")[0].rsplit(":", 2)
            hip, hport, cport = ([""] * (3 - len(parts)) + parts)
        if str(hport) == str(port) and str(cport) == str(port) and (hip in ("", host) or host == "localhost"):
            return True
    return False


def check_compose_probe(c, cmds, listens, binaries, problems):
    """meseta-probe and etcdctl commands in a healthcheck: real flags, and a port the container
    listens on; other tools (test, sh) are left alone."""
    field = "healthcheck test"
    addrs, probes = [], 0
    for words in cmds:
        name = os.path.basename(words[0])
        if not (name.startswith("meseta") or name.startswith("etcd")):
            continue
        probes += 1
        b = binaries.get(name)
        if not isinstance(b, Binary):
            problems.add(c.where, field, b)
            continue
        takes_value = False
        for i, w in enumerate(words[1:], 1):
            f = b.flag_of_arg(w)
            if f is False:
                problems.add(c.where, "%s `%s`" % (field, w.split("=", 1)[0]), "not a flag of %s" % b.name)
            elif f and f.name == "endpoints":
                addrs += split_list(w.split("=", 1)[1] if "=" in w else (words + [""])[i + 1])
            elif f is None and not takes_value and b.kind == "meseta" and re.search(r":\d+$", w):
                addrs.append(w)
            takes_value = bool(f) and not f.boolean and "=" not in w and b.kind == "meseta"
    if probes and not addrs:
        problems.add(c.where, field, "names no address to probe")
    for a in addrs:
        port = host_port(a)[1]
        if port not in listens:
            problems.add(c.where, "%s `%s`" % (field, a),
                         "port %s is not one the container listens on %s" % (port, sorted(listens)))
