#!/usr/bin/env bash
# B1 "cold CLI validate of the whole repo": rampart against ajv-cli and check-jsonschema.
#
#   bench/validate.sh [SIZE...]        SIZE is S, M or L; default: S M
#
# Environment:
#   SKIP_RAMPART=1   time the peers only (no `cargo build --release`, no rampart rows)
#   RAMPART_BIN=...  time this binary instead of building target/release/rampart
#   SKIP_AJV=1       skip ajv-cli            SKIP_CJ=1   skip check-jsonschema
#   CJ_ON_L=1        also run check-jsonschema on L (minutes per run; skipped by default)
#   RUNS=10          hyperfine runs for rampart     AJV_RUNS=5   for ajv-cli
#   CJ_RUNS=3 on S, 2 on M and L: hyperfine runs for check-jsonschema (no warm-up run: the
#                    probe run warms; ~48 s a run on M keeps S+M under about 5 minutes)
#   SEED=42          corpus seed (a corpus is regenerated when the seed or the generator changes)
#
# Per size and tool: one probe run under /usr/bin/time (peak RSS, and which files the tool
# flagged, compared with the generator's manifest), then hyperfine (each run a new process,
# page cache warm, nothing dropped). Results: bench/.results/<UTC time>/ (hyperfine JSON,
# probe outputs, summary.md); the markdown table is printed at the end.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
TOOLS="$BENCH/.tools"
CORPORA="$BENCH/.corpus"
BIN="${RAMPART_BIN:-$ROOT/target/release/rampart}"
SEED="${SEED:-42}"
RUNS="${RUNS:-10}"
AJV_RUNS="${AJV_RUNS:-5}"
export LC_ALL=C

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(S M)
for s in "${SIZES[@]}"; do
    case "$s" in S|M|L) ;; *) echo "validate.sh: unknown size '$s' (S, M or L)" >&2; exit 2 ;; esac
done

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'validate.sh: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s)

# ---------------------------------------------------------------- tools

command -v hyperfine >/dev/null || die "hyperfine not found (apt-get install hyperfine, or cargo install hyperfine)"
if [ ! -x /usr/bin/time ]; then
    say "GNU time (/usr/bin/time) missing: installing the Debian package 'time'"
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -q time >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q time >/dev/null; }
    fi
    [ -x /usr/bin/time ] || die "could not install 'time' (apt-get install time)"
fi
mkdir -p "$TOOLS"

if [ "${SKIP_AJV:-0}" != 1 ]; then
    command -v npm >/dev/null || die "npm not found (apt-get install nodejs npm), or set SKIP_AJV=1"
    if [ ! -x "$TOOLS/node_modules/.bin/ajv" ] || [ ! -d "$TOOLS/node_modules/ajv-formats" ]; then
        say "installing ajv-cli and ajv-formats into $TOOLS/node_modules"
        npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error ajv-cli@5 ajv-formats@3 >&2
    fi
    # custom formats for ajv-cli's -c: the standard ones from ajv-formats, plus rampart's
    # `semver` and `semver-range` with loose regexes (rampart checks these exactly).
    cat > "$TOOLS/formats.js" <<'EOF'
module.exports = function (ajv) {
  require("ajv-formats")(ajv);
  ajv.addFormat("semver", /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/);
  ajv.addFormat("semver-range", /^[\s0-9A-Za-z.^~<>=*,+-]+$/);
};
EOF
    python3 "$BENCH/benchlib.py" bundle "$ROOT/schemas" "$TOOLS/schemas"
fi

if [ "${SKIP_CJ:-0}" != 1 ]; then
    if [ ! -x "$TOOLS/venv/bin/check-jsonschema" ]; then
        say "installing check-jsonschema and ruamel.yaml.clib into $TOOLS/venv"
        python3 -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check check-jsonschema ruamel.yaml.clib >&2
    fi
    "$TOOLS/venv/bin/python" -c "import _ruamel_yaml" 2>/dev/null \
        || echo "validate.sh: warning: ruamel.yaml.clib is not importable; check-jsonschema falls back to pure-Python YAML" >&2
fi

if [ "${SKIP_RAMPART:-0}" != 1 ]; then
    if [ -z "${RAMPART_BIN:-}" ]; then
        say "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet) \
            || die "cargo build --release failed; set SKIP_RAMPART=1 to time the peers only"
    fi
    [ -x "$BIN" ] || die "$BIN not found after the build; set SKIP_RAMPART=1 to time the peers only"
    "$BIN" validate --help >/dev/null 2>&1 \
        || die "'$BIN validate --help' failed: the validate command is not there yet; set SKIP_RAMPART=1 to time the peers only"
fi

RESULTS="$BENCH/.results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
JSONL="$RESULTS/results.jsonl"
: > "$JSONL"

# ---------------------------------------------------------------- corpora

# corpus_for (shared with compile.sh and serve.sh)
# shellcheck source=bench/corpus.sh
. "$BENCH/corpus.sh"

