#!/usr/bin/env bash
# `rampart compile` and `rampart plan` on a valid corpus: wall time (hyperfine) and peak RSS
# (/usr/bin/time), against the targets.
#
#   bench/compile.sh [SIZE]        SIZE is S, M or L; default M
#
# Cases:
#   compile      `rampart compile REPO --out OUT`, an empty OUT each run (hyperfine --prepare; see KEEP_OUT)
#   plan-one-cold  `rampart plan REPO --base A --head B --format markdown` with .git/rampart (the parse
#                cache) removed before each run: B changes one tenant's quota cpu
#   plan-one     the same, the parse cache left by the previous run (warm)
#   plan-all     the same with --head C: C changes every tenant's quota memory
#
# The generated corpora are ~2 % invalid on purpose, and compile/plan need a valid repo. So
# bench/.corpus/<SIZE>-valid is a copy of bench/.corpus/<SIZE> (from its commit) without the
# files listed in <SIZE>.expected.json, and without whatever `rampart validate` still reports
# after that (a few rounds), committed as a new git repository with a fixed author and date:
#   main / tag A      the valid corpus (checked out; `compile` reads the work tree)
#   tag B             A + one tenant's spec.quota.cpu changed
#   tag C             A + every tenant's spec.quota.memory changed (within the tier bounds)
# It is rebuilt when gen_corpus.py, SEED or the recipe below (RECIPE) changes
# (bench/.corpus/<SIZE>-valid.stamp).
#
# Environment:
#   RAMPART_BIN=...  time this binary instead of building target/release/rampart
#   SEED=42          corpus seed (as bench/validate.sh)
#   RUNS=10          hyperfine runs per case (after 1 warm-up run); at least 5
#   KEEP_OUT=1       compile: rename the previous run's output away instead of `rm -rf` (see below);
#                    needs (RUNS + 2) x ~600 MiB free on M; 0 deletes between runs
#
# Results: bench/.results/compile-<UTC time>/ (hyperfine JSON, probe outputs, peak RSS, the
# `plan --timings` phase lines, the markdown plans, summary.md); the table is printed at the end.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
CORPORA="$BENCH/.corpus"
BIN="${RAMPART_BIN:-$ROOT/target/release/rampart}"
SEED="${SEED:-42}"
RUNS="${RUNS:-10}"
SIZE="${1:-M}"
RECIPE=1 # bump when the valid-corpus recipe changes
export LC_ALL=C

case "$SIZE" in S|M|L) ;; *) echo "compile.sh: unknown size '$SIZE' (S, M or L)" >&2; exit 2 ;; esac
[ "$RUNS" -ge 5 ] 2>/dev/null || { echo "compile.sh: RUNS must be a number >= 5" >&2; exit 2; }

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'compile.sh: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s)

# ---------------------------------------------------------------- tools

command -v hyperfine >/dev/null || die "hyperfine not found (apt-get install hyperfine, or cargo install hyperfine)"
command -v git >/dev/null || die "git not found"
if [ ! -x /usr/bin/time ]; then
    say "GNU time (/usr/bin/time) missing: installing the Debian package 'time'"
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -q time >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q time >/dev/null; }
    fi
    [ -x /usr/bin/time ] || die "could not install 'time' (apt-get install time)"
fi
if [ -z "${RAMPART_BIN:-}" ]; then
    say "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN not found"
for c in validate compile plan; do
    "$BIN" "$c" --help >/dev/null 2>&1 || die "'$BIN $c --help' failed: this binary has no $c command"
done

RESULTS="$BENCH/.results/compile-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
OUT="$(mktemp -d /tmp/cbench-out.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
# time a private copy: a concurrent `cargo build` must not swap the binary in the middle of a run
BIN_SRC="$BIN"
BIN_VERSION="$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown), binary $(sha256sum "$BIN_SRC" | cut -c1-12) built $(date -u -r "$BIN_SRC" +%Y-%m-%dT%H:%MZ)"
mkdir -p "$OUT/bin"
cp "$BIN_SRC" "$OUT/bin/rampart"
BIN="$OUT/bin/rampart"
echo "rampart $BIN_VERSION" > "$RESULTS/rampart-version.txt"

# ---------------------------------------------------------------- corpora

# corpus_for, fixed_git, edit_tenants and valid_corpus_for (shared with serve.sh)
. "$BENCH/corpus.sh"

# ---------------------------------------------------------------- measuring

JSONL="$RESULTS/results.jsonl"
: > "$JSONL"

