#!/usr/bin/env python3
"""Helpers for bench/kube.sh (rampart's Kubernetes target against a test kube-apiserver).

    kube_bench.py scrape SERVER_DIR OUT        save the API server's apiserver_request_total
    kube_bench.py delta BEFORE AFTER           the requests between two scrapes, as JSON
    kube_bench.py change-commit REPO EPOCH [MESSAGE]
                                               commit the work tree's one-tenant edit as a member
                                               of the tenant's owner team, approved by another;
                                               prints the commit id
    kube_bench.py service-cidr SERVER_DIR SERVICES CIDR
                                               add ServiceCIDR CIDR if the server's Service
                                               ranges cannot hold SERVICES ClusterIPs
    kube_bench.py server-cpu SERVER_DIR        CPU seconds used so far by its API server and etcd
    kube_bench.py concat COMPILED OUT          the kustomization's objects in one YAML file
    kube_bench.py record TOOL STEP LABEL RC T0_NS T1_NS BASE OBJECTS CPU0 CPU1 LOAD
                                               one step's JSON line (from BASE.out, BASE.rss,
                                               BASE.requests.json); a summary line on stderr
    kube_bench.py table RESULTS                the markdown table and the verdicts
    kube_bench.py details RESULTS              per step: requests by verb, peak RSS

SERVER_DIR is a directory made by `scripts/kube-test-server start` (url, ca.crt, admin.token).
"""
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request

READS = {"GET", "LIST", "WATCH"}
WRITES = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "CREATE", "UPDATE"}
# Requests the API server makes to itself, whoever the client is: its identity lease renewed
# every 10 s (leases), the IPAddress object of each Service's ClusterIP (ipaddresses, made by
# the ClusterIP allocator through the loopback client), the events it posts about them. They
# are counted apart, not as the tool's.
INTERNAL = {("coordination.k8s.io", "leases"), ("networking.k8s.io", "ipaddresses"),
            ("events.k8s.io", "events"), ("", "events")}
# Verbs of the API server's own background work: WATCH (its informers re-open their watches
# every 5-10 minutes; neither rampart nor `kubectl apply` watches), LIST services (the ClusterIP
# and NodePort repair loops, every 3 minutes; neither tool lists Services)
INTERNAL_VERBS = {("WATCH", None), ("LIST", ("", "services"))}


def is_internal(verb, group, resource):
    if (group, resource) in INTERNAL:
        return True
    return any(v == verb and (what is None or what == (group, resource)) for v, what in INTERNAL_VERBS)
