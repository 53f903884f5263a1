#!/usr/bin/env python3
"""Deterministic generator of rampart config-repo corpora for benchmarks.

    python3 bench/gen_corpus.py --size S|M|L --out DIR [--seed 42] [--force]

Writes DIR as a complete git repository (branch `main`, one commit with fixed author,
committer and dates, so the same seed gives the same commit id; objects packed) holding:

    rampart.yaml   kind Settings (platform 1.4.0, limits raised for L)
    teams/         about tenants/20 teams, members are GitHub logins
    tenants/       S 1k, M 10k, L 50k, one tenant per file
    plugins/       S 100, M 1k, L 5k
    rollouts/      S 50, M 500, L 2.5k

Every file is a single YAML document. Objects cross-reference each other (tenant ->
teams, plugins, other tenants; plugin -> lower-indexed plugins with satisfiable Cargo
ranges; rollout -> plugin and tenants by name or label selector) and about 2 % of the
files are deliberately invalid (schema, cross-reference, quota above tier, bad
duration, rollout steps not increasing), one error per file, placed with the seeded
RNG. Valid objects never reference an invalid one, so an error never cascades.

The list of invalid files with their expected error is written next to the repo, in
DIR.expected.json (outside the repo, so it is not part of the corpus).

Only the Python standard library is used; YAML is emitted by hand (block style,
strings quoted whenever a YAML 1.1 or 1.2 parser could read them as anything else).
"""

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

SIZES = {
    #      tenants plugins rollouts
    "S": (1_000, 100, 50),
    "M": (10_000, 1_000, 500),
    "L": (50_000, 5_000, 2_500),
}
PLATFORM_VERSION = "1.4.0"
INVALID_RATE = 0.02
LARGE_CONFIG_RATE = 0.0125  # tenants with a ~50 KB plugin config (about 1 % of all files, so p99 ~ 50 KB)
HUGE_FILES = 3  # tenants with a ~1 MB plugin config
COMMIT_EPOCH = 1768478400  # 2026-01-15T12:00:00Z, author and committer date of the one commit
API = "rampart.dev/v1"

# tier -> (cpu choices, memory choices, pods range, storage choices); all within the
# default bounds free 2/4Gi/20/10Gi, team 16/64Gi/200/500Gi, enterprise 256/1Ti/5000/20Ti
TIERS = {
    "free": (["1", "1500m", "2", 2], ["2Gi", "3Gi", "4Gi", "3072Mi"], (5, 20), ["1Gi", "5Gi", "10Gi"]),
    "team": (["2", "4", "8", "16", 8, "12000m"], ["8Gi", "16Gi", "32Gi", "64Gi"], (20, 200), ["50Gi", "100Gi", "250Gi", "500Gi"]),
    "enterprise": (["16", "32", "64", "128", "256", 64], ["64Gi", "128Gi", "256Gi", "512Gi", "1Ti"], (200, 5000), ["1Ti", "5Ti", "10Ti", "20Ti"]),
}
# a value above each tier's bound, per field (for the quota-above-tier errors)
ABOVE_TIER = {
    "free": {"cpu": "4", "memory": "8Gi", "pods": 50, "storage": "20Gi"},
    "team": {"cpu": "32", "memory": "128Gi", "pods": 400, "storage": "1Ti"},
    "enterprise": {"cpu": "512", "memory": "2Ti", "pods": 10000, "storage": "40Ti"},
}
# per-plugin resources; 8 plugins at most sum to 800m / 1Gi, below every tier's smallest quota
PLUGIN_CPU = ["10m", "25m", "50m", "100m"]
PLUGIN_MEM = ["32Mi", "64Mi", "96Mi", "128Mi"]

