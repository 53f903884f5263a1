#!/usr/bin/env python3
"""The driver of bench/serve.sh (standard library only): pushes commits to the bare remote,
sends signed GitHub `push` webhooks to a running `rampart serve`, polls its status API and
reads its memory from /proc.

    serve_driver.py wait-first  STATE.json                 wait for the first apply (both targets)
    serve_driver.py latency     STATE.json N OUT.json     N one-tenant pushes, latency per target
    serve_driver.py reconciles  STATE.json N OUT.json [K] drive reconciles up to N (after the 100th a real
                                                          change every Kth), RSS at 100 and N
    serve_driver.py all-tenants STATE.json OUT.json       one rampart.yaml change, time and peak RSS
    serve_driver.py table       RESULTS_DIR               the markdown table of one run

STATE.json (written by serve.sh): {"pid", "port", "secret", "work" (a clone of the bare
remote), "remote", "kind" (example|corpus), "rampart" (the binary), "size"}.
"""

import hashlib
import hmac
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid

POLL = 0.005  # seconds between status polls


def load(path):
    with open(path) as f:
        return json.load(f)


class Serve:
    def __init__(self, st):
        self.st = st
        self.pid = st["pid"]
        self.port = st["port"]
        self.secret = st["secret"].encode()
        self.conn = None

    def _request(self, method, path, body=None, headers=None):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.05)

    def status(self):
        code, data = self._request("GET", "/api/v1/status")
        if code != 200:
            raise RuntimeError(f"status API answered {code}: {data[:200]!r}")
        return json.loads(data)

    def webhook(self, before, after, pusher):
        body = json.dumps({
            "ref": "refs/heads/main",
            "before": before,
            "after": after,
            "repository": {"full_name": "bench/config", "clone_url": "file://" + self.st["remote"]},
            "pusher": {"name": pusher, "email": f"{pusher}@users.example"},
            # a repeated body is refused as a replay (its digest is remembered): make each unique
            "bench_nonce": str(uuid.uuid4()),
        }).encode()
        sig = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        code, data = self._request("POST", "/webhook/github", body=body, headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sig,
        })
        if code != 202:
            raise RuntimeError(f"webhook answered {code}: {data[:200]!r}")

    def mem(self):
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])  # KiB
        return out

    def reset_peak(self):
        """Reset VmHWM to the current RSS (Linux ≥ 4.0: `5` into clear_refs)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except OSError:
            return False

    def wait_applied(self, commit, timeout, t0=None):
        """Poll until every target's `applied` is `commit`; seconds from t0 per target name."""
        t0 = time.perf_counter() if t0 is None else t0
        seen = {}
        deadline = time.perf_counter() + timeout
        while True:
            s = self.status()
            now = time.perf_counter()
            for t in s["targets"]:
                if t["name"] not in seen and t.get("applied") == commit:
                    seen[t["name"]] = now - t0
                if t.get("blocked") and t["blocked"].get("commit") == commit:
                    raise RuntimeError(f"{t['name']} blocked at {commit[:12]}: {json.dumps(t['blocked'])}")
            if len(s["targets"]) >= self.st.get("targets", 2) and len(seen) == len(s["targets"]):
                return seen, s
            if now > deadline:
                raise RuntimeError(f"not applied within {timeout} s: {json.dumps(s)[:2000]}")
            if not self.alive():
                raise RuntimeError("rampart serve exited")
            time.sleep(POLL)


def git(work, *args, env=None):
    e = dict(os.environ)
    e.update({"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"})
    if env:
        e.update(env)
    return subprocess.run(["git", "-C", work, *args], check=True, capture_output=True, text=True, env=e).stdout.strip()


def commit(work, paths, message, author, approver):
    env = {
        "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@users.example",
        "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author}@users.example",
    }
    git(work, "add", "--", *paths)
    git(work, "-c", "commit.gpgsign=false", "commit", "-q", "-m", message, "--trailer", f"Approved-by: {approver}", env=env)
    return git(work, "rev-parse", "HEAD")


# ---------------------------------------------------------------- the one-tenant changes

YAML_LIST = re.compile(r"^\s*\[(.*)\]\s*$")
PODS_MAX = {"free": 20, "team": 200, "enterprise": 5000}


def team_members(work):
    teams = {}
    for name in os.listdir(os.path.join(work, "teams")):
        text = open(os.path.join(work, "teams", name), encoding="utf-8").read()
        m = re.search(r"(?m)^  name: *(\S+)$", text)
        if not m:
            continue
        inline = re.search(r"(?m)^  members: *\[(.*)\]$", text)
        if inline:
            members = [x.strip().strip("\"'") for x in inline.group(1).split(",") if x.strip()]
        else:
            block = re.search(r"(?m)^  members:\n((?:    - .*\n)+)", text)
            members = [x.strip()[2:].strip().strip("\"'") for x in block.group(1).splitlines()] if block else []
        teams[m.group(1).strip("\"'")] = members
    return teams