# measure CASE CMD: one probe run under /usr/bin/time (peak RSS, output kept in CASE.out and
# CASE.err), then hyperfine (warm-up 1, RUNS runs) with PREPARE (if set) before every run
measure() {
    local name=$1 cmd=$2 base="$RESULTS/$1" rc=0 rss
    say "$name: probe run (peak RSS)"
    [ -z "${PREPARE:-}" ] || sh -c "$PREPARE"
    /usr/bin/time -f %M -o "$base.rss" sh -c "$cmd" > "$base.out" 2> "$base.err" || rc=$?
    [ "$rc" = 0 ] || die "$name: the probe run exited $rc (see $base.err)"
    rss=$(tail -n 1 "$base.rss")
    echo "    peak RSS $((rss / 1024)) MiB" >&2
    [ -z "${3:-}" ] || "$3"
    say "$name: hyperfine --warmup 1 --runs $RUNS"
    local prep=()
    [ -z "${PREPARE:-}" ] || prep=(--prepare "$PREPARE")
    hyperfine --style basic --warmup 1 --runs "$RUNS" "${prep[@]}" --command-name "$name" \
        --export-json "$base.json" "$cmd > /dev/null" >&2
    printf '{"case":"%s","hyperfine":"%s","rss_kib":%s}\n' "$name" "$base.json" "$rss" >> "$JSONL"
}

# check_space: after the compile probe, fall back to `rm -rf` between runs (KEEP_OUT=0) when the
# RUNS + 1 kept trees would not fit in the free space (with 1 GiB to spare)
check_space() {
    [ "${KEEP_OUT:-1}" = 1 ] || return 0
    local need free
    need=$(( $(du -sk "$OUT/compiled" | cut -f1) * (RUNS + 2) + 1048576 ))
    free=$(df -Pk "$OUT" | awk 'NR == 2 { print $4 }')
    if [ "$free" -lt "$need" ]; then
        echo "    compile.sh: $((free / 1024)) MiB free < $((need / 1024)) MiB for $((RUNS + 2)) kept output trees: deleting between runs instead (KEEP_OUT=0)" >&2
        KEEP_OUT=0
        PREPARE="rm -rf $OUT/compiled"
    fi
}

# timings CASE CMD: three runs with --timings, the phase lines go to CASE.timings
timings() {
    local name=$1 cmd=$2 i
    : > "$RESULTS/$name.timings"
    for i in 1 2 3; do
        sh -c "$cmd --timings" 2>> "$RESULTS/$name.timings" > /dev/null || die "$name --timings run $i failed"
    done
    sed 's/^/    /' "$RESULTS/$name.timings" >&2
}

repo=$(valid_corpus_for "$SIZE")
files=$(git -C "$repo" ls-files | wc -l)
tenants=$(git -C "$repo" ls-files tenants | wc -l)
sed -n '2,$p' "$repo.stamp" | sed 's/^/    /' >&2

# How fast this file system creates small files right now, as a reference for compile's ~135k
# (python, one thread; about 35k files/s on a quiet machine, a few thousand after a mass delete)
fs_rate() {
    python3 - "$OUT/fs-probe-$1" <<'PY'
import os, sys, time
d = sys.argv[1]
os.mkdir(d)
t = time.perf_counter()
n = 0
for i in range(400):
    p = f"{d}/d{i}"
    os.mkdir(p)
    for j in range(14):
        with open(f"{p}/f{j}.yaml", "wb") as f:
            f.write(b"x" * 4096)
        n += 1
print(f"{n / (time.perf_counter() - t):.0f}")
PY
}
FS_BEFORE=$(fs_rate before)
echo "    file creation rate before compile: $FS_BEFORE files/s (5,600 files of 4 KiB, python)" >&2

# Each run gets an empty --out. By default the previous run's tree is renamed away instead of
# deleted (KEEP_OUT=1): on an ext4 without a journal (like the benchmark machine's), creating
# files right after deleting ~135k of them is ~10x slower (the inode allocator skips inodes
# deleted in the last 30-180 s, and scans for them: `recently_deleted` in the kernel profile), so
# `rm -rf OUT` between runs measures the file system's churn, not rampart. KEEP_OUT=0 runs the
# plain `rm -rf` (then a run takes 30-70 s on that machine). The renamed trees are deleted at exit.
if [ "${KEEP_OUT:-1}" = 1 ]; then
    prepare="if [ -d $OUT/compiled ]; then mv $OUT/compiled $OUT/old.\$(date +%s%N); fi"
else
    prepare="rm -rf $OUT/compiled"
fi
PREPARE="$prepare" measure compile "$BIN compile $repo --out $OUT/compiled" check_space
objects=$(find "$OUT/compiled" -type f -name '*.yaml' ! -name kustomization.yaml | wc -l)
echo "    $objects objects written ($(du -sm "$OUT/compiled" | cut -f1) MiB)" >&2
FS_AFTER=$(fs_rate after)
echo "    file creation rate after compile: $FS_AFTER files/s" >&2

PLAN="$BIN plan $repo --format markdown --base A"
# first with no parse cache (a fresh clone: every blob parsed once, shared by both revisions),
# then warm (the cache the previous runs left in .git/rampart)
PREPARE="rm -rf $repo/.git/rampart" measure plan-one-cold "$PLAN --head B"
measure plan-one "$PLAN --head B"
timings plan-one "$PLAN --head B"
measure plan-all "$PLAN --head C"
timings plan-all "$PLAN --head C"
cp "$RESULTS/plan-one.out" "$RESULTS/plan-one.md"
cp "$RESULTS/plan-all.out" "$RESULTS/plan-all.md"

