#!/usr/bin/env bash
# `rampart serve`: push → applied latency, memory over many reconciles, and a change that reaches
# every tenant. A benchmark, not a test.
#
#   bench/serve.sh [example|S|M|L] [--pushes N] [--reconciles N] [--no-latency] [--no-all-tenants]
#
#   example          examples/platform-config, committed as a repository (10 tenants)
#   S, M, L          the valid copy of a generated corpus (bench/.corpus/<SIZE>-valid, as compile.sh)
#   --pushes N       one-tenant pushes timed (default 50)
#   --reconciles N   drive the service to N reconciles and read its RSS at the 100th and the Nth
#                    (default 1000 on M; 0 skips; not on the example unless given). Up to the
#                    100th each is a real one-tenant push; after it one in K (--real-every K,
#                    default 10) is, the others are webhooks with nothing new to apply
#   --no-latency     skip the timed pushes
#   --no-all-tenants skip the rampart.yaml change
#
# What it does: a bare remote from the corpus (main = the corpus's commit); `rampart serve --repo
# REMOTE --target dir:OUT --target branch:rendered --interval 1h` with RAMPART_WEBHOOK_SECRET set;
# wait for the first apply (every target's `applied` in GET /api/v1/status = the tip); then each
# push is: a commit in a clone of the remote (one tenant's spec.quota.pods ± 1, by a member of the
# tenant's owner team with an `Approved-by:` trailer from another member), `git push`, a signed
# GitHub `push` webhook, and status polls every 5 ms until each target holds the commit. The
# latency per target runs from the start of `git push` (bench/serve_driver.py).
#
# Environment:
#   RAMPART_BIN=...     use this binary instead of building (cargo build --release into
#                       CARGO_TARGET_DIR, default ROOT/target)
#   SEED=42             corpus seed
#   BUDGET_S=1200       stop the reconcile phase when the whole run has taken this long (the
#                       table says how many were reached)
#   RAMPART_LOG=info    serve's log filter (the log is kept in the results directory)
#
# Results: bench/.results/serve-<SIZE>-<UTC time>/ (serve.log, the driver's JSON, summary.md).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
CORPORA="$BENCH/.corpus"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${RAMPART_BIN:-$TARGET_DIR/release/rampart}"
SEED="${SEED:-42}"
RECIPE=1 # as compile.sh: the valid corpora are shared
BUDGET_S="${BUDGET_S:-1200}"
export LC_ALL=C

SIZE=M PUSHES=50 RECONCILES="" REAL_EVERY=10 LATENCY=1 ALLT=1
while [ $# -gt 0 ]; do
    case "$1" in
        example|S|M|L) SIZE=$1 ;;
        --pushes) PUSHES=$2; shift ;;
        --reconciles) RECONCILES=$2; shift ;;
        --real-every) REAL_EVERY=$2; shift ;;
        --no-latency) LATENCY=0 ;;
        --no-all-tenants) ALLT=0 ;;
        *) echo "serve.sh: unknown argument '$1' (see the top of bench/serve.sh)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$RECONCILES" ] || { [ "$SIZE" = M ] && RECONCILES=1000 || RECONCILES=0; }

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'serve.sh: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s)

command -v git >/dev/null || die "git not found"
command -v python3 >/dev/null || die "python3 not found"
if [ -z "${RAMPART_BIN:-}" ]; then
    say "cargo build --release (CARGO_TARGET_DIR=$TARGET_DIR)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet) || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN not found"
"$BIN" serve --help >/dev/null 2>&1 || die "'$BIN serve --help' failed: this binary has no serve command"

RESULTS="$BENCH/.results/serve-$SIZE-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
WORK="$(mktemp -d /tmp/serve-bench.XXXXXX)"
SERVE_PID=""
cleanup() {
    if [ -n "$SERVE_PID" ] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM "$SERVE_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVE_PID" 2>/dev/null || true
    fi
    # large trees: leave them to a background delete, so the script returns
    rm -rf "$WORK" &
}
trap cleanup EXIT
# a private copy: a concurrent `cargo build` must not swap the binary under the service
BIN_VERSION="$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown), binary $(sha256sum "$BIN" | cut -c1-12) built $(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ)"
mkdir -p "$WORK/bin"
cp "$BIN" "$WORK/bin/rampart"
BIN="$WORK/bin/rampart"
echo "rampart $BIN_VERSION" > "$RESULTS/rampart-version.txt"

. "$BENCH/corpus.sh"

# ---------------------------------------------------------------- the remote

say "bare remote ($SIZE)"
REMOTE="$WORK/remote.git"
if [ "$SIZE" = example ]; then
    src="$WORK/example-src"
    cp -r "$ROOT/examples/platform-config" "$src"
    fixed_git 1768478400 -C "$src" init -q
    fixed_git 1768478400 -C "$src" add -A
    fixed_git 1768478400 -C "$src" commit -q -m "examples/platform-config"
    git clone -q --bare "$src" "$REMOTE"
