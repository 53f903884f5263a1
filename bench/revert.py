#!/usr/bin/env python3
"""SLO violation → revert latency of `rampart serve`, against the real Prometheus.

Driven by bench/revert.sh. An exporter in this process serves `http_requests_total{code}`
whose error ratio the driver sets; Debian's Prometheus scrapes it every second; `rampart
serve` runs on a bare remote of the example with a dir target. Each run: (1) push the
rollout (an SLO `error-ratio <= 0.1 for FOR`, analysis every INTERVAL), wait until it is
applied and a check passed; (2) at t0 set the error ratio to 50 %; (3) time until the
revert commit is on the remote, and until the target holds it (GET /api/v1/status); (4) set
the errors back to 0 and clear the circuit breaker (a platform member's
`Rampart-Clear-Breaker: techdocs` commit) for the next run. Then two fault phases count
false reverts: no traffic at all (0/0 = NaN, fewer requests than minRequests) and Prometheus
stopped, each for FAULT_S seconds. Writes JSON to stdout.
"""

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ["RAMPART_BIN"]
RUNS = int(os.environ.get("RUNS", "10"))
FOR = os.environ.get("FOR", "5s")
INTERVAL = os.environ.get("INTERVAL", "1s")
FAULT_S = float(os.environ.get("FAULT_S", "20"))
ALICE = ("Alice", "alice@example.com")
ROLLOUT = "rollouts/techdocs-1-13-0.yaml"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """Counters that grow with wall time at `rps`, `error` of them with code 500."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rps, self.error, self.ok, self.bad, self.since = 100.0, 0.0, 0.0, 0.0, time.time()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def advance(self):
        now = time.time()
        n = self.rps * (now - self.since)
        self.bad += n * self.error
        self.ok += n * (1 - self.error)
        self.since = now

    def set(self, rps, error):
        with self.lock:
            self.advance()
            self.rps, self.error = rps, error

    def render(self):
        with self.lock:
            self.advance()
            return (
                "# TYPE http_requests_total counter\n"
                f'http_requests_total{{code="200"}} {self.ok}\n'
                f'http_requests_total{{code="500"}} {self.bad}\n'
            )


def git(cwd, *args, author=ALICE, capture=True):
    env = dict(os.environ, GIT_AUTHOR_NAME=author[0], GIT_AUTHOR_EMAIL=author[1],
               GIT_COMMITTER_NAME=author[0], GIT_COMMITTER_EMAIL=author[1])
    r = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=capture, text=True)
    return r.stdout.strip() if capture else ""


def rollout_text():
    with open(os.path.join(ROOT, "examples/platform-config", ROLLOUT)) as f:
        original = f.read()
    head = original[: original.index("  strategy:")]
    return head + f"""  strategy: canary
  steps:
    - weight: 25
      pause: 1h
    - weight: 100
  slos:
    - name: error-ratio
      query: sum(rate(http_requests_total{{code="500"}}[3s])) / sum(rate(http_requests_total[3s]))
      requests: sum(increase(http_requests_total[3s]))
      minRequests: 5
      max: 0.1
      for: {FOR}
  analysis:
    interval: {INTERVAL}
    inconclusiveLimit: 1000
  onViolation: revert
