#!/usr/bin/env bash
# SLO violation → revert latency of `rampart serve`, against the real Prometheus (Debian's
# `prometheus`, scraping an exporter whose error ratio the driver flips). A benchmark, not a test.
#
#   bench/revert.sh
#
# Each of RUNS runs (default 10): push a rollout (SLO `error-ratio <= 0.1` for FOR, default 5s,
# measured every INTERVAL, default 1s), wait until it is applied and a check passed, set the
# exporter's error ratio to 50 % (t0), then time until the revert commit is on the bare remote
# and until the dir target holds it (status API). The target is ≤ FOR + INTERVAL + 1 s. Then two
# fault phases of FAULT_S seconds (default 20) count false reverts: no traffic at all, and
# Prometheus stopped while the errors are high. bench/revert.py is the driver.
#
# Environment:
#   RAMPART_BIN=...   use this binary (default: cargo build --release into CARGO_TARGET_DIR,
#                     default ROOT/target)
#   RUNS, FOR, INTERVAL, FAULT_S   as above;  KEEP=1 keeps the temporary directory
#
# Results: bench/.results/revert-<UTC time>.json and a table on stdout.
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${RAMPART_BIN:-$TARGET_DIR/release/rampart}"
if [ -z "${RAMPART_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x /usr/bin/prometheus ] || { echo "needs Debian's prometheus (apt-get install -y prometheus)" >&2; exit 1; }
mkdir -p "$BENCH/.results"
out="$BENCH/.results/revert-$(date -u +%Y%m%dT%H%M%SZ).json"
RAMPART_BIN="$BIN" python3 "$BENCH/revert.py" > "$out"
python3 - "$out" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
def secs(d):
    n = float(d[:-1]); return n * {"s": 1, "m": 60}[d[-1]]
target = secs(r["for"]) + secs(r["interval"]) + 1
c = sorted(x["commit_s"] for x in r["runs"]); a = sorted(x["applied_s"] for x in r["runs"])
def q(v, p): return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
print(f"SLO `for` {r['for']}, analysis interval {r['interval']}: target ≤ {target:.1f} s; {len(c)} runs\n")
print("| from the error ratio crossing the bound to | median | p90 | max | within target |")
print("|---|---|---|---|---|")
for name, v in (("the revert commit on the remote", c), ("the reverted state applied", a)):
    ok = sum(1 for x in v if x <= target)
    print(f"| {name} | {statistics.median(v):.2f} s | {q(v, 0.9):.2f} s | {max(v):.2f} s | {ok}/{len(v)} |")
print("\n| fault | seconds | inconclusive checks | false reverts |")
print("|---|---|---|---|")
for f in r["faults"]:
    print(f"| {f['fault']} | {f['seconds']:.0f} | {f['inconclusive']} | {f['reverts']} |")
PY
echo "(raw: $out)"