# ---------------------------------------------------------------- report

{
    echo "## rampart compile and plan, corpus $SIZE-valid ($(date -u +%Y-%m-%d), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))"
    echo
    echo "$files files ($tenants tenants), $objects Kubernetes objects compiled. Base A $(sed -n 's/^A \([0-9a-f]\{9\}\).*/\1/p' "$repo.stamp");"
    echo "B = $(sed -n 's/^B [0-9a-f]* B: //p' "$repo.stamp"); C = $(sed -n 's/^C [0-9a-f]* C: //p' "$repo.stamp")."
    echo
    python3 - "$JSONL" "$RESULTS" <<'PY'
import json, statistics, sys
jsonl, results = sys.argv[1], sys.argv[2]
rows = {}
for line in open(jsonl):
    r = json.loads(line)
    h = json.load(open(r["hyperfine"]))["results"][0]
    rows[r["case"]] = (h, r["rss_kib"] / 1024)

def md_chars(path):
    text = open(path, encoding="utf-8").read()
    note = ("left out to stay within GitHub's" in text) or ("plan truncated at GitHub's comment limit" in text)
    return len(text), note

one_chars, one_note = md_chars(f"{results}/plan-one.md")
all_chars, all_note = md_chars(f"{results}/plan-all.md")
LIMIT = 65_536
targets = {
    # case: (label, target text, check(mean_s, rss_mib))
    "compile": ("`compile` (full, fresh --out)", "≤ 1 s, ≤ 200 MiB", lambda t, m: t <= 1.0 and m <= 200),
    "plan-one-cold": ("`plan` one tenant (A→B), no parse cache yet", "(reported)", lambda t, m: True),
    "plan-one": ("`plan` one tenant (A→B), parse cache warm", "≤ 150 ms", lambda t, m: t <= 0.150),
    "plan-all": ("`plan` all tenants (A→C)", f"markdown ≤ {LIMIT:,} chars", lambda t, m: all_chars <= LIMIT),
}
print("| case | wall mean ± σ | peak RSS | target | met? |")
print("|---|---:|---:|---|---|")
for case, (label, target, ok) in targets.items():
    h, rss = rows[case]
    mean, sd = h["mean"], h["stddev"] or 0.0
    wall = f"{mean*1000:.0f} ± {sd*1000:.0f} ms" if mean < 1 else f"{mean:.3f} ± {sd:.3f} s"
    print(f"| {label} | {wall} | {rss:.0f} MiB | {target} | {'✅ yes' if ok(mean, rss) else '❌ no'} |")
print()
print(f"plan-all markdown: {all_chars:,} characters (limit {LIMIT:,}), truncation note "
      f"{'present' if all_note else 'absent'}; plan-one markdown: {one_chars:,} characters, note "
      f"{'present' if one_note else 'absent'}.")
print()
print("Median / min / max (s): " + "; ".join(
    f"{c} {statistics.median(rows[c][0]['times']):.3f} / {min(rows[c][0]['times']):.3f} / {max(rows[c][0]['times']):.3f}"
    for c in rows) + ".")
print("Mean user+sys (s): " + "; ".join(f"{c} {rows[c][0]['user'] + rows[c][0]['system']:.2f}" for c in rows) + ".")
PY
    echo
    echo "\`plan --timings\` (3 runs each):"
    echo
    echo '```'
    for c in plan-one plan-all; do sed "s/^/$c: /" "$RESULTS/$c.timings"; done
    echo '```'
    echo
    echo "Cold CLI, each run a new process, page cache warm; hyperfine warm-up 1, $RUNS runs; compile gets an"
    if [ "${KEEP_OUT:-1}" = 1 ]; then
        echo "empty --out each run (--prepare renames the previous tree away; KEEP_OUT=1). Peak RSS from one probe"
    else
        echo "empty --out each run (--prepare rm -rf; KEEP_OUT=0). Peak RSS from one probe"
    fi
    echo "run under /usr/bin/time. Output and repo on $(df -PT "$OUT" | awk 'NR == 2 { print $2 }'); creating small files ran at"
    echo "$FS_BEFORE files/s before the compile runs and $FS_AFTER after (python, one thread; ~35k/s when the file system is"
    echo "quiet, far less within minutes of a mass delete, which then dominates compile's time). $(hyperfine --version)."
    echo "rampart $BIN_VERSION (git describe of the work tree when the run started; -dirty: uncommitted changes)."
} > "$RESULTS/summary.md"
echo >&2
cat "$RESULTS/summary.md"
echo >&2
echo "results in $RESULTS (total $(( $(date +%s) - T0 )) s)" >&2
