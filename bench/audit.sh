#!/usr/bin/env bash
# `rampart audit` on a long history of the M corpus: wall time and peak RSS, beside what an
# auditor runs without rampart (`git log --first-parent -p`, and with the notes).
#
#   bench/audit.sh [COMMITS]       default 10000
#
# The history: the valid M corpus (bench/.corpus/M-valid, see compile.sh) cloned, then COMMITS
# commits on main made by bench/audit_history.py through `git fast-import` (one tenant edited
# per commit by an owner and approved by another member, every 10th by someone in no team,
# every 50th a pull-request merge) and a note under refs/notes/rampart on every allowed one.
#
# Cases (RUNS runs each, the first of a case under /usr/bin/time for the peak RSS):
#   audit-cold   `rampart audit REPO --no-fetch --format json`, the parse cache (.git/rampart) removed first
#   audit-warm   the same, the parse cache left by the previous run
#   git-log-p    `git log --first-parent -p main` (every change as a diff, no decision, no records)
#   git-log-notes `git log --first-parent --notes=rampart --name-status main` (the notes, no decision)
#
# Environment: RAMPART_BIN (default target/release/rampart, built when missing), RUNS (3), SEED (42).
# Results: bench/.results/audit-<UTC time>/ (the audit's JSON summary, summary.md).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
CORPORA="$BENCH/.corpus"
BIN="${RAMPART_BIN:-$ROOT/target/release/rampart}"
SEED="${SEED:-42}"
RUNS="${RUNS:-3}"
COMMITS="${1:-10000}"
RECIPE=1 # as compile.sh: the valid corpora are shared
export LC_ALL=C

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'audit.sh: %s\n' "$*" >&2; exit 1; }
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is missing: apt-get install time"
if [ -z "${RAMPART_BIN:-}" ] && [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --locked --quiet)
fi
[ -x "$BIN" ] || die "no rampart binary at $BIN"

# shellcheck source=bench/corpus.sh
. "$BENCH/corpus.sh"
VALID=$(valid_corpus_for M)

OUT="$BENCH/.results/audit-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
REPO="$WORK/repo"
say "history: $COMMITS commits on the valid M corpus"
git clone -q --no-local "$VALID" "$REPO"
git -C "$REPO" remote remove origin
python3 "$BENCH/audit_history.py" "$REPO" "$COMMITS" > "$WORK/stream"
git -C "$REPO" fast-import --quiet < "$WORK/stream"
git -C "$REPO" reset -q --hard main
git -C "$REPO" gc -q
echo "commits on main: $(git -C "$REPO" rev-list --count --first-parent main), notes: $(git -C "$REPO" notes --ref rampart list | wc -l)" | tee "$OUT/history.txt" >&2

# time CASE PREPARE CMD...: RUNS runs, the first under /usr/bin/time; prints "median rss"
run_case() {
    local name=$1 prepare=$2; shift 2
    local times=() i s e rss=""
    for i in $(seq 1 "$RUNS"); do
        eval "$prepare"
        s=$(date +%s.%N)
        if [ "$i" = 1 ]; then
            /usr/bin/time -f %M -o "$OUT/$name.rss" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" || true
            rss=$(tail -n 1 "$OUT/$name.rss")
        else
            "$@" > /dev/null 2>&1 || true
        fi
        e=$(date +%s.%N)
        times+=("$(echo "$e - $s" | bc)")
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
    echo "$median $((rss / 1024))"
}

say "timing ($RUNS runs a case)"
declare -A RES
RES[audit-cold]=$(run_case audit-cold 'rm -rf "$REPO/.git/rampart"' "$BIN" audit "$REPO" --no-fetch --format json)
RES[audit-warm]=$(run_case audit-warm ':' "$BIN" audit "$REPO" --no-fetch --format json)
RES[git-log-p]=$(run_case git-log-p ':' git -C "$REPO" log --first-parent -p main)
RES[git-log-notes]=$(run_case git-log-notes ':' git -C "$REPO" log --first-parent --notes=rampart --name-status main)

python3 - "$OUT/audit-cold.out" > "$OUT/audit.txt" <<'PY'
import json, sys, collections
r = json.load(open(sys.argv[1]))
dec = collections.Counter(row["decision"]["recomputed"] for row in r["rows"])
codes = collections.Counter(f["code"] for f in r["findings"])
print(f"rows {len(r['rows'])}, commits {r['commits']}, changing {r['changing']}, decisions {dict(dec)}, findings {dict(codes)}")
PY
cat "$OUT/audit.txt" >&2

{
    echo "audit of $COMMITS commits on M ($(cat "$OUT/history.txt")); $(cat "$OUT/audit.txt")"
    echo
    echo "| case | what | median wall (s) | peak RSS (MiB) |"
    echo "|---|---|---:|---:|"
    for c in audit-cold audit-warm git-log-p git-log-notes; do
        read -r t m <<< "${RES[$c]}"
        case $c in
            audit-cold) what="rampart audit, re-decides every change, no parse cache" ;;
            audit-warm) what="rampart audit, parse cache warm" ;;
            git-log-p) what="git log --first-parent -p (diffs only)" ;;
            git-log-notes) what="git log --first-parent --notes --name-status (records only)" ;;
        esac
        printf '| %s | %s | %.2f | %s |\n' "$c" "$what" "$t" "$m"
    done
} | tee "$OUT/summary.md"
