#!/usr/bin/env python3
"""The cedarpy side of bench/policy.sh: evaluate the requests rampart wrote, in batch mode.

    python3 bench/cedarpy_batch.py DIR

DIR holds policies.cedar, schema.cedarschema, entities.json, requests.json and
decisions.json (rampart's decisions). Prints one JSON object: the time of one batch of every
request (best of 3), the time of a batch of one request (the parse cost of entities,
policies and schema that every batch pays), decisions per second, and whether every
decision equals rampart's.
"""

import json
import sys
import time
from importlib.metadata import version

import cedarpy


def main() -> None:
    d = sys.argv[1]
    policies = open(f"{d}/policies.cedar").read()
    schema = open(f"{d}/schema.cedarschema").read()
    entities = open(f"{d}/entities.json").read()
    requests = json.load(open(f"{d}/requests.json"))
    expected = json.load(open(f"{d}/decisions.json"))

    def batch(reqs):
        t = time.perf_counter()
        results = cedarpy.is_authorized_batch(reqs, policies, entities, schema=schema)
        return time.perf_counter() - t, results

    one = min(batch(requests[:1])[0] for _ in range(3))
    runs = [batch(requests) for _ in range(3)]
    best = min(t for t, _ in runs)
    results = runs[0][1]
    got = [r.allowed for r in results]
    mismatches = sum(1 for a, b in zip(got, expected) if a != b)
    n = len(requests)
    print(json.dumps({
        "requests": n,
        "batchSeconds": round(best, 4),
        "parseSeconds": round(one, 4),
        "decisionsPerSecond": round(n / best),
        "decisionsPerSecondExcludingParse": round(n / max(best - one, 1e-9)),
        "meanUsExcludingParse": round((best - one) / n * 1e6, 2),
        "allowed": sum(got),
        "mismatches": mismatches,
        "cedarpy": version("cedarpy"),
    }))


if __name__ == "__main__":
    main()