METRIC = re.compile(r'^apiserver_request_total\{(.*)\} ([0-9.e+]+)$')
# Every request that API Priority and Fairness let through (by flow schema); the only count that
# includes the discovery GETs apiserver_request_total leaves out (see delta)
DISPATCHED = re.compile(r'^apiserver_flowcontrol_dispatched_requests_total\{.*\} ([0-9.e+]+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def call(server, path, body=None):
    url = open(os.path.join(server, "url")).read().strip() + path
    token = open(os.path.join(server, "admin.token")).read().strip()
    ctx = ssl.create_default_context(cafile=os.path.join(server, "ca.crt"))
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        return r.read().decode()


def service_cidr(server, services, cidr):
    """Add a ServiceCIDR `cidr` when the server's ranges cannot hold `services` ClusterIPs
    (with room to spare); prints what it did."""
    import ipaddress
    have = json.loads(call(server, "/apis/networking.k8s.io/v1/servicecidrs"))["items"]
    cidrs = [c for item in have for c in item["spec"]["cidrs"] if ":" not in c]
    room = sum(ipaddress.ip_network(c).num_addresses - 2 for c in cidrs)
    if room >= int(services) + 256:
        print(f"    Service range {', '.join(cidrs)}: room for {room:,} ClusterIPs", file=sys.stderr)
        return
    # a ServiceCIDR without status conditions counts as ready (cidrallocator.go isReady: "assume
    # the ServiceCIDR is Ready, in order to handle scenarios where kcm is not running")
    call(server, "/apis/networking.k8s.io/v1/servicecidrs", {
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": "bench-services"}, "spec": {"cidrs": [cidr]}})
    print(f"    Service range {', '.join(cidrs)}: room for {room:,} ClusterIPs only; added ServiceCIDR {cidr}",
          file=sys.stderr)


def scrape(server, out):
    text = call(server, "/metrics")
    lines = [l for l in text.splitlines()
             if l.startswith("apiserver_request_total{") or l.startswith("apiserver_flowcontrol_dispatched_requests_total{")]
    if not any(l.startswith("apiserver_request_total{") for l in lines):
        sys.exit("the API server's /metrics has no apiserver_request_total")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def load(path):
    d = {}
    for line in open(path):
        m = DISPATCHED.match(line.strip())
        if m:
            d["dispatched"] = d.get("dispatched", 0) + float(m.group(1))
            continue
        m = METRIC.match(line.strip())
        if m:
            labels = dict(LABEL.findall(m.group(1)))
            key = (labels.get("verb", ""), labels.get("group", ""), labels.get("resource", ""),
                   labels.get("subresource", ""), labels.get("code", ""), labels.get("dry_run", ""))
            d[key] = d.get(key, 0) + float(m.group(2))
    return d


def delta(before, after):
    a, b = load(before), load(after)
    dispatched = int(round(b.pop("dispatched", 0) - a.pop("dispatched", 0)))
    rows = []
    for k in sorted(set(a) | set(b)):
        n = int(round(b.get(k, 0) - a.get(k, 0)))
        if n:
            rows.append((k, n))
    out = {"reads": 0, "writes": 0, "other": 0, "internal": 0, "errors": 0, "verbs": {}, "rows": [],
           "dispatched": dispatched, "uncounted": 0}
    for (verb, group, resource, sub, code, dry), n in rows:
        internal = is_internal(verb, group, resource)
        what = resource or sub
        out["rows"].append({"verb": verb, "group": group, "resource": what, "subresource": sub if resource else "",
                            "code": code, "dry_run": dry, "n": n, "internal": internal})
        if internal:
            out["internal"] += n
            continue
        if verb in READS:
            out["reads"] += n
        elif verb in WRITES:
            out["writes"] += n
        else:
            out["other"] += n
        out["verbs"][verb] = out["verbs"].get(verb, 0) + n
        if not code.startswith("2"):
            out["errors"] += n
    # apiserver_request_total does not count the legacy discovery GETs (/api, /api/v1,
    # /apis/GROUP/VERSION; only the aggregated /api and /apis are), nor /version and /metrics.
    # The flow-control count has every request; what it has beyond apiserver_request_total
    # (all of it, internal too), less the closing /metrics scrape itself, were such GETs: reads.
    if dispatched:
        out["uncounted"] = max(0, dispatched - 1 - sum(n for _, n in rows))
        out["reads"] += out["uncounted"]
        if out["uncounted"]:
            out["verbs"]["GET (discovery)"] = out["uncounted"]
    return out


# ---------------------------------------------------------------- the one-tenant commit

def git(repo, *args, env=None):
    e = dict(os.environ)
    e.update({"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"})
    e.update(env or {})
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True, env=e).stdout.strip()


def yaml_list(text, key, indent):
    """`key: [a, b]` or a block list under `key:` at `indent` spaces."""
    pad = " " * indent
    m = re.search(rf"(?m)^{pad}{key}: *\[(.*)\]$", text)
    if m:
        return [x.strip().strip("\"'") for x in m.group(1).split(",") if x.strip()]
    m = re.search(rf"(?m)^{pad}{key}:\n((?:{pad}  - .*\n)+)", text)
    return [x.strip()[2:].strip().strip("\"'") for x in m.group(1).splitlines()] if m else []


def change_commit(repo, epoch, message=None):
    changed = [p for p in git(repo, "diff", "--name-only").splitlines() if p]
    if len(changed) != 1 or not changed[0].startswith("tenants/"):
        sys.exit(f"expected one changed tenant file, found {changed}")
    text = open(os.path.join(repo, changed[0]), encoding="utf-8").read()
    owners = yaml_list(text, "owners", 2)
    teams = {}
    for name in os.listdir(os.path.join(repo, "teams")):
        t = open(os.path.join(repo, "teams", name), encoding="utf-8").read()
        m = re.search(r"(?m)^  name: *(\S+)$", t)
        if m:
            teams[m.group(1).strip("\"'")] = yaml_list(t, "members", 2)
    # a member of an owner team, approved by another member of it (else the platform team's)
    for team in owners + ["platform"]:
        members = teams.get(team, [])
        if len(members) >= 2:
            author, approver = members[0], members[1]
            break
    else:
        sys.exit(f"{changed[0]}: no owner team (nor `platform`) has two members")
    if not message:
        diff = git(repo, "diff", "-U0").splitlines()
        message = changed[0] + ": " + next((l[1:].strip() for l in diff if l.startswith("+") and not l.startswith("+++")), "")
    env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@users.example",
           "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author}@users.example",
           "GIT_AUTHOR_DATE": f"@{epoch} +0000", "GIT_COMMITTER_DATE": f"@{epoch} +0000"}
    git(repo, "add", "--", changed[0])
    git(repo, "-c", "commit.gpgsign=false", "commit", "-q", "-m", message,
        "--trailer", f"Approved-by: {approver}", env=env)
    print(git(repo, "rev-parse", "HEAD"))
    print(f"    change: {message} (author {author}, Approved-by: {approver})", file=sys.stderr)


def server_cpu(server):
    """CPU seconds (user + system) the API server and etcd of SERVER_DIR have used."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for name in ("apiserver.pid", "etcd.pid"):
        pid = open(os.path.join(server, name)).read().strip()
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    print(f"{total / tick:.2f}")


def concat(compiled, out):
    """The objects a kustomization.yaml lists, in its order, as one multi-document YAML file."""
    with open(os.path.join(compiled, "kustomization.yaml")) as f:
        paths = [l[2:].strip() for l in f if l.startswith("- ")]
    with open(out, "w") as o:
        for p in paths:
            o.write("---\n")
            o.write(open(os.path.join(compiled, p)).read())


# ---------------------------------------------------------------- a step's record

def record(tool, name, label, rc, t0, t1, base, desired, c0, c1, load):
    out = open(base + ".out", errors="replace").read()
    req = json.load(open(base + ".requests.json"))
    s = {"tool": tool, "step": name, "label": label, "rc": int(rc), "ok": rc == "0",
         "wall": (int(t1) - int(t0)) / 1e9, "requests": req, "phase": None, "noop": False,
         "server_cpu": float(c1) - float(c0), "load": float(load)}
    if os.path.exists(base + ".rss"):
        try:
            rss, user, system = open(base + ".rss").read().splitlines()[-1].split()
            s["rss_mib"] = int(rss) / 1024
            s["cpu"] = float(user) + float(system)
        except ValueError:
            pass
    if tool == "rampart":
        # applied at COMMIT to kubernetes:CTX: N objects applied, M pruned (X s)
        m = re.search(r"(\d+) objects applied, (\d+) pruned \(([\d.]+) s\)", out)
        s["objects"] = int(m.group(1)) if m else 0
        s["pruned"] = int(m.group(2)) if m else 0
        s["phase"] = float(m.group(3)) if m else None
        s["noop"] = out.startswith("no changes:")
    else:
        s["objects"] = len(re.findall(r"(?m) serverside-applied$", out))
        if s["ok"] and s["objects"] != int(desired):
            s["note"] = f"kubectl applied {s['objects']} of {desired} objects"
    print(json.dumps(s))
    phase = "" if s["phase"] is None else f", apply phase {s['phase']:.3f} s"
    print(f"    exit {rc}, {s['wall']:.3f} s{phase}, {s['objects']} objects applied, {req['reads']} reads, "
          f"{req['writes']} writes ({req['errors']} not 2xx; {req['internal']} server-internal left out)", file=sys.stderr)


# ---------------------------------------------------------------- the table

TARGETS = {
    "first": "first apply: objects/s ≥ 2× kubectl's first apply",
    "noop": "no-op re-apply: ≤ 1 s and 0 writes",
    "change": "one-tenant change: ≤ 300 ms",
}


def fnum(x, digits=2):
    return "—" if x is None else f"{x:,.{digits}f}"


def steps_of(results):
    return [json.loads(l) for l in open(os.path.join(results, "steps.jsonl"))]


def table(results):
    steps = steps_of(results)
    by = {(s["tool"], s["step"]): s for s in steps}
    print("| tool | step | wall s | apply phase s | objects | objects/s | reads | writes | tool CPU s | server CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in steps:
        r = s["requests"]
        rate = s["objects"] / s["wall"] if s["wall"] > 0 and s["objects"] else None
        print(f"| {s['tool']} | {s['label']} | {s['wall']:.3f} | {fnum(s.get('phase'), 3)} | {s['objects']:,} "
              f"| {fnum(rate, 0)} | {r['reads']:,} | {r['writes']:,} | {fnum(s.get('cpu'), 2)} "
              f"| {fnum(s.get('server_cpu'), 2)} |")
    print()
    verdicts = []
    rf = by.get(("rampart", "first"))
    if rf:
        rr = rf["objects"] / rf["wall"]
        peers = [(t, by[(t, "first")]) for t in ("kubectl -k", "kubectl -f") if (t, "first") in by]
        for tool, k in peers:
            kr = k["objects"] / k["wall"]
            ok = rf["ok"] and k["ok"] and rr >= 2 * kr
            verdicts.append((ok, f"{TARGETS['first']} (`{tool}`): rampart {rr:,.0f} objects/s, {tool} "
                                 f"{kr:,.0f} objects/s = {rr / kr:.2f}×"))
        if not peers:
            verdicts.append((None, f"{TARGETS['first']}: rampart {rr:,.0f} objects/s; kubectl not run"))
    n = by.get(("rampart", "noop"))
    if n:
        ok = n["ok"] and n["wall"] <= 1.0 and n["requests"]["writes"] == 0
        verdicts.append((ok, f"{TARGETS['noop']}: {n['wall']:.3f} s, {n['requests']['writes']} writes"
                             f"{'' if n['noop'] else ' (rampart did not say no changes)'}"))
    c = by.get(("rampart", "change"))
    if c:
        phase = c.get("phase")
        ok_phase = c["ok"] and phase is not None and phase <= 0.300
        ok_wall = c["ok"] and c["wall"] <= 0.300
        verdicts.append((ok_phase, f"{TARGETS['change']}, apply phase (rampart's own \"applied … (X s)\"): "
                                   f"{fnum(phase, 3)} s"))
        verdicts.append((ok_wall, f"{TARGETS['change']}, whole command (wall): {c['wall']:.3f} s"))
    for ok, text in verdicts:
        mark = "➖ n/a" if ok is None else ("✅ met" if ok else "❌ missed")
        print(f"- {mark}: {text}")
    failed = [s for s in steps if not s["ok"]]
    if failed:
        print()
        for s in failed:
            print(f"- ❌ {s['tool']} {s['label']} exited {s['rc']}")


def details(results):
    for s in steps_of(results):
        v = s["requests"]["verbs"]
        verbs = ", ".join(f"{k} {n:,}" for k, n in sorted(v.items(), key=lambda kv: -kv[1])) or "no requests"
        err = s["requests"]["errors"]
        rss = f"; peak RSS {s['rss_mib']:.0f} MiB" if "rss_mib" in s else ""
        note = f"; {s['note']}" if "note" in s else ""
        print(f"- {s['tool']} {s['step']}: {verbs}{f' ({err} answered non-2xx)' if err else ''}; "
              f"{s['requests']['internal']:,} server-internal left out{rss}; load average {s.get('load', 0):.2f} "
              f"at the start{note}.")


def main():
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "scrape" and len(args) == 2:
        scrape(*args)
    elif cmd == "delta" and len(args) == 2:
        print(json.dumps(delta(*args)))
    elif cmd == "change-commit" and len(args) in (2, 3):
        change_commit(args[0], int(args[1]), *args[2:])
    elif cmd == "service-cidr" and len(args) == 3:
        service_cidr(*args)
    elif cmd == "server-cpu" and len(args) == 1:
        server_cpu(args[0])
    elif cmd == "concat" and len(args) == 2:
        concat(*args)
    elif cmd == "record" and len(args) == 11:
        record(*args)
    elif cmd == "table" and len(args) == 1:
        table(args[0])
    elif cmd == "details" and len(args) == 1:
        details(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