WORDS = (
    "alpha amber apex arctic atlas aurora beacon birch blaze bolt breeze canyon cedar comet coral "
    "cosmos crimson crystal delta drift ember falcon fern flint forge frost galaxy garnet glacier "
    "granite harbor hawk horizon indigo iris jade jasper juniper kestrel lagoon lark lotus lunar "
    "maple marble meadow meteor mist nebula nimbus oak onyx orbit orchid pebble pine pixel polar "
    "prairie prism quartz quasar raven reef ridge river ruby sage sapphire sierra slate solar "
    "spruce star stone storm summit tango thunder tide timber topaz tundra umber valley vapor "
    "velvet willow zenith zephyr"
).split()
DOMAINS = (
    "payments billing search checkout identity catalog shipping ledger inventory analytics "
    "pricing reviews orders media growth fraud support ads mobile data infra security docs "
    "notify gateway"
).split()
PLUGIN_KINDS = (
    "techdocs catalog scaffolder kubernetes sonarqube pagerduty grafana argocd github-actions "
    "jenkins lighthouse cost-insights todo tech-radar explore search api-docs sentry datadog "
    "jira vault opsgenie gitlab linguist airbrake newrelic splunk dynatrace rollbar badges"
).split()
PUBLISHERS = ["backstage", "roadie", "spotify", "acme-platform", "community.example", "janus-idp", "redhat"]
SCOPES = {
    "backstage": "@backstage",
    "roadie": "@roadiehq",
    "spotify": "@spotify",
    "acme-platform": "@acme",
    "community.example": "@backstage-community",
    "janus-idp": "@janus-idp",
    "redhat": "@redhat",
}
PERMISSIONS = [
    "catalog.entity.read", "catalog.entity.refresh", "catalog.location.read", "scaffolder.action.execute",
    "scaffolder.template.parameter.read", "techdocs.read", "kubernetes.proxy", "kubernetes.clusters.read",
    "search.read", "todo.read", "proxy:pagerduty", "proxy:grafana", "proxy:sonarqube", "metrics:read",
]
LICENSES = ["Apache-2.0", "MIT", "BSD-3-Clause", "MPL-2.0"]
ENVS = ["prod", "staging", "dev"]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1"]
PAUSES = ["30s", "1m", "2m", "5m", "10m", "15m", "30m", "1h", "1h30m", "2h"]
FORS = ["1m", "2m", "5m", "10m", "15m"]
INTERVALS = ["15s", "30s", "1m", "2m"]
BAD_DURATIONS = ["5 minutes", "1m30h", "90x", "1h1h", "m5", "10 s", "5mins", "1.5h", "-5m", "30sec"]


# --------------------------------------------------------------------------- YAML


_PLAIN = re.compile(r"^[A-Za-z/][A-Za-z0-9_./@+:-]*$")
_PLAIN_SPACED = re.compile(r"^[A-Za-z][A-Za-z0-9_.,()'/ -]*[A-Za-z0-9_.)]$")
_PLAIN_DIGIT = re.compile(r"^(\d+\.\d+\.\d+|\d+(m|k|M|G|T|Ki|Mi|Gi|Ti)|(\d+(d|h|ms|m|s))+)$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"}


def scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    s = v
    if s.lower() in _RESERVED:
        return json.dumps(s)
    if _PLAIN_DIGIT.match(s):
        return s
    if _PLAIN.match(s) and not s.endswith(":"):
        return s
    if _PLAIN_SPACED.match(s) and ": " not in s and " #" not in s:
        return s
    return json.dumps(s)


def flow_scalar(v):
    """A scalar inside `[...]`: flow indicators force quotes."""
    s = scalar(v)
    if isinstance(v, str) and not s.startswith('"') and any(c in s for c in ",[]{}#"):
        return json.dumps(v)
    return s


def _is_scalar(v):
    return not isinstance(v, (dict, list))


def emit(v, ind, out):
    """Append block-style YAML lines for the dict or list `v` at indentation `ind`."""
    pad = " " * ind
    if isinstance(v, dict):
        for k, x in v.items():
            key = scalar(k)
            if _is_scalar(x):
                out.append(f"{pad}{key}: {scalar(x)}")
            elif not x:
                out.append(f"{pad}{key}: {'{}' if isinstance(x, dict) else '[]'}")
            elif isinstance(x, list) and all(_is_scalar(e) for e in x) and len(x) <= 4 and sum(len(str(e)) for e in x) < 60:
                out.append(f"{pad}{key}: [{', '.join(flow_scalar(e) for e in x)}]")
            else:
                out.append(f"{pad}{key}:")
                emit(x, ind + 2, out)
    else:
        for x in v:
            if _is_scalar(x):
                out.append(f"{pad}- {scalar(x)}")
            elif not x:
                out.append(f"{pad}- {'{}' if isinstance(x, dict) else '[]'}")
            elif isinstance(x, dict):
                sub = []
                emit(x, ind + 2, sub)
                sub[0] = f"{pad}- " + sub[0][ind + 2:]
                out.extend(sub)
            else:
                out.append(f"{pad}-")
                emit(x, ind + 2, out)


def to_yaml(doc, comment=None):
    out = []
    if comment:
        out.append(f"# {comment}")
    emit(doc, 0, out)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- generator


def package_at(package, version):
    """The package reference at another version (as rampart's `compile::package_at`)."""
    if package.startswith("oci://"):
        return package.rsplit(":", 1)[0] + ":" + version
    return package.rsplit("@", 1)[0] + "@" + version


def sri(*parts):
    return "sha256-" + base64.b64encode(hashlib.sha256("/".join(parts).encode()).digest()).decode()


