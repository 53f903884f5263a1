#!/usr/bin/env python3
"""Write a `git fast-import` stream: N commits on top of a config repo's main, as a busy
platform team makes them, and rampart's notes on them (as `serve` writes them).

    audit_history.py REPO N > stream    (then: git -C REPO fast-import < stream)

Each commit edits one tenant (a label, or its quota cpu within its tier: an update), made
by a member of one of the tenant's owner teams and approved (`Approved-by:`) by another
member; every 10th is made by someone in no team (policies deny it: the way-out search
runs); every 50th is a pull-request merge commit (`Merge pull request #N`) with the edit on
its second parent. Every commit that is not denied gets a note: applied to `dir:/srv/out`,
allowed, with its author and approver. Deterministic (seeded).
"""
import datetime
import json
import os
import random
import re
import sys

repo, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(16)
out = sys.stdout.buffer

teams = {}
for f in sorted(os.listdir(os.path.join(repo, "teams"))):
    text = open(os.path.join(repo, "teams", f)).read()
    name = re.search(r"(?m)^  name: (\S+)", text)
    members = re.search(r"(?m)^  members: \[(.*)\]", text)
    if name and members:
        teams[name.group(1)] = [m.strip() for m in members.group(1).split(",") if m.strip()]

tenants = []
for f in sorted(os.listdir(os.path.join(repo, "tenants"))):
    path = f"tenants/{f}"
    text = open(os.path.join(repo, path)).read()
    owners = re.search(r"(?m)^  owners: \[(.*)\]", text)
    if not owners or "cost-center:" not in text:
        continue
    members = [m for o in owners.group(1).split(",") for m in teams.get(o.strip(), [])]
    if len(members) >= 2:
        tenants.append([path, text, members])
if not tenants:
    sys.exit("no tenant with an owner team of two members and a cost-center label")


def data(b):
    out.write(b"data %d\n" % len(b))
    out.write(b)
    out.write(b"\n")


def ident(login, t):
    return f"{login} <{login}@users.noreply.github.com> {t} +0000".encode()


t0 = 1_780_000_000
notes = []
mark = 0
tip = None  # the mark of main's tip (None: the repository's main)
for i in range(n):
    t = t0 + i * 600
    tenant = rng.choice(tenants)
    path, text, members = tenant
    cc = rng.randrange(1000, 9999)
    text = re.sub(r"(?m)^(    cost-center: )\S+$", lambda m: f"{m.group(1)}cc-{cc}", text, count=1)
    tenant[1] = text
    denied = i % 10 == 9
    author = "drive-by-contributor" if denied else rng.choice(members)
    approver = rng.choice([m for m in members if m != author] or members)
    msg = f"{path.split('/')[1][:-5]}: cost center cc-{cc}\n\nApproved-by: {approver}\n"
    mark += 1
    edit = mark
    merge = i % 50 == 49
    ref = b"refs/heads/pr" if merge else b"refs/heads/main"
    out.write(b"commit " + ref + b"\nmark :%d\n" % edit)
    out.write(b"author " + ident(author, t) + b"\ncommitter " + ident(author, t) + b"\n")
    data(msg.encode())
    if i == 0 or merge:
        out.write(b"from " + (b"refs/heads/main^0" if tip is None else b":%d" % tip) + b"\n")
    out.write(b"M 100644 inline " + path.encode() + b"\n")
    data(text.encode())
    applied = edit
    login = author
    if merge:
        mark += 1
        applied = mark
        pr = 1000 + i
        out.write(b"commit refs/heads/main\nmark :%d\n" % mark)
        out.write(b"author " + ident(approver, t + 60) + b"\ncommitter " + ident(approver, t + 60) + b"\n")
        data(f"Merge pull request #{pr} from acme/{path}\n".encode())
        out.write(b"merge :%d\n" % edit)
        out.write(b"M 100644 inline " + path.encode() + b"\n")
        data(text.encode())
    tip = applied
    if not denied:
        notes.append((applied, {
            "rampart": 1,
            "applies": [{
                "target": "dir:/srv/out",
                "result": "applied",
                "decision": "allowed",
                "author": login.lower(),
                "approvers": [approver.lower()],
                "pullRequest": 1000 + i if merge else None,
                "changes": [{"action": "update", "subject": "Tenant", "name": path.split("/")[1][:-5], "allowed": True}],
                "appliedAs": "",
                "from": None,
                "rendered": None,
                "time": datetime.datetime.fromtimestamp(t + 120, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }],
        }))

out.write(b"commit refs/notes/rampart\n")
out.write(b"committer " + ident("rampart", t0 + n * 600) + b"\n")
data(b"rampart notes")
for m, note in notes:
    body = json.dumps(note).encode()
    out.write(b"N inline :%d\n" % m)
    data(body)
out.write(b"done\n")
