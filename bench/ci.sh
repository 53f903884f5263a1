#!/usr/bin/env bash
# `rampart ci` end to end on a one-tenant pull request against the M corpus, with a local
# GitHub API: wall time (hyperfine) and the API calls made, against the targets (<= 1 s,
# <= 6 calls on a PR without a previous comment).
#
#   bench/ci.sh            needs bench/.corpus/M-valid (bench/compile.sh M makes it) and
#                          .ci/npm/{github-openapi,webhooks-examples}.json (scripts/test fetches them)
#
# The API is a small Python server answering with the examples of GitHub's OpenAPI description
# (no previous comment, no reviews), logging each request. Cases: `warm` keeps the parse cache
# in the repo's .git between runs (a runner that caches .git/rampart), `cold` removes it before
# each run (a fresh clone: every blob parsed once).
#
# Environment: RAMPART_BIN (default target/release/rampart, built if missing), RUNS (10).
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
BIN="${RAMPART_BIN:-$ROOT/target/release/rampart}"
RUNS="${RUNS:-10}"
REPO="$BENCH/.corpus/M-valid"
die() { printf 'ci.sh: %s\n' "$*" >&2; exit 1; }
[ -d "$REPO/.git" ] || die "$REPO missing: run bench/compile.sh M first"
for f in github-openapi webhooks-examples; do
    [ -s "$ROOT/.ci/npm/$f.json" ] || die ".ci/npm/$f.json missing: run scripts/test once"
done
command -v hyperfine >/dev/null || die "hyperfine not found"
if [ -z "${RAMPART_BIN:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); fi

WORK="$(mktemp -d /tmp/cibench.XXXXXX)"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
A=$(git -C "$REPO" rev-parse 'A^{commit}')
B=$(git -C "$REPO" rev-parse 'B^{commit}')

# the pull_request event: GitHub's own "opened" example, pointed at A..B
python3 - "$ROOT/.ci/npm/webhooks-examples.json" "$A" "$B" > "$WORK/event.json" <<'PY'
import json, sys
examples = json.load(open(sys.argv[1]))
e = next(x for x in next(e for e in examples if e["name"] == "pull_request")["examples"] if x["action"] == "opened")
e["number"] = e["pull_request"]["number"] = 42
e["pull_request"]["user"]["login"] = "rampart-bench"
e["pull_request"]["base"]["sha"], e["pull_request"]["head"]["sha"] = sys.argv[2], sys.argv[3]
print(json.dumps(e))
PY

# the API
cat > "$WORK/api.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
spec = json.load(open(sys.argv[1]))["components"]["examples"]
log = open(sys.argv[2], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def handle_one(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        path = self.path.split("?")[0]
        log.write(f"{self.command} {path}\n")
        if self.command == "GET" and path.endswith("/reviews"): return self.reply(200, [])
        if self.command == "GET" and path.endswith("/comments"): return self.reply(200, [])
        if self.command == "POST" and path.endswith("/comments"): return self.reply(201, spec["issue-comment"]["value"])
        if path.endswith("/check-runs"): return self.reply(201, spec["check-run"]["value"])
        if "/check-runs/" in path: return self.reply(200, spec["check-run"]["value"])
        self.reply(404, {"message": "Not Found"})
    do_GET = do_POST = do_PATCH = handle_one
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
: > "$WORK/calls.log"
coproc API { python3 "$WORK/api.py" "$ROOT/.ci/npm/github-openapi.json" "$WORK/calls.log"; }
SERVER=$API_PID
read -r PORT <&"${API[0]}"

cat > "$WORK/env.sh" <<EOF2
export GITHUB_EVENT_NAME=pull_request GITHUB_EVENT_PATH=$WORK/event.json GITHUB_REPOSITORY=bench/platform-config
export GITHUB_API_URL=http://127.0.0.1:$PORT GITHUB_TOKEN=ghs_benchtoken GITHUB_WORKSPACE=$REPO RUNNER_TEMP=$WORK
export GITHUB_STEP_SUMMARY=$WORK/summary.md GITHUB_OUTPUT=$WORK/outputs
EOF2
CMD=". $WORK/env.sh && $BIN ci --fail-on never > /dev/null"

# one probe run: calls per run
: > "$WORK/calls.log"; sh -c "$CMD"; PROBE_CALLS=$(wc -l < "$WORK/calls.log")
sed 's/^/    /' "$WORK/calls.log" >&2
hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$WORK/warm.json" --command-name "ci (parse cache warm)" "$CMD" >&2
hyperfine --style basic --warmup 1 --runs "$RUNS" --prepare "rm -rf $REPO/.git/rampart" --export-json "$WORK/cold.json" --command-name "ci (no parse cache)" "$CMD" >&2
python3 - "$WORK" "$PROBE_CALLS" <<'PY'
import json, sys
work, calls = sys.argv[1], int(sys.argv[2])
print("| case | wall mean ± σ | API calls | target | met? |")
print("|---|---:|---:|---|---|")
for case in ("warm", "cold"):
    h = json.load(open(f"{work}/{case}.json"))["results"][0]
    ok = h["mean"] <= 1.0 and calls <= 6
    print(f"| {h['command']} | {h['mean']*1000:.0f} ± {h['stddev']*1000:.0f} ms | {calls} | ≤ 1 s, ≤ 6 calls | {'✅' if ok else '❌'} |")
PY
