#!/usr/bin/env python3
"""Rewrite action.yml (a composite action) as a reusable workflow for actionlint, which checks
workflows only: the inputs become `workflow_call` string inputs and the steps one job's steps,
verbatim, so actionlint checks their expressions, the `uses:` pins and inputs, and runs
shellcheck over every `run:` script. Standard library only (a fresh machine has no PyYAML);
relies on action.yml's layout: top-level keys at column 0, `runs:` last, `steps:` at 2 spaces.

    scripts/action-as-workflow.py action.yml OUT.yml
"""
import re
import sys

src, out = sys.argv[1], sys.argv[2]
lines = open(src, encoding="utf-8").read().split("\n")

blocks, key = {}, None
for line in lines:
    m = re.match(r"^([a-z-]+):(.*)$", line)
    if m:
        key = m.group(1)
        blocks[key] = [line]
    elif key is not None:
        blocks[key].append(line)

def fail(msg):
    sys.exit(f"action-as-workflow: {src}: {msg}")

if list(blocks)[-1] != "runs":
    fail("`runs:` is not the last top-level key")
runs = blocks["runs"]
if "  using: composite" not in runs or "  steps:" not in runs:
    fail("not a composite action with `runs.steps`")
steps = runs[runs.index("  steps:") + 1:]
inputs = [m.group(1) for l in blocks.get("inputs", []) if (m := re.match(r"^  ([A-Za-z0-9_-]+):\s*$", l))]

text = [f"# generated from {src} by scripts/action-as-workflow.py, for actionlint only",
        "name: action", "on:", "  workflow_call:", "    inputs:"]
for name in inputs:
    text += [f"      {name}:", "        type: string", "        required: false"]
text += ["jobs:", "  action:", "    runs-on: ubuntu-latest", "    steps:"] + steps
open(out, "w", encoding="utf-8").write("\n".join(text))
