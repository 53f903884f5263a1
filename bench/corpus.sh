# Shared by bench/compile.sh and bench/serve.sh (sourced, not run): the generated corpora and
# the valid copy of one (bench/.corpus/<SIZE>-valid, tags A, B, C; see compile.sh).
#
# The caller sets BENCH, CORPORA, BIN (a rampart binary), SEED and RECIPE, and defines say and die.
corpus_for() { # size -> path of the generated (partly invalid) corpus, generating it if missing or stale
    local size=$1 dir="$CORPORA/$1" want
    want="$(sha256sum "$BENCH/gen_corpus.py" | cut -c1-16) seed=$SEED"
    if [ ! -d "$dir/.git" ] || [ ! -f "$dir.expected.json" ] || [ "$(cat "$dir.stamp" 2>/dev/null)" != "$want" ]; then
        say "generating corpus $size into $dir"
        mkdir -p "$CORPORA"
        rm -f "$dir.stamp"
        python3 "$BENCH/gen_corpus.py" --size "$size" --seed "$SEED" --out "$dir" --force >&2
        echo "$want" > "$dir.stamp"
    fi
    echo "$dir"
}

# git with a fixed identity and date, and no user or system configuration, so the commit ids
# depend only on the content
fixed_git() { # EPOCH git-args...
    local epoch=$1; shift
    GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null \
    GIT_AUTHOR_NAME="rampart bench" GIT_AUTHOR_EMAIL="bench@rampart.invalid" GIT_AUTHOR_DATE="@$epoch +0000" \
    GIT_COMMITTER_NAME="rampart bench" GIT_COMMITTER_EMAIL="bench@rampart.invalid" GIT_COMMITTER_DATE="@$epoch +0000" \
        git -c commit.gpgsign=false -c tag.gpgsign=false -c core.autocrlf=false -c init.defaultBranch=main "$@"
}

# edit_tenants DIR one|all: `one` changes the first tenant's spec.quota.cpu to another value
# within its tier, `all` moves every tenant's spec.quota.memory by 512Mi (down from 3Gi and up,
# up below that: free is 2Gi..4Gi, and the plugins of a tenant need at most 1Gi). Prints what it did.
edit_tenants() {
    python3 - "$1" "$2" <<'PY'
import os, re, sys
root, mode = sys.argv[1], sys.argv[2]
tdir = os.path.join(root, "tenants")
QUOTA = re.compile(r"(?m)^  quota:\n((?:    .*\n)*)")
TIER = re.compile(r"(?m)^  tier: *(\S+)$")
UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
def mebi(q):
    q = q.strip("\"'")
    for u, f in UNITS.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    raise ValueError(f"unexpected memory quantity {q!r}")
changed = 0
for name in sorted(os.listdir(tdir)):
    path = os.path.join(tdir, name)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    q = QUOTA.search(text)
    if not q:
        continue
    m = re.search(rf"(?m)^    {'cpu' if mode == 'one' else 'memory'}: *(\S+)$", q.group(1))
    if not m:
        continue
    old = m.group(1)
    if mode == "one":
        pick = {"free": ["1", "2"], "team": ["4", "8"], "enterprise": ["32", "64"]}[TIER.search(text).group(1)]
        new = pick[0] if old.strip("\"'") != pick[0] else pick[1]
    else:
        mi = mebi(old)
        new = f"{int(mi - 512) if mi >= 3072 else int(mi + 512)}Mi"
    a, b = q.start(1) + m.start(1), q.start(1) + m.end(1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:a] + new + text[b:])
    changed += 1
    if mode == "one":
        print(f"tenants/{name}: spec.quota.cpu {old} -> {new}")
        break
if mode == "all":
    print(f"{changed} tenants: spec.quota.memory moved by 512Mi")
if not changed:
    sys.exit("no tenant quota found to edit")
PY
}