class OneTenant:
    """Rotates through `count` tenants (team or free tier, not PCI, an owner team with at least
    two members); each change moves the tenant's spec.quota.pods by one, within its tier, and is
    made by a member of its first owner team and approved by another member."""

    def __init__(self, work, count=20):
        self.work = work
        teams = team_members(work)
        picks = []
        for name in sorted(os.listdir(os.path.join(work, "tenants"))):
            path = os.path.join(work, "tenants", name)
            text = open(path, encoding="utf-8").read()
            tier = re.search(r"(?m)^  tier: *(\S+)$", text)
            owners = re.search(r"(?m)^  owners: *\[(.*)\]$", text)
            if owners:
                owner_list = [x.strip() for x in owners.group(1).split(",")]
            else:
                block = re.search(r"(?m)^  owners:\n((?:    - .*\n)+)", text)
                owner_list = [x.strip()[2:].strip() for x in block.group(1).splitlines()] if block else []
            pods = re.search(r"(?m)^    pods: *(\d+)$", text)
            if not (tier and owner_list and pods) or tier.group(1) not in ("free", "team") or "pci" in text:
                continue
            members = teams.get(owner_list[0], [])
            if len(members) < 2:
                continue
            picks.append({"path": os.path.join("tenants", name), "tier": tier.group(1), "members": members})
            if len(picks) >= count:
                break
        if not picks:
            sys.exit("no tenant fits a one-tenant change")
        self.picks = picks
        self.n = 0

    def change(self):
        p = self.picks[self.n % len(self.picks)]
        self.n += 1
        full = os.path.join(self.work, p["path"])
        text = open(full, encoding="utf-8").read()
        m = re.search(r"(?m)^    pods: *(\d+)$", text)
        old = int(m.group(1))
        new = old - 1 if old > 2 and (old >= PODS_MAX[p["tier"]] or p.get("down", True)) else old + 1
        p["down"] = not p.get("down", True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text[: m.start(1)] + str(new) + text[m.end(1):])
        i = self.n % len(p["members"])
        author, approver = p["members"][i], p["members"][(i + 1) % len(p["members"])]
        return [p["path"]], f"{p['path']}: spec.quota.pods {old} -> {new}", author, approver


def push_and_wait(srv, work, change, timeout):
    """Commit a change, push it, send the webhook, wait for every target; the timings."""
    paths, msg, author, approver = change
    before = git(work, "rev-parse", "HEAD")
    after = commit(work, paths, msg, author, approver)
    t0 = time.perf_counter()
    git(work, "push", "-q", "origin", "HEAD:main")
    t_push = time.perf_counter() - t0
    srv.webhook(before, after, author)
    t_hook = time.perf_counter() - t0 - t_push
    seen, s = srv.wait_applied(after, timeout, t0)
    return {"commit": after, "push_s": t_push, "webhook_s": t_hook, "targets": seen, "reconciles": s["reconciles"]}