# ---------------------------------------------------------------- measuring

# measure SIZE FILES TOOL RUNS WARMUP CATEGORY CMD [TIMED_CMD]
#   CMD runs once under /usr/bin/time with its output kept (probe); TIMED_CMD (default CMD)
#   is what hyperfine times.
measure() {
    local size=$1 files=$2 tool=$3 runs=$4 warmup=$5 category=$6 cmd=$7 timed=${8:-$7}
    local base="$RESULTS/$size-$tool" rss flagged
    say "$size / $tool: probe run (peak RSS, flagged files)"
    /usr/bin/time -f %M -o "$base.rss" sh -c "$cmd" > "$base.out" 2> "$base.err" || true
    rss=$(tail -n 1 "$base.rss")
    flagged=$(python3 "$BENCH/benchlib.py" check "$tool" "$base.out" "$base.err" "$CORPORA/$size.expected.json" "$category")
    echo "    peak RSS $((rss / 1024)) MiB; files flagged / expected: $flagged" >&2
    say "$size / $tool: hyperfine --warmup $warmup --runs $runs"
    hyperfine -i --style basic --warmup "$warmup" --runs "$runs" --command-name "$tool $size" \
        --export-json "$base.json" "$timed" >&2
    printf '{"size":"%s","files":%s,"tool":"%s","hyperfine":"%s","rss_kib":"%s","flagged":"%s"}\n' \
        "$size" "$files" "$tool" "$base.json" "$rss" "$flagged" >> "$JSONL"
}

skipped() { # SIZE FILES TOOL
    printf '{"size":"%s","files":%s,"tool":"%s","hyperfine":""}\n' "$1" "$2" "$3" >> "$JSONL"
}

AJV="$TOOLS/node_modules/.bin/ajv validate --spec=draft2020 --strict=false --all-errors --errors=no -c $TOOLS/formats.js"
CJ="$TOOLS/venv/bin/check-jsonschema"

for size in "${SIZES[@]}"; do
    corpus=$(corpus_for "$size")
    manifest="$corpus.expected.json"
    files=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"])' "$manifest")

    if [ "${SKIP_RAMPART:-0}" != 1 ]; then
        measure "$size" "$files" rampart "$RUNS" 1 all "$BIN validate $corpus --format json" \
            "$BIN validate $corpus --format json > /dev/null"
    else
        skipped "$size" "$files" rampart
    fi

    if [ "${SKIP_AJV:-0}" != 1 ]; then
        cmd="cd $corpus || exit 1"
        for k in team tenant plugin rollout; do
            cmd="$cmd; $AJV -s $TOOLS/schemas/$k.schema.json -d '${k}s/*.yaml'"
        done
        measure "$size" "$files" ajv-cli "$AJV_RUNS" 1 schema "$cmd"
    else
        skipped "$size" "$files" ajv-cli
    fi

    if [ "${SKIP_CJ:-0}" != 1 ] && { [ "$size" != L ] || [ "${CJ_ON_L:-0}" = 1 ]; }; then
        # printf | xargs rather than a shell glob: L's 50k tenant paths overflow ARG_MAX
        # (for S and M, xargs makes exactly one invocation per kind)
        cmd="cd $corpus || exit 1"
        for k in team tenant plugin rollout; do
            cmd="$cmd; printf '%s\\0' ${k}s/*.yaml | xargs -0 -s 2000000 $CJ --schemafile $ROOT/schemas/$k.schema.json"
        done
        cj_runs=${CJ_RUNS:-$([ "$size" = S ] && echo 3 || echo 2)}
        measure "$size" "$files" check-jsonschema "$cj_runs" 0 schema "$cmd"
    else
        skipped "$size" "$files" check-jsonschema
    fi
done

# ---------------------------------------------------------------- report

{
    echo "## rampart validate vs schema-only peers ($(date -u +%Y-%m-%d), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))"
    echo
    python3 "$BENCH/benchlib.py" table "$JSONL"
    echo
    echo "Cold CLI, each run a new process, page cache warm. Peak RSS from one probe run under /usr/bin/time."
    echo "flagged / expected: files reported invalid vs files the generator made invalid (rampart: all;"
    echo "peers: the schema-detectable ones only, since they check schemas and nothing else)."
    [ "${SKIP_RAMPART:-0}" = 1 ] && echo "rampart skipped (SKIP_RAMPART=1), so there is no ratio."
    echo "Versions: node $(node --version 2>/dev/null || echo -), ajv-cli $(sed -n 's/^  "version": "\(.*\)",/\1/p' "$TOOLS/node_modules/ajv-cli/package.json" 2>/dev/null || echo -), check-jsonschema $("$TOOLS/venv/bin/check-jsonschema" --version 2>/dev/null | sed 's/.* //' || echo -), $(hyperfine --version)"
} > "$RESULTS/summary.md"
echo >&2
cat "$RESULTS/summary.md"
echo >&2
echo "results in $RESULTS (total $(( $(date +%s) - T0 )) s)" >&2
