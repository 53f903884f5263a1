#!/usr/bin/env bash
# The policy-change impact on the M corpus: `rampart plan` of a one-line policy edit and of a
# team membership change, side by side with the same plan of a change that touches no rule
# (no impact work), release build: wall time (hyperfine), peak RSS (/usr/bin/time) and the
# impact's own time and question counts (`plan --timings`). Target: the impact ≤ 1 s on M.
#
#   bench/impact.sh [SIZE]        SIZE is S, M or L; default M
#
# The history, on a clone of the valid corpus (bench/.corpus/<SIZE>-valid, made as compile.sh
# makes it, or CORPUS=DIR for one already made):
#   P0   A + policies/bench.cedar: updating a tenant labelled env=prod needs a platform approval
#   P1   P0 with that line edited: env=staging instead (a one-line policy edit: prod tenants
#        widen, staging ones narrow)
#   T1   P0 + one login added to teams/platform.yaml (a membership change)
#   N1   P0 + one tenant's quota cpu changed (no rule changes: no impact)
#
# Environment: RAMPART_BIN (default target/release/rampart, built when missing), RUNS (5),
# SEED (42), CORPUS. Results: bench/.results/impact-<UTC time>/ (summary.md, probe outputs).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
CORPORA="$BENCH/.corpus"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${RAMPART_BIN:-$TARGET_DIR/release/rampart}"
SEED="${SEED:-42}"
RUNS="${RUNS:-5}"
SIZE="${1:-M}"
RECIPE=1 # (valid_corpus_for's recipe, as in compile.sh)
export LC_ALL=C
say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'impact.sh: %s\n' "$*" >&2; exit 1; }

command -v hyperfine >/dev/null || die "hyperfine not found"
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) not found (apt-get install time)"
if [ -z "${RAMPART_BIN:-}" ]; then
    say "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN not found"

# corpus_for, fixed_git, edit_tenants and valid_corpus_for
. "$BENCH/corpus.sh"
SRC="${CORPUS:-$(valid_corpus_for "$SIZE")}"
[ -d "$SRC/.git" ] || die "$SRC is not a git repository"

RESULTS="$BENCH/.results/impact-$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$(mktemp -d /tmp/impact-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS" "$WORK/bin"
cp "$BIN" "$WORK/bin/rampart"
BIN="$WORK/bin/rampart"
REPO="$WORK/repo"
git clone --quiet "$SRC" "$REPO"
git -C "$REPO" checkout --quiet "$(git -C "$SRC" rev-parse 'A^{commit}' 2>/dev/null || git -C "$SRC" rev-parse HEAD)"

say "the history"
EPOCH=1768478400
mkdir -p "$REPO/policies"
cat > "$REPO/policies/bench.cedar" <<'CEDAR'
@id("bench-prod-tenants-need-platform-approval")
@advice("Tenants labelled env=prod change only with an approval from a member of `platform`.")
forbid (principal, action == Rampart::Action::"updateTenant", resource)
when { resource.hasTag("env") && resource.getTag("env") == "prod" }
unless { context.change in Rampart::Team::"platform" };
CEDAR
fixed_git $EPOCH -C "$REPO" add -A
fixed_git $EPOCH -C "$REPO" commit --quiet -m "P0: a policy"
fixed_git $EPOCH -C "$REPO" tag P0
sed -i 's/getTag("env") == "prod"/getTag("env") == "staging"/' "$REPO/policies/bench.cedar"
fixed_git $((EPOCH + 60)) -C "$REPO" commit --quiet -am "P1: one-line policy edit"
fixed_git $EPOCH -C "$REPO" tag P1
fixed_git $EPOCH -C "$REPO" checkout --quiet P0
python3 - "$REPO/teams/platform.yaml" <<'PY'
import sys
p = sys.argv[1]
text = open(p).read()
assert "  members:\n" in text, "teams/platform.yaml has no block members list"
open(p, "w").write(text.replace("  members:\n", "  members:\n    - bench-newcomer\n", 1))
PY
fixed_git $((EPOCH + 120)) -C "$REPO" commit --quiet -am "T1: a login joins platform"
fixed_git $EPOCH -C "$REPO" tag T1
fixed_git $EPOCH -C "$REPO" checkout --quiet P0
edit_tenants "$REPO" one >&2
fixed_git $((EPOCH + 180)) -C "$REPO" commit --quiet -am "N1: one tenant's quota"
fixed_git $EPOCH -C "$REPO" tag N1
fixed_git $EPOCH -C "$REPO" checkout --quiet P0
# (one run first, so the parse cache in .git/rampart is warm for every case alike)
"$BIN" plan "$REPO" --base P0 --head N1 --format markdown > /dev/null

JSONL="$RESULTS/results.jsonl"
: > "$JSONL"
for case in N1 P1 T1; do
    cmd="$BIN plan $REPO --base P0 --head $case --format markdown"
    say "$case: probe run (peak RSS) and --timings"
    /usr/bin/time -f %M -o "$RESULTS/$case.rss" sh -c "$cmd" > "$RESULTS/$case.md" 2> "$RESULTS/$case.err" \
        || die "$case: the probe run failed (see $RESULTS/$case.err)"
    : > "$RESULTS/$case.timings"
    for i in 1 2 3; do sh -c "$cmd --timings" 2>> "$RESULTS/$case.timings" > /dev/null; done
    sed 's/^/    /' "$RESULTS/$case.timings" >&2
    hyperfine --style basic --warmup 1 --runs "$RUNS" --command-name "$case" \
        --export-json "$RESULTS/$case.json" "$cmd > /dev/null" >&2
    printf '{"case":"%s","rss_kib":%s}\n' "$case" "$(tail -n 1 "$RESULTS/$case.rss")" >> "$JSONL"
done

python3 - "$RESULTS" "$SIZE" <<'PY' | tee "$RESULTS/summary.md"
import json, re, statistics, sys
results, size = sys.argv[1], sys.argv[2]
labels = {
    "N1": "one tenant's quota (no rule change: no impact)",
    "P1": "one-line policy edit",
    "T1": "a login joins `platform`",
}
print(f"## `rampart plan` with the policy-change impact, corpus {size}-valid\n")
print("| change (base P0) | wall mean ± σ | peak RSS | impact (median of 3) | questions | decided under both | flips | impact ≤ 1 s? |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for line in open(f"{results}/results.jsonl"):
    r = json.loads(line)
    case = r["case"]
    h = json.load(open(f"{results}/{case}.json"))["results"][0]
    t = open(f"{results}/{case}.timings").read()
    ms = [float(x) for x in re.findall(r"impact ([0-9.]+) ms", t)]
    q = re.search(r"\((\d+) questions, (\d+) decided", t)
    md = open(f"{results}/{case}.md").read()
    f = re.search(r"\*\*Policy impact:\*\* (?:no decision flips|(\d+) decisions? flips?)", md)
    impact = f"{statistics.median(ms):.0f} ms" if ms else "—"
    ok = "—" if not ms else ("✅" if statistics.median(ms) <= 1000 else "❌")
    flips = "—" if not f else (f.group(1) or "0")
    print(f"| {labels[case]} | {h['mean']*1000:.0f} ± {(h['stddev'] or 0)*1000:.0f} ms | {r['rss_kib']/1024:.0f} MiB | "
          f"{impact} | {q.group(1) if q else '—'} | {q.group(2) if q else '—'} | {flips} | {ok} |")
PY
say "results in $RESULTS"