def rampart_check(st, label):
    """`rampart check` of HEAD~1..HEAD in the work clone: exit 0 (allowed) or stop."""
    r = subprocess.run([st["rampart"], "check", st["work"], "--base", "HEAD~1", "--head", "HEAD"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"rampart check of the {label} change exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    print(f"    rampart check ({label}): allowed", file=sys.stderr)


# ---------------------------------------------------------------- phases

def wait_first(st_path):
    st = load(st_path)
    srv = Serve(st)
    tip = git(st["work"], "rev-parse", "HEAD")
    # from the start of the service (serve.sh records it), not from this script's start
    t0 = time.perf_counter() - max(0.0, time.time() - st.get("started", time.time()))
    deadline = t0 + st.get("first_timeout", 3600)
    while True:
        try:
            srv.status()
            break
        except OSError:
            if time.perf_counter() > deadline or not srv.alive():
                sys.exit("rampart serve did not answer")
            time.sleep(0.05)
    seen, s = srv.wait_applied(tip, max(1, deadline - time.perf_counter()), t0)
    mem = srv.mem()
    out = {"commit": tip, "targets": seen, "mem_kib": mem}
    print(json.dumps(out))
    for name, secs in seen.items():
        print(f"    first apply: {name} at {secs:.1f} s (from serve's start)", file=sys.stderr)
    print(f"    RSS {mem['VmRSS'] // 1024} MiB, peak {mem['VmHWM'] // 1024} MiB", file=sys.stderr)


def latency(st_path, n, out_path):
    st = load(st_path)
    srv = Serve(st)
    gen = OneTenant(st["work"])
    runs = []
    for i in range(n):
        r = push_and_wait(srv, st["work"], gen.change(), 600)
        if i == 0:
            rampart_check(st, "one-tenant")
        runs.append(r)
        if (i + 1) % 10 == 0 or i + 1 == n:
            last = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["targets"].items())
            print(f"    push {i + 1}/{n}: {last}", file=sys.stderr)
    json.dump({"runs": runs, "mem_kib": srv.mem()}, open(out_path, "w"), indent=1)


def reconciles(st_path, n, out_path, real_every=1):
    """Drive the service to N reconciles, one at a time (each waited for); RSS every 50 and at
    100 and N. Up to the 100th every reconcile is a real one-tenant change; after it, every
    `real_every`-th is (the others: a webhook with nothing new, a reconcile that finds every
    target up to date)."""
    st = load(st_path)
    srv = Serve(st)
    gen = OneTenant(st["work"], count=200)
    samples = []
    done = srv.status()["reconciles"]
    t_start = time.perf_counter()
    marks = {100, n}
    real = idle = 0
    while done < n:
        if done < 100 or (done - 100) % real_every == 0:
            r = push_and_wait(srv, st["work"], gen.change(), 600)
            last_ms = {k: v * 1000 for k, v in r["targets"].items()}
            real += 1
        else:
            head = git(st["work"], "rev-parse", "HEAD")
            srv.webhook(head, head, "bench")
            last_ms = None
            idle += 1
        # the targets are applied before the reconcile's count goes up (notes are pushed after)
        while srv.status()["reconciles"] <= done:
            time.sleep(POLL)
        done = srv.status()["reconciles"]
        out_of_time = bool(st.get("deadline")) and time.time() > st["deadline"]
        if done % 50 == 0 or done in marks or done >= n or out_of_time:
            m = srv.mem()
            samples.append({"reconciles": done, "rss_kib": m["VmRSS"], "hwm_kib": m["VmHWM"],
                            "elapsed_s": time.perf_counter() - t_start, "real": real, "idle": idle,
                            "last_ms": last_ms})
            print(f"    reconcile {done}: RSS {m['VmRSS'] / 1024:.0f} MiB, peak {m['VmHWM'] / 1024:.0f} MiB, "
                  f"{real} real + {idle} idle driven, {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
        if out_of_time:
            print(f"    stopping at {done} reconciles: the time budget is spent", file=sys.stderr)
            break
    json.dump({"samples": samples, "target": n, "reached": done, "real": real, "idle": idle,
               "real_every": real_every, "seconds": time.perf_counter() - t_start}, open(out_path, "w"), indent=1)


def all_tenants(st_path, out_path):
    """One rampart.yaml change that reaches every tenant (the platform version: every tenant's
    portal image), by a `platform` member with another `platform` member's approval."""
    st = load(st_path)
    srv = Serve(st)
    work = st["work"]
    members = team_members(work).get("platform", [])
    if len(members) < 2:
        sys.exit("the corpus has no `platform` team with two members")
    path = os.path.join(work, "rampart.yaml")
    text = open(path, encoding="utf-8").read()
    m = re.search(r"(?m)^    version: *\"?(\d+)\.(\d+)\.(\d+)\"?$", text)
    if not m:
        sys.exit("rampart.yaml: no spec.platform.version")
    old = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    new = f"{m.group(1)}.{m.group(2)}.{int(m.group(3)) + 1}"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[: m.start()] + f'    version: "{new}"' + text[m.end():])
    change = (["rampart.yaml"], f"rampart.yaml: platform version {old} -> {new}", members[0], members[1])
    before_mem = srv.mem()
    reset = srv.reset_peak()
    r = push_and_wait(srv, work, change, 3600)
    rampart_check(st, "all-tenant")
    after_mem = srv.mem()
    r.update({"before_kib": before_mem, "after_kib": after_mem, "peak_reset": reset, "what": change[1]})
    json.dump(r, open(out_path, "w"), indent=1)
    print("    " + ", ".join(f"{k} {v:.2f} s" for k, v in r["targets"].items())
          + f"; peak RSS {after_mem['VmHWM'] / 1024:.0f} MiB (reset before: {reset})", file=sys.stderr)


# ---------------------------------------------------------------- table

def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def table(results):
    meta = load(os.path.join(results, "meta.json"))
    size = meta["size"]
    lines = []
    lat = os.path.join(results, "latency.json")
    if os.path.exists(lat):
        runs = load(lat)["runs"]
        lines += [
            f"Push → applied, {size}, {len(runs)} one-tenant pushes (from the start of `git push` to the status "
            "API showing the commit; push and webhook included):",
            "",
            "| corpus | target | p50 (ms) | p99 (ms) | max (ms) | mean (ms) | target (M) |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        names = list(runs[0]["targets"])
        for name in names:
            xs = [r["targets"][name] * 1000 for r in runs]
            kind = name.split(":")[0]
            goal = {"dir": "p50 ≤ 300, p99 ≤ 1000", "branch": "(reported)"}.get(kind, "")
            if size == "M" and kind == "dir":
                ok = pct(xs, 50) <= 300 and pct(xs, 99) <= 1000
                goal += " ✅" if ok else " ❌"
            lines.append(f"| {size} | {kind} | {pct(xs, 50):.0f} | {pct(xs, 99):.0f} | {max(xs):.0f} | "
                         f"{statistics.mean(xs):.0f} | {goal} |")
        push = [r["push_s"] * 1000 for r in runs]
        hook = [r["webhook_s"] * 1000 for r in runs]
        lines += ["", f"Of that: `git push` p50 {pct(push, 50):.0f} ms (max {max(push):.0f}), webhook POST → 202 "
                  f"p50 {pct(hook, 50):.1f} ms (max {max(hook):.1f})."]
    first = os.path.join(results, "first.json")
    if os.path.exists(first):
        f = load(first)
        lines += ["", "First apply (whole tree, from the start of serve to the status API showing it): " + ", ".join(
            f"{k.split(':')[0]} {v:.1f} s" for k, v in f["targets"].items())
            + f"; RSS then {f['mem_kib']['VmRSS'] / 1024:.0f} MiB, peak so far {f['mem_kib']['VmHWM'] / 1024:.0f} MiB."]
    rec = os.path.join(results, "reconciles.json")
    if os.path.exists(rec):
        r = load(rec)
        s = r["samples"]
        at100 = next((x for x in s if x["reconciles"] >= 100), None)
        last = s[-1] if s else None
        driven = (f"{r.get('real', '?')} real one-tenant pushes and {r.get('idle', 0)} webhooks with nothing new "
                  f"(after the 100th, one real change every {r.get('real_every', 1)})") if r.get("idle") else "one-tenant pushes"
        lines += ["", f"Memory over reconciles ({size}; the 50 timed pushes, then {driven}, each waited for; "
                  f"reached {r['reached']} reconciles, {r['seconds']:.0f} s for this phase):", "",
                  "| corpus | after reconcile | VmRSS (MiB) | VmHWM (MiB) | target |", "|---|---:|---:|---:|---|"]
        for x in [at100, last] if at100 is not last else [last]:
            if x:
                lines.append(f"| {size} | {x['reconciles']} | {x['rss_kib'] / 1024:.0f} | {x['hwm_kib'] / 1024:.0f} | "
                             "≤ 300 MiB" + (" ✅" if x["rss_kib"] / 1024 <= 300 else " ❌") + " |")
        if at100 and last and last is not at100:
            g = (last["rss_kib"] - at100["rss_kib"]) / 1024
            lines.append(f"| {size} | growth {at100['reconciles']} → {last['reconciles']} | {g:+.1f} | | no growth |")
        later = [x for x in s if x["reconciles"] >= 100]
        if len(later) > 2:
            lines.append(f"\nVmRSS sampled every 50 reconciles from the 100th to the {later[-1]['reconciles']}th: "
                         + ", ".join(f"{x['rss_kib'] / 1024:.0f}" for x in later) + " MiB (min "
                         f"{min(x['rss_kib'] for x in later) / 1024:.0f}, max {max(x['rss_kib'] for x in later) / 1024:.0f}; "
                         "a sample follows a real change or an idle reconcile, whichever came last).")
        if r["reached"] < r["target"]:
            lines.append(f"\nStopped at {r['reached']} of {r['target']} reconciles (time budget).")
    allt = os.path.join(results, "all-tenants.json")
    if os.path.exists(allt):
        a = load(allt)
        peak = a["after_kib"]["VmHWM"] / 1024
        lines += ["", f"All-tenant change ({a['what']}), {size}: " + ", ".join(
            f"{k.split(':')[0]} applied after {v:.2f} s" for k, v in a["targets"].items())
            + f"; serve's peak RSS during it {peak:.0f} MiB"
            + (" (VmHWM reset just before)" if a["peak_reset"] else " (VmHWM over the process's life)")
            + f", RSS after {a['after_kib']['VmRSS'] / 1024:.0f} MiB"
            + ("; target ≤ 300 MiB " + ("✅" if peak <= 300 else "❌") if size == "M" else "") + "."]
    return "\n".join(lines)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "wait-first" and len(sys.argv) == 3:
        wait_first(sys.argv[2])
    elif cmd == "latency" and len(sys.argv) == 5:
        latency(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif cmd == "reconciles" and len(sys.argv) in (5, 6):
        reconciles(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]) if len(sys.argv) == 6 else 1)
    elif cmd == "all-tenants" and len(sys.argv) == 4:
        all_tenants(sys.argv[2], sys.argv[3])
    elif cmd == "table" and len(sys.argv) == 3:
        print(table(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
