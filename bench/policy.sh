#!/usr/bin/env bash
# Policy benchmark: authorise every object of a corpus as changed (one request per object),
# with rampart (Rust, one thread) and with cedarpy (PyPI, batch mode) on the same entities,
# policies and requests, in the same run.
#
#   bench/policy.sh [SIZE]        SIZE is S, M or L; default M
#
# Environment: SEED=42 (corpus seed, as bench/validate.sh). Results: bench/.results/policy-<UTC>/.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
TOOLS="$BENCH/.tools"
SIZE="${1:-M}"
SEED="${SEED:-42}"
OUT="$BENCH/.results/policy-$(date -u +%Y%m%dT%H%M%SZ)"
say() { printf '\n==> %s\n' "$*" >&2; }
mkdir -p "$OUT"

dir="$BENCH/.corpus/$SIZE"
want="$(sha256sum "$BENCH/gen_corpus.py" | cut -c1-16) seed=$SEED"
if [ ! -d "$dir/.git" ] || [ "$(cat "$dir.stamp" 2>/dev/null)" != "$want" ]; then
    say "generating corpus $SIZE"
    mkdir -p "$BENCH/.corpus"
    python3 "$BENCH/gen_corpus.py" --size "$SIZE" --seed "$SEED" --out "$dir" --force >&2
    echo "$want" > "$dir.stamp"
fi

if [ ! -x "$TOOLS/venv/bin/python" ]; then
    say "creating $TOOLS/venv"
    python3 -m venv "$TOOLS/venv"
fi
if ! "$TOOLS/venv/bin/python" -c 'import cedarpy' 2>/dev/null; then
    say "installing cedarpy"
    "$TOOLS/venv/bin/pip" install --quiet 'cedarpy==4.12.2'
fi

say "rampart (cargo bench --bench policy, release)"
(cd "$ROOT" && cargo bench --quiet --bench policy -- "$dir" "$OUT") > "$OUT/rampart.json"
say "cedarpy (is_authorized_batch)"
taskset -c 0 "$TOOLS/venv/bin/python" "$BENCH/cedarpy_batch.py" "$OUT" > "$OUT/cedarpy.json" 2>/dev/null \
    || "$TOOLS/venv/bin/python" "$BENCH/cedarpy_batch.py" "$OUT" > "$OUT/cedarpy.json"

python3 - "$OUT" "$SIZE" <<'PY' | tee "$OUT/summary.md"
import json, sys
out, size = sys.argv[1], sys.argv[2]
r = json.load(open(f"{out}/rampart.json"))
c = json.load(open(f"{out}/cedarpy.json"))
print(f"Corpus {size}: {r['requests']} requests (every team, tenant, plugin, rollout as an update), "
      f"{r['entities']} entities; rampart allowed {r['allowed']}, denied {r['denied']}; "
      f"cedarpy {c['cedarpy']} gave the same decision for {c['requests'] - c['mismatches']}/{c['requests']}.\n")
print("| engine | decisions/s | p50 per decision | p99 per decision | load entities + policies |")
print("|---|---:|---:|---:|---:|")
load = r['loadPoliciesMs'] + r['buildEntitiesMs'] + r['buildRequestsMs']
print(f"| rampart (cedar-policy 4.14, 1 thread) | {r['decisionsPerSecond']:,.0f} | {r['p50Us']:.1f} µs | {r['p99Us']:.1f} µs | "
      f"{load:.0f} ms (policies {r['loadPoliciesMs']:.0f}, entities {r['buildEntitiesMs']:.0f}, requests {r['buildRequestsMs']:.0f}) |")
print(f"| cedarpy batch, whole call | {c['decisionsPerSecond']:,.0f} | n/a (batch) | n/a (batch) | "
      f"{c['parseSeconds']*1000:.0f} ms per call (parse) |")
print(f"| cedarpy batch, minus parse | {c['decisionsPerSecondExcludingParse']:,.0f} | {c['meanUsExcludingParse']:.1f} µs (mean) | n/a | — |")
print(f"\nrampart also read and validated the YAML corpus in {r['readYamlMs']:.0f} ms (not part of the policy step).")
print(f"\nReach (rampart only): {r['reachPluginBumps']:,} plugin version bumps reach {r['reachedTenants']:,} "
      f"tenant listings as {r['reachRequests']:,} `reachTenant` requests (classes of alike tenants); "
      f"model {r['reachBuildMs']:.0f} ms, decisions {r['reachDecideMs']:.0f} ms.")
if c["mismatches"]:
    print(f"\n**{c['mismatches']} decisions differ between rampart and cedarpy.**")
PY
say "results in $OUT"