def satisfying_range(rng, version):
    """A Cargo-semver range that `version` and its next patch release both satisfy."""
    M, m, p = version
    choices = [f"^{M}.{m}", f"^{M}.{m}.{rng.randint(0, p)}", f"~{M}.{m}", f">={M}.{m}.0, <{M + 1}.0.0"]
    if M >= 1:
        choices += [f"^{M}", f">={M}.0.0"]
    return rng.choice(choices)


PLATFORM_RANGES = ["^1", "^1.2", "^1.4", ">=1.0, <2", "~1.4", ">=1.3.0", "^1.4.0", ">=1.1.0, <2.0.0"]


def config_blob(rng, target_bytes, owner):
    """A Backstage-like plugin config of about `target_bytes` bytes of YAML."""
    locations = []
    size = 0
    i = 0
    while size < target_bytes:
        repo = f"{rng.choice(DOMAINS)}-{rng.choice(WORDS)}-{i:05d}"
        loc = {
            "type": "url",
            "target": f"https://github.com/acme/{repo}/blob/main/catalog-info.yaml",
            "owner": owner,
            "rules": [{"allow": ["Component", "API", "Resource"]}],
        }
        if i % 3 == 0:
            loc["tags"] = [rng.choice(DOMAINS), rng.choice(ENVS)]
        locations.append(loc)
        size += 200 + len(repo) + len(owner)
        i += 1
    return {
        "catalog": {
            "refreshIntervalSeconds": 300,
            "rules": [{"allow": ["Component", "System", "API", "Resource", "Location"]}],
            "locations": locations,
        }
    }