# valid_corpus_for SIZE -> path of the valid repository (tags A, B, C), building it if missing or stale
valid_corpus_for() {
    local size=$1 src dir="$CORPORA/$1-valid" want tmp round epoch=1768478400
    src=$(corpus_for "$size")
    want="$(sha256sum "$BENCH/gen_corpus.py" | cut -c1-16) seed=$SEED src=$(git -C "$src" rev-parse HEAD) recipe=$RECIPE"
    if [ -d "$dir/.git" ] && [ "$(head -n 1 "$dir.stamp" 2>/dev/null)" = "$want" ]; then
        echo "$dir"; return
    fi
    say "building the valid corpus $dir (tags A, B, C)"
    rm -rf "$dir" "$dir.stamp"
    tmp="$dir.tmp"
    rm -rf "$tmp"; mkdir -p "$tmp"
    git -C "$src" archive --format=tar HEAD | tar -x -C "$tmp"

    # 1. the files the generator made invalid
    python3 - "$tmp" "$src.expected.json" <<'PY' >&2
import json, os, sys
root, manifest = sys.argv[1], sys.argv[2]
bad = [e["path"] for e in json.load(open(manifest))["invalid"]]
for p in bad:
    os.remove(os.path.join(root, p))
print(f"    removed the {len(bad)} files listed in {os.path.basename(manifest)}")
PY
    # 2. whatever rampart still reports (a removed file can leave dangling references behind)
    for round in 1 2 3 4 5 6; do
        if "$BIN" validate "$tmp" --format json > "$tmp.validate.json" 2>/dev/null; then
            echo "    rampart validate: valid after $((round - 1)) extra round(s)" >&2
            break
        fi
        [ "$round" -lt 6 ] || die "the corpus copy is still invalid after 5 rounds of removals (see $tmp.validate.json)"
        python3 - "$tmp" "$tmp.validate.json" "$round" <<'PY' >&2
import json, os, sys
root, report, rnd = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(report))
files = sorted({d["file"] for d in r["diagnostics"] if d.get("severity") == "error" and d.get("file")})
if not files:
    sys.exit(f"rampart validate fails but names no file: {r['summary']}")
protected = {"rampart.yaml"}
if protected & set(files):
    sys.exit(f"rampart validate reports rampart.yaml itself: {[d['message'] for d in r['diagnostics'] if d.get('file') == 'rampart.yaml']}")
codes = {}
for d in r["diagnostics"]:
    if d.get("severity") == "error":
        codes[d["code"]] = codes.get(d["code"], 0) + 1
for f in files:
    os.remove(os.path.join(root, f))
print(f"    round {rnd}: removed {len(files)} more files ({', '.join(f'{c} x{n}' for c, n in sorted(codes.items()))})")
PY
    done
    rm -f "$tmp.validate.json"

    # 3. commit A, then B and C on top of it (not on top of each other)
    fixed_git "$epoch" -C "$tmp" init -q
    fixed_git "$epoch" -C "$tmp" add -A
    fixed_git "$epoch" -C "$tmp" commit -q -m "A: valid $size corpus (seed $SEED)"
    fixed_git "$epoch" -C "$tmp" tag A


    # B: one tenant's cpu (branch one-tenant), C: every tenant's memory (branch all-tenants)
    local what
    fixed_git "$epoch" -C "$tmp" checkout -q -b one-tenant
    what=$(edit_tenants "$tmp" one) || die "editing for B failed"
    fixed_git $((epoch + 3600)) -C "$tmp" commit -q -a -m "B: $what"
    fixed_git $((epoch + 3600)) -C "$tmp" tag B
    echo "    B: $what" >&2
    fixed_git "$epoch" -C "$tmp" checkout -q main
    fixed_git "$epoch" -C "$tmp" checkout -q -b all-tenants
    what=$(edit_tenants "$tmp" all) || die "editing for C failed"
    fixed_git $((epoch + 7200)) -C "$tmp" commit -q -a -m "C: $what"
    fixed_git $((epoch + 7200)) -C "$tmp" tag C
    echo "    C: $what" >&2
    fixed_git "$epoch" -C "$tmp" checkout -q main
    fixed_git "$epoch" -C "$tmp" repack -adq
    for rev in A B C; do
        "$BIN" validate "$tmp" --rev "$rev" --format json > "$tmp.validate.json" 2>&1 \
            || die "revision $rev of the valid corpus does not validate (see $tmp.validate.json)"
    done
    rm -f "$tmp.validate.json"
    mv "$tmp" "$dir"
    {
        echo "$want"
        for rev in A B C; do echo "$rev $(git -C "$dir" rev-parse "$rev^{commit}") $(git -C "$dir" log -1 --format=%s "$rev")"; done
        echo "files $(git -C "$dir" ls-files | wc -l)"
    } > "$dir.stamp"
    echo "$dir"
}
