#!/usr/bin/env python3
"""Helpers for bench/validate.sh (standard library only).

    benchlib.py bundle SCHEMAS_DIR OUT_DIR     inline common.schema.json into each kind schema
    benchlib.py check TOOL OUT ERR MANIFEST CAT files a tool flagged vs the generator's manifest
                                                (CAT: all, or schema for the schema-only peers)
    benchlib.py table RESULTS.jsonl             markdown table of the results
"""

import json
import os
import re
import sys

KINDS = ["team", "tenant", "plugin", "rollout", "settings"]


def bundle(src, out):
    """ajv-cli cannot resolve `common.schema.json#/$defs/X` (the schemas have no `$id`), so
    write copies whose refs point at `#/$defs/X`, with common's `$defs` copied in."""
    with open(os.path.join(src, "common.schema.json")) as f:
        common = json.load(f)

    def rewrite(x):
        if isinstance(x, dict):
            return {k: (v.replace("common.schema.json#", "#", 1) if k == "$ref" and isinstance(v, str) else rewrite(v))
                    for k, v in x.items()}
        if isinstance(x, list):
            return [rewrite(v) for v in x]
        return x

    os.makedirs(out, exist_ok=True)
    for kind in KINDS:
        with open(os.path.join(src, f"{kind}.schema.json")) as f:
            schema = rewrite(json.load(f))
        defs = dict(common["$defs"])
        for name, d in schema.get("$defs", {}).items():
            if name in defs and defs[name] != d:
                sys.exit(f"bundle: {kind}.schema.json redefines $defs/{name} of common.schema.json")
            defs[name] = d
        schema["$defs"] = defs
        text = json.dumps(schema, indent=1)
        if "common.schema.json" in text:
            sys.exit(f"bundle: {kind}.schema.json still refers to common.schema.json")
        with open(os.path.join(out, f"{kind}.schema.json"), "w") as f:
            f.write(text + "\n")


def _rampart_files(node, acc):
    """Files named by error diagnostics anywhere in rampart's JSON report."""
    if isinstance(node, dict):
        if isinstance(node.get("file"), str) and "code" in node and str(node.get("severity", "error")).lower() == "error":
            acc.add(node["file"])
        for v in node.values():
            _rampart_files(v, acc)
    elif isinstance(node, list):
        for v in node:
            _rampart_files(v, acc)


_REL = re.compile(r"(?:^|/)((?:teams|tenants|plugins|rollouts)/[^/]+|rampart\.yaml)$")


def flagged_files(tool, out, err):
    """The set of files a tool reported invalid (paths relative to the corpus root), or None
    when its output cannot be read."""
    def read(p):
        try:
            with open(p, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    o, e = read(out), read(err)
    if tool == "rampart":
        try:
            files = set()
            _rampart_files(json.loads(o), files)
        except ValueError:
            return None
    elif tool == "ajv-cli":
        # `<file> invalid` on stderr per invalid file; `error: ...` if a file could not be parsed
        if re.search(r"^error: ", e, re.M):
            return None
        files = set(re.findall(r"^(\S+) invalid$", e, re.M))
    elif tool == "check-jsonschema":
        # text output: `  <file>::$.<path>: <message>` per error
        files = set(re.findall(r"^\s+(\S+?)::", o + e, re.M))
    else:
        return None
    return {(m.group(1) if (m := _REL.search(f)) else f) for f in files}


def check(tool, out, err, manifest, category):
    """`flagged / expected`, with the differences when the sets are not the same."""
    with open(manifest) as f:
        expected = {e["path"] for e in json.load(f)["invalid"] if category == "all" or e["category"] == category}
    got = flagged_files(tool, out, err)
    if got is None:
        return f"? / {len(expected)}"
    text = f"{len(got)} / {len(expected)}"
    missed, extra = len(expected - got), len(got - expected)
    if missed or extra:
        text += f" ({missed} missed, {extra} unexpected)"
    return text


def table(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    out = ["| size | files | tool | median wall (s) | ± stddev | mean user+sys (s) | peak RSS (MiB) | flagged / expected | ratio vs rampart |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size in dict.fromkeys(r["size"] for r in rows):
        group = [r for r in rows if r["size"] == size]
        base = None
        for r in group:
            if r["tool"] == "rampart" and r.get("hyperfine"):
                base = load_hf(r["hyperfine"])["median"]
        for r in group:
            if not r.get("hyperfine"):
                out.append(f"| {size} | {r['files']} | {r['tool']} | skipped | | | | | |")
                continue
            h = load_hf(r["hyperfine"])
            rss = f"{int(r['rss_kib']) / 1024:.0f}" if str(r.get("rss_kib", "")).isdigit() else "?"
            ratio = f"{h['median'] / base:.1f}×" if base else "–"
            out.append(f"| {size} | {r['files']} | {r['tool']} | {h['median']:.3f} | {h['stddev'] or 0:.3f} | "
                       f"{h['user'] + h['system']:.2f} | {rss} | {r['flagged']} | {ratio} |")
    return "\n".join(out)


def load_hf(p):
    with open(p) as f:
        return json.load(f)["results"][0]


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "bundle" and len(sys.argv) == 4:
        bundle(sys.argv[2], sys.argv[3])
    elif cmd == "check" and len(sys.argv) == 7:
        print(check(*sys.argv[2:7]))
    elif cmd == "table" and len(sys.argv) == 3:
        print(table(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