class Corpus:
    def __init__(self, size, seed):
        self.rng = random.Random(seed)
        self.size = size
        self.n_tenants, self.n_plugins, self.n_rollouts = SIZES[size]
        self.n_teams = max(10, self.n_tenants // 20)
        self.files = {}  # path -> text
        self.expected = []  # {path, category, code, detail}

    # names ------------------------------------------------------------------

    def make_names(self):
        r = self.rng
        self.team_names = ["platform"] + [f"{r.choice(DOMAINS)}-{r.choice(WORDS)}-{i:04d}" for i in range(1, self.n_teams)]
        self.plugin_names = [f"{r.choice(PLUGIN_KINDS)}-{r.choice(WORDS)}-{i:04d}" for i in range(self.n_plugins)]
        self.tenant_names = [f"{r.choice(DOMAINS)}-{r.choice(WORDS)}-{i:05d}" for i in range(self.n_tenants)]
        self.rollout_names = [f"rollout-{r.choice(WORDS)}-{i:04d}" for i in range(self.n_rollouts)]
        self.logins = [f"{r.choice(WORDS)}-{r.choice(WORDS)}{i}" if i % 3 else f"{r.choice(WORDS).capitalize()}Dev{i}" for i in range(max(200, self.n_teams * 4))]

    def pick_invalid(self):
        """Choose ~2 % of the files of each kind (at least 3 per kind; rampart.yaml and the
        `platform` team excepted) at random, and give each an error type: per kind, the types
        are dealt from a shuffled deck, so every type shows up once a kind has enough invalid
        files. Rollouts deal the semantic types (bad duration, steps) first, since S has few."""
        r = self.rng
        self.invalid = {}
        decks = {
            "team": ["unknown-field", "wrong-type", "bad-login"],
            "tenant": ["unknown-field", "wrong-type", "bad-enum-tier", "bad-enum-isolation", "unknown-team",
                       "unknown-plugin", "unknown-tenant", "quota-above-tier"],
            "plugin": ["unknown-field", "wrong-type", "bad-enum", "unknown-plugin"],
            "rollout": ["unknown-field", "bad-enum", "wrong-type", "unknown-plugin", "unknown-tenant",
                        "bad-duration", "steps-not-increasing"],
        }
        for kind, n, lo in (("team", self.n_teams, 1), ("tenant", self.n_tenants, 0),
                            ("plugin", self.n_plugins, 0), ("rollout", self.n_rollouts, 0)):
            k = max(3, round(n * INVALID_RATE))
            deck = list(decks[kind])
            r.shuffle(deck)
            if kind == "rollout":
                first = ["bad-duration", "steps-not-increasing"]
                r.shuffle(first)
                deck = first + [d for d in deck if d not in first]
            for j, i in enumerate(sorted(r.sample(range(lo, n), k), key=lambda _: r.random())):
                self.invalid[(kind, i)] = deck[j % len(deck)]
        self.valid_teams = [i for i in range(self.n_teams) if ("team", i) not in self.invalid]
        self.valid_plugins = [i for i in range(self.n_plugins) if ("plugin", i) not in self.invalid]
        self.valid_tenants = [i for i in range(self.n_tenants) if ("tenant", i) not in self.invalid]

    def expect(self, path, category, code, detail):
        self.expected.append({"path": path, "category": category, "code": code, "detail": detail})

    # plugins ----------------------------------------------------------------

    def gen_plugins(self):
        r = self.rng
        valid_set = set(self.valid_plugins)
        self.plugin_version = []
        self.plugin_package = {}
        self.closure = []  # plugin index -> frozenset of plugin indexes it needs (itself included)
        valid_sorted = []  # valid plugin indexes generated so far
        for i, name in enumerate(self.plugin_names):
            M = r.choice([0, 1, 1, 1, 2, 2, 3, 4, 5])
            m = r.randint(1 if M == 0 else 0, 20)
            p = r.randint(0, 30)
            self.plugin_version.append((M, m, p))
            version = f"{M}.{m}.{p}"
            publisher = r.choice(PUBLISHERS)
            requires = {}
            if r.random() < 0.7:
                requires["platform"] = r.choice(PLATFORM_RANGES)
            deps = set()
            if valid_sorted and r.random() < 0.35:
                for _ in range(r.randint(1, 3)):
                    j = r.choice(valid_sorted[-200:] if r.random() < 0.5 else valid_sorted)
                    if len(self.closure[j] | deps) < 4 and j not in deps:
                        deps |= self.closure[j]
                        requires.setdefault("plugins", {})[self.plugin_names[j]] = satisfying_range(r, self.plugin_version[j])
            self.closure.append(frozenset(deps | {i}))
            spec = {
                "publisher": publisher,
                "version": version,
                "artifact": {
                    "package": f"{SCOPES[publisher]}/plugin-{name}@{version}" if r.random() < 0.8
                    else f"oci://registry.example.com/plugins/{name}:{version}",
                    "integrity": sri(name, version),
                },
            }
            # (a rollout's new version is this package at another version: see rollouts)
            self.plugin_package[i] = spec["artifact"]["package"]
            if requires:
                spec["requires"] = requires
            spec["permissions"] = r.sample(PERMISSIONS, r.randint(1, 4))
            spec["resources"] = {"cpu": r.choice(PLUGIN_CPU), "memory": r.choice(PLUGIN_MEM)}
            spec["maintainers"] = r.randint(1, 40)
            spec["adoption"] = r.randint(0, 5000)
            spec["lastRelease"] = f"{r.choice([2023, 2024, 2025])}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
            if r.random() < 0.2:
                spec["advisories"] = [
                    {"id": f"GHSA-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}",
                     "severity": r.choice(["low", "moderate", "high", "critical"]), "fixed": True}
                    for _ in range(r.randint(1, 2))
                ]
            spec["quality"] = {"tests": r.random() < 0.8, "docs": r.random() < 0.7, "license": r.choice(LICENSES)}
            doc = {
                "apiVersion": API,
                "kind": "Plugin",
                "metadata": {
                    "name": name,
                    "labels": {"category": name.split("-")[0], "publisher": publisher},
                    "description": f"{name.split('-')[0]} plugin for the developer portal",
                },
                "spec": spec,
            }
            path = f"plugins/{name}.yaml"
            if ("plugin", i) in self.invalid:
                self.break_plugin(path, doc, self.invalid[("plugin", i)])
            else:
                valid_sorted.append(i)
            self.files[path] = doc
        assert set(valid_sorted) == valid_set

    def break_plugin(self, path, doc, kind):
        r = self.rng
        spec = doc["spec"]
        if kind == "unknown-field":
            spec["homepage"] = "https://example.com/" + doc["metadata"]["name"]
            self.expect(path, "schema", "unknown-field", "/spec/homepage")
        elif kind == "wrong-type":
            spec["maintainers"] = "many"
            self.expect(path, "schema", "wrong-type", "/spec/maintainers")
        elif kind == "bad-enum":
            spec["advisories"] = [{"id": "CVE-2025-12345", "severity": "urgent", "fixed": False}]
            self.expect(path, "schema", "bad-enum", "/spec/advisories/0/severity")
        else:
            ghost = f"{r.choice(PLUGIN_KINDS)}-ghost-{r.randint(0, 9999):04d}"
            spec.setdefault("requires", {}).setdefault("plugins", {})[ghost] = "^1.0"
            self.expect(path, "xref", "unknown-plugin", f"requires {ghost}")

    # teams ------------------------------------------------------------------

    def gen_teams(self):
        r = self.rng
        for i, name in enumerate(self.team_names):
            members = r.sample(self.logins, r.randint(3, 12))
            doc = {
                "apiVersion": API,
                "kind": "Team",
                "metadata": {"name": name, "labels": {"org": r.choice(DOMAINS)}},
                "spec": {"members": members, "contact": f"#team-{name}"},
            }
            path = f"teams/{name}.yaml"
            if ("team", i) in self.invalid:
                kind = self.invalid[("team", i)]
                if kind == "unknown-field":
                    doc["spec"]["lead"] = members[0]
                    self.expect(path, "schema", "unknown-field", "/spec/lead")
                elif kind == "wrong-type":
                    doc["spec"]["members"] = members[0]
                    self.expect(path, "schema", "wrong-type", "/spec/members")
                else:
                    doc["spec"]["members"][0] = members[0] + "_x"
                    self.expect(path, "schema", "pattern", "/spec/members/0")
            self.files[path] = doc

    # tenants ----------------------------------------------------------------

    def gen_tenants(self):
        r = self.rng
        n_groups = max(4, self.n_tenants // 50)
        self.group_names = [f"g{g:04d}" for g in range(n_groups)]
        # each group has a core plugin that all of its tenants enable (selector rollouts use it)
        self.group_core = r.sample(self.valid_plugins, min(n_groups, len(self.valid_plugins)))
        while len(self.group_core) < n_groups:
            self.group_core.append(r.choice(self.valid_plugins))
        self.enabled_by = {}  # plugin index -> [valid tenant index]
        self.group_of = {}
        large = set(r.sample(range(self.n_tenants), round(self.n_tenants * LARGE_CONFIG_RATE)))
        huge = set(r.sample(self.valid_tenants, HUGE_FILES))
        large -= huge
        valid_tenants = self.valid_tenants
        for i, name in enumerate(self.tenant_names):
            g = r.randrange(n_groups)
            tier = r.choices(["free", "team", "enterprise"], [50, 40, 10])[0]
            cpus, mems, pods, stors = TIERS[tier]
            isolation = {
                "free": lambda: r.choice(["shared", "shared", "namespace"]),
                "team": lambda: r.choice(["namespace", "namespace", "shared"]),
                "enterprise": lambda: r.choice(["namespace", "dedicated-nodes"]),
            }[tier]()
            # plugins: the group's core plugin, then random extras, closed under `requires`
            target = r.choices(range(1, 9), [10, 20, 20, 16, 12, 10, 7, 5])[0]
            chosen = []
            have = set()
            for p in [self.group_core[g]] + [r.choice(self.valid_plugins) for _ in range(target + 2)]:
                need = self.closure[p]
                if need <= have:
                    continue
                if len(have | need) > max(target, len(self.closure[self.group_core[g]])):
                    continue
                for q in sorted(need):
                    if q not in have:
                        have.add(q)
                        chosen.append(q)
            assert len(chosen) <= 8
            plugins = []
            # a plugin another one needs stays enabled (a disabled requirement is R631), and so
            # does the group's core plugin (rollouts select by group)
            needed = {d for q in chosen for d in self.closure[q] if d != q} | {self.group_core[g]}
            disabled = set()
            for q in chosen:
                entry = {"name": self.plugin_names[q]}
                if r.random() < 0.15:
                    entry["config"] = {"theme": r.choice(["light", "dark"]), "refreshMinutes": r.choice([5, 15, 60])}
                if r.random() < 0.03 and q not in needed:
                    entry["disabled"] = True
                    disabled.add(q)
                plugins.append(entry)
            owners = [self.team_names[t] for t in r.sample(self.valid_teams, r.choices([1, 2, 3], [70, 22, 8])[0])]
            if i in large or i in huge:
                target_bytes = 1_000_000 if i in huge else int(min(max(r.lognormvariate(10.8, 0.25), 30_000), 90_000))
                k = r.randrange(len(plugins))
                plugins[k]["config"] = config_blob(r, target_bytes, owners[0])
            spec = {
                "owners": owners,
                "tier": tier,
                "isolation": isolation,
                "quota": {"cpu": r.choice(cpus), "memory": r.choice(mems), "pods": r.randint(*pods), "storage": r.choice(stors)},
            }
            n_allow = r.choices([0, 1, 2, 3, 4], [40, 25, 15, 12, 8])[0]
            if n_allow:
                allow = []
                for t in r.sample(valid_tenants, min(n_allow + 1, len(valid_tenants))):
                    if t != i and len(allow) < n_allow:
                        allow.append(self.tenant_names[t])
                if allow:
                    spec["network"] = {"allowFrom": allow}
            spec["plugins"] = plugins
            labels = {"portal-group": self.group_names[g], "env": r.choice(ENVS), "region": r.choice(REGIONS),
                      "cost-center": f"cc-{r.randint(1000, 9999)}"}
            doc = {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name, "labels": labels}, "spec": spec}
            path = f"tenants/{name}.yaml"
            if ("tenant", i) in self.invalid:
                del labels["portal-group"]  # selectors never match an invalid tenant
                self.break_tenant(path, doc, tier, self.invalid[("tenant", i)])
            else:
                self.group_of[i] = g
                for q in chosen:
                    if q not in disabled:  # rollouts target tenants that run the plugin
                        self.enabled_by.setdefault(q, []).append(i)
            self.files[path] = doc

    def break_tenant(self, path, doc, tier, kind):
        r = self.rng
        spec = doc["spec"]
        if kind == "unknown-field":
            spec["quotas"] = dict(spec["quota"])
            self.expect(path, "schema", "unknown-field", "/spec/quotas")
        elif kind == "wrong-type":
            spec["quota"]["pods"] = "twenty"
            self.expect(path, "schema", "wrong-type", "/spec/quota/pods")
        elif kind == "bad-enum-tier":
            spec["tier"] = "gold"
            self.expect(path, "schema", "bad-enum", "/spec/tier")
        elif kind == "bad-enum-isolation":
            spec["isolation"] = "vm"
            self.expect(path, "schema", "bad-enum", "/spec/isolation")
        elif kind == "unknown-team":
            ghost = f"{r.choice(DOMAINS)}-ghost-{r.randint(0, 9999):04d}"
            spec["owners"].append(ghost)
            self.expect(path, "xref", "unknown-team", ghost)
        elif kind == "unknown-plugin":
            ghost = f"{r.choice(PLUGIN_KINDS)}-ghost-{r.randint(0, 9999):04d}"
            spec["plugins"].append({"name": ghost})
            self.expect(path, "xref", "unknown-plugin", ghost)
        elif kind == "unknown-tenant":
            ghost = f"{r.choice(DOMAINS)}-ghost-{r.randint(0, 99999):05d}"
            spec.setdefault("network", {}).setdefault("allowFrom", []).append(ghost)
            self.expect(path, "xref", "unknown-tenant", ghost)
        else:
            field = r.choice(["cpu", "memory", "pods", "storage"])
            spec["quota"][field] = ABOVE_TIER[tier][field]
            self.expect(path, "quota", "quota-above-tier", f"/spec/quota/{field}")

    # rollouts ---------------------------------------------------------------

    def gen_rollouts(self):
        r = self.rng
        used_plugins = set()
        groups = list(range(len(self.group_names)))
        r.shuffle(groups)
        free_groups = [g for g in groups if self.group_core[g] in self.enabled_by]
        enabled_plugins = sorted(self.enabled_by)
        for i, name in enumerate(self.rollout_names):
            tenants = {}
            mode = r.choices(["names", "selector", "both"], [55, 30, 15])[0]
            plugin = None
            if mode != "names":
                while free_groups:
                    g = free_groups.pop()
                    if self.group_core[g] not in used_plugins:
                        plugin = self.group_core[g]
                        tenants["selector"] = {"matchLabels": {"portal-group": self.group_names[g]}}
                        break
            if plugin is None:
                mode = "names"
                for _ in range(1000):
                    cand = r.choice(enabled_plugins)
                    if cand not in used_plugins:
                        plugin = cand
                        break
                else:
                    plugin = r.choice(enabled_plugins)
            used_plugins.add(plugin)
            if mode in ("names", "both"):
                pool = self.enabled_by[plugin]
                tenants["names"] = [self.tenant_names[t] for t in r.sample(pool, min(len(pool), r.randint(1, 20)))]
            M, m, p = self.plugin_version[plugin]
            weights = r.choice([[10, 25, 50, 100], [5, 20, 50, 100], [25, 100], [10, 50, 100], [1, 5, 10, 25, 50, 75, 100]])
            strategy = r.choices(["canary", "blueGreen", "rolling", "instant"], [70, 10, 15, 5])[0]
            steps = [{"weight": w, "pause": r.choice(PAUSES)} if w < 100 else {"weight": w} for w in weights]
            slos = [{"name": "error-rate",
                     "query": f'sum(rate(http_requests_total{{plugin="{self.plugin_names[plugin]}",code=~"5.."}}[5m])) / sum(rate(http_requests_total{{plugin="{self.plugin_names[plugin]}"}}[5m]))',
                     "max": r.choice([0.01, 0.02, 0.05]), "for": r.choice(FORS), "minRequests": r.choice([50, 100, 500])}]
            # (after the draws above, so the corpus stays the same draw for draw)
            slos[0]["requests"] = f'sum(increase(http_requests_total{{plugin="{self.plugin_names[plugin]}"}}[5m]))'
            if r.random() < 0.6:
                slos.append({"name": "latency-p99",
                             "query": f'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{plugin="{self.plugin_names[plugin]}"}}[5m])))',
                             "max": r.choice([0.5, 1.0, 2.0]), "for": r.choice(FORS)})
            if r.random() < 0.3:
                slos.append({"name": "availability", "query": f'avg_over_time(up{{job="portal",plugin="{self.plugin_names[plugin]}"}}[5m])',
                             "min": 0.99, "for": r.choice(FORS)})
            spec = {
                "plugin": self.plugin_names[plugin],
                "toVersion": f"{M}.{m}.{p + 1}",
                # the new version's own artifact (unsigned, as the corpus's plugins are)
                "artifact": {
                    "package": package_at(self.plugin_package[plugin], f"{M}.{m}.{p + 1}"),
                    "integrity": sri(self.plugin_names[plugin], f"{M}.{m}.{p + 1}"),
                },
                "tenants": tenants,
                "strategy": strategy,
                "steps": steps,
                "slos": slos,
                "analysis": {"interval": r.choice(INTERVALS), "inconclusiveLimit": r.choice([3, 5, 10])},
                "onViolation": r.choice(["revert", "revert", "pause"]),
            }
            doc = {"apiVersion": API, "kind": "Rollout",
                   "metadata": {"name": name, "labels": {"plugin": self.plugin_names[plugin]}}, "spec": spec}
            path = f"rollouts/{name}.yaml"
            if ("rollout", i) in self.invalid:
                self.break_rollout(path, doc, self.invalid[("rollout", i)])
            self.files[path] = doc

    def break_rollout(self, path, doc, kind):
        r = self.rng
        spec = doc["spec"]
        if kind == "unknown-field":
            spec["maxSurge"] = 1
            self.expect(path, "schema", "unknown-field", "/spec/maxSurge")
        elif kind == "bad-enum":
            spec["strategy"] = "linear"
            self.expect(path, "schema", "bad-enum", "/spec/strategy")
        elif kind == "wrong-type":
            spec["steps"][0]["weight"] = str(spec["steps"][0]["weight"])
            self.expect(path, "schema", "wrong-type", "/spec/steps/0/weight")
        elif kind == "unknown-plugin":
            ghost = f"{r.choice(PLUGIN_KINDS)}-ghost-{r.randint(0, 9999):04d}"
            spec["plugin"] = ghost
            doc["metadata"]["labels"]["plugin"] = ghost
            self.expect(path, "xref", "unknown-plugin", ghost)
        elif kind == "unknown-tenant":
            ghost = f"{r.choice(DOMAINS)}-ghost-{r.randint(0, 99999):05d}"
            spec["tenants"].setdefault("names", []).append(ghost)
            self.expect(path, "xref", "unknown-tenant", ghost)
        elif kind == "bad-duration":
            bad = r.choice(BAD_DURATIONS)
            where = r.choice(["steps", "slo", "analysis"])
            if where == "steps":
                spec["steps"][0]["pause"] = bad
                ptr = "/spec/steps/0/pause"
            elif where == "slo":
                spec["slos"][0]["for"] = bad
                ptr = "/spec/slos/0/for"
            else:
                spec["analysis"]["interval"] = bad
                ptr = "/spec/analysis/interval"
            self.expect(path, "duration", "bad-duration", f"{ptr} = {bad!r}")
        else:
            spec["steps"] = [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "5m"},
                             {"weight": 25, "pause": "5m"}, {"weight": 100}]
            self.expect(path, "steps", "steps-not-increasing", "/spec/steps/2/weight")

    # settings ---------------------------------------------------------------

    def gen_settings(self):
        self.files["rampart.yaml"] = {
            "apiVersion": API,
            "kind": "Settings",
            "spec": {
                "platform": {"version": PLATFORM_VERSION},
                "limits": {"maxFiles": 200_000, "maxTotalBytes": 1_073_741_824},
            },
        }

    def generate(self):
        self.make_names()
        self.pick_invalid()
        self.gen_settings()
        self.gen_teams()
        self.gen_plugins()
        self.gen_tenants()
        self.gen_rollouts()
        assert len(self.expected) == len(self.invalid), (len(self.expected), len(self.invalid))


