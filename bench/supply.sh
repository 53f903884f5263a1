#!/usr/bin/env bash
# What the plugin supply-chain checks (integrity, minisign signatures, trust score,
# compatibility) add to a cold `rampart validate` of the M corpus.
# Target: "verification and resolution for M (1k plugins, 10k tenants) add <= 100 ms".
#
#   RAMPART_BEFORE=/path/rampart-without-supply RAMPART_AFTER=/path/rampart bench/supply.sh
#
# Environment:
#   RAMPART_AFTER   binary with the supply chain (default: target/release/rampart; not built here)
#   RAMPART_BEFORE  binary without it, e.g. a release build of fd85146 (default: unset, then only
#                   AFTER is measured and the "added" column is empty)
#   CORPUS          the M corpus, a git repo (default: bench/.corpus/M; make it with
#                   `bench/validate.sh M` or bench/gen_corpus.py)
#   SIGNED          where the signed copy of CORPUS is made (default: /tmp/rampart-M-signed)
#   RUNS=15 WARMUP=2  hyperfine runs and warm-up runs per command
#   OUT             results directory (default: a new mktemp -d directory)
#
# The signed copy: CORPUS's HEAD tree, a fresh minisign key in keys/release.yaml for every
# publisher found in plugins/*.yaml, every plugin signed with scripts/sign-plugin, committed
# with CORPUS's commit date (validate measures trust freshness at the work tree's commit).
# Per corpus and binary: one probe run under /usr/bin/time (peak RSS, R6xx diagnostic counts),
# then `hyperfine -N -i` of `BIN validate DIR --format json` (output discarded; exit 3 for the
# invalid corpus is expected). Each run is a new process; the page cache is warm.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
AFTER="${RAMPART_AFTER:-$ROOT/target/release/rampart}"
BEFORE="${RAMPART_BEFORE:-}"
CORPUS="${CORPUS:-$BENCH/.corpus/M}"
SIGNED="${SIGNED:-/tmp/rampart-M-signed}"
RUNS="${RUNS:-15}"
WARMUP="${WARMUP:-2}"
OUT="${OUT:-$(mktemp -d /tmp/rampart-supply.XXXXXX)}"
export LC_ALL=C
die() { printf 'supply.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

for t in hyperfine minisign python3 git /usr/bin/time; do
    command -v "$t" >/dev/null || die "$t not found"
done
[ -d "$CORPUS/.git" ] || die "$CORPUS is not a generated corpus (run bench/validate.sh M first)"
[ -x "$AFTER" ] || die "RAMPART_AFTER=$AFTER is not an executable"
"$AFTER" plugins verify --help >/dev/null 2>&1 \
    || die "$AFTER has no 'plugins verify': it predates the supply chain (rebuild, or set RAMPART_AFTER)"
[ -z "$BEFORE" ] || [ -x "$BEFORE" ] || die "RAMPART_BEFORE=$BEFORE is not an executable"
mkdir -p "$OUT"

# ---------------------------------------------------------------- the signed corpus

head=$(git -C "$CORPUS" rev-parse HEAD)
if [ "$(cat "$SIGNED/.supply-stamp" 2>/dev/null)" != "$head" ]; then
    say "making the signed copy of $CORPUS in $SIGNED (signing takes a minute or two)"
    rm -rf "$SIGNED"
    mkdir -p "$SIGNED/keys" "$SIGNED.key"
    git -C "$CORPUS" archive HEAD | tar -x -C "$SIGNED"
    rm -f "$SIGNED.key/k.pub" "$SIGNED.key/k.key"
    minisign -G -W -p "$SIGNED.key/k.pub" -s "$SIGNED.key/k.key" >/dev/null
    # spec.publisher values (2-space indent; metadata.labels.publisher is deeper), only the
    # ones the SigningKey schema accepts (a planted invalid plugin may have any value)
    publishers=$(sed -n 's/^  publisher: *"\{0,1\}\([^" ]*\)"\{0,1\} *$/\1/p' "$SIGNED"/plugins/*.yaml \
        | grep -E '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' | sort -u | paste -sd, - | sed 's/,/, /g')
    cat > "$SIGNED/keys/release.yaml" <<EOF
apiVersion: rampart.dev/v1
kind: SigningKey
metadata:
  name: release
spec:
  publicKey: $(sed -n 2p "$SIGNED.key/k.pub")
  publishers: [$publishers]
EOF
    # sign-plugin stops at a file without artifact.integrity, so pass only those that have one
    (cd "$SIGNED" && grep -l '^    integrity:' plugins/*.yaml \
        | xargs "$ROOT/scripts/sign-plugin" "$SIGNED.key/k.key" >/dev/null)
    date=$(git -C "$CORPUS" log -1 --format=%cI)
    git -C "$SIGNED" init -q
    git -C "$SIGNED" add -A
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date git -C "$SIGNED" -c user.name=bench \
        -c user.email=bench@example.invalid commit -q -m "signed copy of $head"
    echo "$head" > "$SIGNED/.supply-stamp"   # untracked; validate reads only the kind dirs
fi
"$AFTER" plugins verify "$SIGNED" --format json > "$OUT/verify.json" || true
python3 - "$OUT/verify.json" <<'PY' >&2
import json, sys
p = json.load(open(sys.argv[1]))["plugins"]
ok = sum(1 for x in p if x.get("signatureVerified"))
print(f"    plugins verify on the signed copy: {ok} of {len(p)} plugins signatureVerified")
PY

# ---------------------------------------------------------------- measuring

bins=()
[ -n "$BEFORE" ] && bins+=("BEFORE=$BEFORE")
bins+=("AFTER=$AFTER")
: > "$OUT/rows.tsv"
for corpus in "M=$CORPUS" "M-signed=$SIGNED"; do
    for b in "${bins[@]}"; do
        cname=${corpus%%=*} dir=${corpus#*=} bname=${b%%=*} bin=${b#*=}
        base="$OUT/$cname-$bname"
        say "$cname / $bname: probe run, then hyperfine --warmup $WARMUP --runs $RUNS"
        /usr/bin/time -f %M -o "$base.rss" "$bin" validate "$dir" --format json > "$base.out" || true
        hyperfine -N -i --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$base.json" \
            --command-name "$cname $bname" "$bin validate $dir --format json" >&2
        printf '%s\t%s\t%s\t%s\t%s\n' "$cname" "$bname" "$base.json" "$(tail -n 1 "$base.rss")" "$base.out" \
            >> "$OUT/rows.tsv"
    done
done

# ---------------------------------------------------------------- table

python3 - "$OUT/rows.tsv" <<'PY' | tee "$OUT/summary.md"
import collections, json, math, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print("| corpus | binary | wall mean ± sd (ms) | median (ms) | user+sys (ms) | peak RSS (MiB) | added vs BEFORE: mean (± sd), median (ms) | R6xx diagnostics |")
print("|---|---|---|---|---|---|---|---|")
before = {}
for corpus, binary, hf, rss, out in rows:
    r = json.load(open(hf))["results"][0]
    mean, sd, med = r["mean"] * 1e3, r["stddev"] * 1e3, r["median"] * 1e3
    cpu = (r["user"] + r["system"]) * 1e3   # hyperfine's means over the runs
    codes = collections.Counter(d["code"] for d in json.load(open(out)).get("diagnostics", [])
                                if d["code"].startswith("R6"))
    r6 = ", ".join(f"{c} × {n}" for c, n in sorted(codes.items())) or "none"
    if binary == "BEFORE":
        before[corpus] = (mean, sd, med)
    added = ""
    if binary == "AFTER" and corpus in before:
        bm, bs, bmed = before[corpus]
        added = f"{mean - bm:+.1f} (± {math.hypot(sd, bs):.1f}), {med - bmed:+.1f}"
    print(f"| {corpus} | {binary} | {mean:.1f} ± {sd:.1f} | {med:.1f} | {cpu:.1f} | {int(rss) / 1024:.1f} | {added} | {r6} |")
PY
{
    echo
    echo "corpus M: $CORPUS at $head ($(cat "$CORPUS.stamp" 2>/dev/null || echo "no stamp")); M-signed: $SIGNED."
    echo "$(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), $(hyperfine --version)."
    echo "hyperfine -N -i --warmup $WARMUP --runs $RUNS; peak RSS from one probe run under /usr/bin/time."
    echo "added = AFTER - BEFORE on the same corpus: of the means (± the two sds combined), and of the medians."
} | tee -a "$OUT/summary.md"
echo "results in $OUT" >&2