"""


def status(addr):
    with urllib.request.urlopen(f"http://{addr}/api/v1/status", timeout=5) as r:
        return json.load(r)


def target(addr):
    return status(addr)["targets"][0]


def wait(what, cond, timeout=120, every=0.02):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def main():
    tmp = tempfile.mkdtemp(prefix="rampart-revert-")
    exporter = Exporter()
    # Prometheus, scraping the exporter every second
    prom_port = free_port()
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: ['127.0.0.1:{exporter.port}']\n"
        )

    def start_prometheus():
        return subprocess.Popen(
            ["/usr/bin/prometheus", f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/prom",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "a"))

    prom = start_prometheus()
    wait("prometheus", lambda: _ready(f"127.0.0.1:{prom_port}"), 30, 0.2)
    # the config repo: the example without its rollouts, and a bare remote
    work = os.path.join(tmp, "work")
    shutil.copytree(os.path.join(ROOT, "examples/platform-config"), work)
    shutil.rmtree(os.path.join(work, "rollouts"))
    os.makedirs(os.path.join(work, "rollouts"))
    open(os.path.join(work, "rollouts/.keep"), "w").close()
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "import")
    remote = os.path.join(tmp, "remote.git")
    git(tmp, "clone", "-q", "--bare", work, remote)
    git(work, "remote", "add", "origin", remote)
    addr = f"127.0.0.1:{free_port()}"
    log = open(os.path.join(tmp, "serve.log"), "w")
    serve = subprocess.Popen(
        [BIN, "serve", "--repo", remote, "--state-dir", os.path.join(tmp, "state"), "--target", f"dir:{tmp}/out",
         "--interval", "1s", "--listen", addr, "--log-format", "json", "--prometheus", f"http://127.0.0.1:{prom_port}"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)
    runs = []
    try:
        wait("serve", lambda: _ok(addr), 30, 0.1)
        tip = git(work, "rev-parse", "HEAD")
        wait("the first apply", lambda: target(addr).get("applied") == tip)

        def push(message, change=None):
            git(work, "pull", "-q", "--ff-only", "origin", "main")
            if change:
                change()
            git(work, "add", "-A")
            git(work, "commit", "-q", "--allow-empty", "-m", message)
            git(work, "push", "-q", "origin", "HEAD:main")
            return git(work, "rev-parse", "HEAD")

        def add():
            with open(os.path.join(work, ROLLOUT), "w") as f:
                f.write(rollout_text())

        for i in range(RUNS):
            exporter.set(100.0, 0.0)
            if i > 0:
                clear = push("clear techdocs' circuit breaker\n\nRampart-Clear-Breaker: techdocs")
                wait("the clearing commit applied", lambda: target(addr).get("applied") == clear)
            added = push(f"roll techdocs 1.13.0 out (run {i + 1})", add)
            wait("the rollout applied", lambda: target(addr).get("applied") == added)

            def passed():
                for r in target(addr).get("rollouts", []):
                    if r.get("introducedBy") == added and any(c["verdict"] == "pass" for c in r.get("checks", [])):
                        return True
                return False

            wait("a passing check", passed)
            t0 = time.time()
            exporter.set(100.0, 0.5)
            revert = wait("the revert on the remote", lambda: _revert_of(remote, added), 120, 0.02)
            t_commit = time.time() - t0
            wait("the revert applied", lambda: target(addr).get("applied") == revert, 120, 0.02)
            t_applied = time.time() - t0
            runs.append({"run": i + 1, "commit_s": round(t_commit, 3), "applied_s": round(t_applied, 3)})
            print(f"run {i + 1}: revert on the remote {t_commit:.2f} s, applied {t_applied:.2f} s", file=sys.stderr)
            exporter.set(100.0, 0.0)
            time.sleep(4)  # (the errors leave the 3 s rate window)
        reverts_before = _count_reverts(remote)
        # fault phases: no revert may come of them
        faults = []
        for name in ("no traffic (NaN, < minRequests)", "Prometheus stopped"):
            exporter.set(100.0, 0.0)
            clear = push("clear techdocs' circuit breaker\n\nRampart-Clear-Breaker: techdocs")
            wait("the clearing commit applied", lambda: target(addr).get("applied") == clear)
            added = push(f"roll techdocs 1.13.0 out ({name})", add)
            wait("the rollout applied", lambda: target(addr).get("applied") == added)
            if name.startswith("no traffic"):
                exporter.set(0.0, 0.0)
            else:
                exporter.set(100.0, 0.9)  # (would fail, if anyone could see it)
                prom.kill()
                prom.wait()
            time.sleep(FAULT_S)
            checks = [c for r in target(addr).get("rollouts", []) if r.get("introducedBy") == added
                      for c in r.get("checks", [])]
            faults.append({
                "fault": name,
                "seconds": FAULT_S,
                "reverts": _count_reverts(remote) - reverts_before,
                "inconclusive": sum(1 for c in checks if c["verdict"] == "inconclusive"),
            })
            if not name.startswith("no traffic"):
                prom = start_prometheus()
                wait("prometheus", lambda: _ready(f"127.0.0.1:{prom_port}"), 30, 0.2)
            # (remove the rollout by hand for the next phase)
            exporter.set(100.0, 0.0)
            rollout_file = os.path.join(work, ROLLOUT)
            push("remove the rollout", lambda: os.path.exists(rollout_file) and os.remove(rollout_file))
            reverts_before = _count_reverts(remote)
        json.dump({"for": FOR, "interval": INTERVAL, "runs": runs, "faults": faults}, sys.stdout, indent=2)
    finally:
        serve.kill()
        prom.kill()
        if os.environ.get("KEEP"):
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _ready(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/-/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _ok(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _revert_of(remote, commit):
    msg = subprocess.run(["git", "--git-dir", remote, "log", "-1", "--format=%H%n%B", "main"],
                         capture_output=True, text=True).stdout
    sha, _, body = msg.partition("\n")
    return sha if f"Rampart-Revert-Of: {commit}" in body else None


def _count_reverts(remote):
    out = subprocess.run(["git", "--git-dir", remote, "log", "--format=%B%x00", "main"],
                         capture_output=True, text=True).stdout
    return sum(1 for m in out.split("\0") if "Rampart-Revert-Of:" in m)


if __name__ == "__main__":
    main()