def git_env(out):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": out,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_COUNT": "2",  # no background `gc --auto` racing with the caller
        "GIT_CONFIG_KEY_0": "gc.auto",
        "GIT_CONFIG_VALUE_0": "0",
        "GIT_CONFIG_KEY_1": "maintenance.auto",
        "GIT_CONFIG_VALUE_1": "false",
        "TZ": "UTC",
        "LC_ALL": "C",
    }


def git(out, *args):
    return subprocess.run(["git", "-C", out, *args], env=git_env(out), check=True,
                          capture_output=True, text=True).stdout


class FastImport:
    """Streams the files into `git fast-import` while they are written: the objects land
    in one pack (as in a clone) without 60k loose objects, and git works on the other core."""

    def __init__(self, out):
        git(out, "init", "-q", "-b", "main")
        self.out = out
        self.proc = subprocess.Popen(["git", "-C", out, "fast-import", "--quiet", "--date-format=raw"],
                                     stdin=subprocess.PIPE, env=git_env(out))
        self.paths = []

    def blob(self, path, data):
        self.paths.append(path)
        self.proc.stdin.write(b"blob\nmark :%d\ndata %d\n" % (len(self.paths), len(data)) + data + b"\n")

    def commit(self, message):
        who = b"rampart bench <bench@rampart.invalid> %d +0000" % COMMIT_EPOCH
        msg = message.encode() + b"\n"
        w = self.proc.stdin.write
        w(b"commit refs/heads/main\nauthor " + who + b"\ncommitter " + who + b"\ndata %d\n" % len(msg) + msg)
        for i, p in enumerate(self.paths, 1):
            w(b"M 100644 :%d %s\n" % (i, p.encode()))
        w(b"\ndone\n")
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            sys.exit("gen_corpus: git fast-import failed")
        git(self.out, "read-tree", "HEAD")  # index = the commit; then record the files' stat info
        git(self.out, "update-index", "-q", "--refresh")
        return git(self.out, "rev-parse", "HEAD").strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--out", required=True, help="directory to create (a git repo)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--force", action="store_true", help="replace DIR if it exists")
    ap.add_argument("--manifest", help="where to write the expected-errors JSON (default DIR.expected.json)")
    ap.add_argument("--no-git", action="store_true", help="write the files only (no git init/commit)")
    args = ap.parse_args()

    out = os.path.abspath(args.out.rstrip("/"))
    if os.path.exists(out) and os.listdir(out):
        if not args.force:
            sys.exit(f"gen_corpus: {out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    t0 = time.monotonic()
    c = Corpus(args.size, args.seed)
    c.generate()
    t_gen = time.monotonic() - t0

    os.makedirs(out, exist_ok=True)
    for d in ("teams", "tenants", "plugins", "rollouts"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    fi = None if args.no_git else FastImport(out)
    sizes = []
    header = f"generated by bench/gen_corpus.py --size {args.size} --seed {args.seed}"
    for path, doc in c.files.items():
        text = to_yaml(doc, header if path == "rampart.yaml" else None).encode()
        with open(os.path.join(out, path), "wb") as f:
            f.write(text)
        if fi:
            fi.blob(path, text)
        sizes.append(len(text))
    t_write = time.monotonic() - t0 - t_gen

    commit = fi.commit(f"bench corpus {args.size} (seed {args.seed})") if fi else None
    t_git = time.monotonic() - t0 - t_gen - t_write

    by_cat = {}
    for e in c.expected:
        by_cat[e["category"]] = by_cat.get(e["category"], 0) + 1
    manifest = args.manifest or out + ".expected.json"
    with open(manifest, "w") as f:
        json.dump({"size": args.size, "seed": args.seed, "commit": commit, "files": len(sizes),
                   "bytes": sum(sizes), "invalid": sorted(c.expected, key=lambda e: e["path"])}, f, indent=1)
        f.write("\n")

    sizes.sort()
    pct = lambda q: sizes[min(len(sizes) - 1, int(q * len(sizes)))]
    counts = {k: sum(1 for p in c.files if p.startswith(k + "/")) for k in ("teams", "tenants", "plugins", "rollouts")}
    print(f"corpus {args.size} (seed {args.seed}) -> {out}")
    print(f"  files    {len(sizes)}  (rampart.yaml 1, " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    print(f"  bytes    {sum(sizes)}  ({sum(sizes) / 2**20:.1f} MiB; p50 {pct(0.5)} B, p90 {pct(0.9)} B, "
          f"p99 {pct(0.99)} B, max {sizes[-1]} B)")
    print(f"  invalid  {len(c.expected)}  (" + ", ".join(f"{k} {v}" for k, v in sorted(by_cat.items())) +
          f"; schema-detectable {by_cat.get('schema', 0)})")
    print(f"  commit   {commit}")
    print(f"  manifest {manifest}")
    print(f"  time     {time.monotonic() - t0:.1f} s (generate {t_gen:.1f}, write + git fast-import {t_write:.1f}, git index {t_git:.1f})")


if __name__ == "__main__":
    main()