else
    src=$(valid_corpus_for "$SIZE")
    git clone -q --bare --single-branch --branch main "$src" "$REMOTE"
fi
git clone -q "$REMOTE" "$WORK/clone"
files=$(git -C "$WORK/clone" ls-files | wc -l)
tenants=$(git -C "$WORK/clone" ls-files tenants | wc -l)
echo "    $files files, $tenants tenants; main at $(git -C "$REMOTE" rev-parse --short=12 main)" >&2

# ---------------------------------------------------------------- the service

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SECRET="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
say "rampart serve on 127.0.0.1:$PORT (dir and branch targets)"
T_SERVE=$(date +%s.%N)
RAMPART_WEBHOOK_SECRET="$SECRET" RAMPART_LOG="${RAMPART_LOG:-info}" \
    "$BIN" serve --repo "$REMOTE" --target "dir:$WORK/out" --target branch:rendered \
    --listen "127.0.0.1:$PORT" --interval 1h --state-dir "$WORK/state" --log-format pretty \
    > "$RESULTS/serve.log" 2>&1 &
SERVE_PID=$!
python3 - "$WORK/state.json" <<PY
import json, sys, time
json.dump({"pid": $SERVE_PID, "port": $PORT, "secret": "$SECRET", "work": "$WORK/clone",
           "remote": "$REMOTE", "rampart": "$BIN", "size": "$SIZE",
           "deadline": $T0 + $BUDGET_S, "first_timeout": 3600, "started": $T_SERVE}, open(sys.argv[1], "w"))
PY
cat > "$RESULTS/meta.json" <<EOF
{"size": "$SIZE", "files": $files, "tenants": $tenants, "pushes": $PUSHES, "reconciles": $RECONCILES}
EOF
D="python3 $BENCH/serve_driver.py"

say "waiting for the first apply"
$D wait-first "$WORK/state.json" > "$RESULTS/first.json" || die "the first apply failed (see $RESULTS/serve.log)"
objects=$(find "$WORK/out" -type f | wc -l)
echo "    $objects files in the dir target" >&2

if [ "$LATENCY" = 1 ] && [ "$PUSHES" -gt 0 ]; then
    say "$PUSHES one-tenant pushes"
    $D latency "$WORK/state.json" "$PUSHES" "$RESULTS/latency.json" || die "the latency phase failed (see $RESULTS/serve.log)"
fi
if [ "$RECONCILES" -gt 0 ]; then
    say "reconciles up to $RECONCILES (memory)"
    $D reconciles "$WORK/state.json" "$RECONCILES" "$RESULTS/reconciles.json" "$REAL_EVERY" || die "the reconcile phase failed (see $RESULTS/serve.log)"
fi
if [ "$ALLT" = 1 ]; then
    say "one change that reaches every tenant (rampart.yaml)"
    $D all-tenants "$WORK/state.json" "$RESULTS/all-tenants.json" || die "the all-tenant phase failed (see $RESULTS/serve.log)"
fi

# where an apply's time goes: the `ms=` of serve's "applied" lines, per target (after the first)
python3 - "$RESULTS/serve.log" > "$RESULTS/apply-ms.txt" <<'PY'
import re, statistics, sys
per = {}
for line in open(sys.argv[1], errors="replace"):
    if " applied " not in line and not line.rstrip().endswith("applied"):
        pass
    m = re.search(r"target\{target=(\S+?)\}.*?\bapplied\b.*?\bms=(\d+)", line) or \
        re.search(r"target=(\S+?)\}.*\bms=(\d+)", line)
    if m and "result=" in line:
        per.setdefault(m.group(1), []).append(int(m.group(2)))
for t, xs in per.items():
    rest = sorted(xs[1:]) or sorted(xs)
    print(f"{t}: first {xs[0]} ms; then n={len(rest)} median {statistics.median(rest):.0f} ms, max {max(rest)} ms")
PY

# ---------------------------------------------------------------- report

{
    echo "## rampart serve, $SIZE ($(date -u +%Y-%m-%d), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "$files files ($tenants tenants); $objects files in the dir target after the first apply."
    echo
    $D table "$RESULTS"
    echo
    echo "Apply time inside serve (\`ms=\` of its \"applied\" log lines; the target's own write, after"
    echo "fetch, validation and authorisation):"
    echo
    sed 's/^/    /' "$RESULTS/apply-ms.txt"
    echo
    echo "Context, not measured here: Argo CD polls Git every 180 s by default, Flux every"
    echo "\`interval\` (1 m is typical); both also take webhooks."
    echo
    echo "rampart $BIN_VERSION."
} > "$RESULTS/summary.md"
echo >&2
cat "$RESULTS/summary.md"
echo >&2
echo "results in $RESULTS (total $(( $(date +%s) - T0 )) s)" >&2
