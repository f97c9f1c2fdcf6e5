#!/usr/bin/python3
"""The banned functions (lib/include/meseta/banned.h) stay banned: every compile command
of the build puts banned.h first, and a C file calling any of them does not compile with
those flags, while one calling their replacements does.

Usage: banned-functions.py BUILD_DIR BANNED_H"""
import json
import os
import shlex
import subprocess
import sys
import tempfile

BANNED = {
    "sprintf": 'char b[8]; sprintf(b, "%d", 1);',
    "vsprintf": "char b[8]; va_list ap; vsprintf(b, \"x\", ap);",
    "strcpy": 'char b[8]; strcpy(b, "x");',
    "strcat": 'char b[8] = ""; strcat(b, "x");',
    "gets": "char b[8]; gets(b);",
    "atoi": 'return atoi("1");',
    "atol": 'return (int)atol("1");',
    "atoll": 'return (int)atoll("1");',
    "strtok": 'char b[] = "a b"; strtok(b, " ");',
}
ALLOWED = 'char b[8]; snprintf(b, sizeof(b), "%d", 1); char *e; return (int)strtol(b, &e, 10);'


def main():
    build, banned_h = sys.argv[1], os.path.realpath(sys.argv[2])
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = json.load(f)
    problems = []
    for c in commands:
        if not c["file"].endswith(".c"):
            continue
        args = c.get("arguments") or shlex.split(c["command"])
        ok = any(a == "-include" and i + 1 < len(args) and os.path.realpath(args[i + 1]) == banned_h
                 for i, a in enumerate(args))
        if not ok:
            problems.append(f"{c['file']}: compiled without `-include {banned_h}`")
    print(f"{len(commands)} compile commands checked")
    # Compile probes with the flags of one real command (its compiler, defines, -include).
    ref = next(c for c in commands if c["file"].endswith(".c"))
    args = ref.get("arguments") or shlex.split(ref["command"])
    keep, skip = [args[0]], False
    for i, a in enumerate(args[1:], 1):
        if skip:
            skip = False
            continue
        if a in ("-o", "-c", "-MF", "-MT", "-MQ"):
            skip = a != "-c"
            continue
        if a == ref["file"] or a.endswith(os.path.basename(ref["file"])):
            continue
        keep.append(a)
    with tempfile.TemporaryDirectory() as d:
        def compiles(body):
            src = os.path.join(d, "probe.c")
            with open(src, "w") as f:
                f.write("#include <stdarg.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
                        f"int probe(void) {{ {body} return 0; }}\n")
            r = subprocess.run(keep + ["-fsyntax-only", "-Wno-error", src], cwd=ref["directory"],
                               capture_output=True, text=True)
            return r.returncode == 0, r.stderr
        ok, err = compiles(ALLOWED)
        if not ok:
            problems.append(f"the replacements do not compile with the build's flags:\n{err}")
        for name, body in BANNED.items():
            ok, err = compiles(body)
            if ok:
                problems.append(f"`{name}` compiles with the build's flags: banned.h does not ban it")
            elif "poison" not in err:
                problems.append(f"`{name}` fails for another reason than the ban:\n{err}")
    for p in problems:
        print(p)
    print("banned functions: " + ("ok" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
