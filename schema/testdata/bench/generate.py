#!/usr/bin/env python3
"""Writes the three benchmark fixtures (schema/testdata/bench/*.json).

Every implementation that benchmarks evaluation (vexil-eval's criterion benches, the SDK,
side-by-side runs against other vendors' evaluators) measures exactly these flags:

1. simple-bool:  a boolean flag that is on and serves its fallthrough;
2. targeting:    10 rules of 5 clauses of 5 values each, plus a segment_match clause in the
                 last rule; the context matches only the last rule, and every earlier rule
                 fails on its *fifth* clause, so all 50 clauses of rules 1-9 are evaluated;
3. experiment:   a 33/33/34 experiment rollout on the fallthrough.

Expected results are written by hand (and, for the rollout, computed with the independent
Python bucketing in ../eval/bucketing.py).
"""

import json
import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "eval"))
from bucketing import bucket, rollout_variation  # noqa: E402

CONTEXT = {
    "key": "user-4242",
    "kind": "user",
    "attributes": {
        "email": "jane.doe@acme-corp.com",
        "country": "DE",
        "plan": "enterprise",
        "age": 34,
        "app_version": "5.2.1",
        "device": "ios",
        "org": "acme",
        "beta": True,
    },
}


def write(name, description, flag_key, snapshot, expected):
    doc = {
        "name": name,
        "description": description,
        "flag": flag_key,
        "snapshot": snapshot,
        "context": CONTEXT,
        "expected": expected,
    }
    with open(os.path.join(HERE, name + ".json"), "w") as out:
        json.dump(doc, out, indent=1)
        out.write("\n")


def clause(attribute, op, values, negate=False):
    c = {"attribute": attribute, "op": op, "values": values}
    if negate:
        c["negate"] = True
    return c


def simple_bool():
    flag = {
        "key": "simple-bool",
        "kind": "boolean",
        "variations": [{"value": True}, {"value": False}],
        "on": True,
        "off_variation": 1,
        "fallthrough": {"variation": 0},
        "salt": "simple-bool",
        "version": 1,
    }
    write("simple-bool", "A boolean flag that is on and serves its fallthrough: the floor "
          "cost of one evaluation (key lookup, on check, serve).", "simple-bool",
          {"version": 1, "flags": [flag], "segments": []},
          {"value": True, "variation": 0, "reason": {"kind": "FALLTHROUGH"},
           "in_experiment": False})


def targeting():
    countries = ["US", "FR", "GB", "IT", "ES", "NL", "PL", "SE", "AT", "CH", "BE", "PT"]
    plans = ["free", "starter", "team", "business", "pro", "growth", "scale", "premium"]
    domains = ["@globex.com", "@initech.io", "@umbrella.org", "@hooli.xyz", "@stark.dev",
               "@wayne.co", "@cyberdyne.ai", "@tyrell.net", "@soylent.biz"]

    def matching(i):
        """Four clauses the context matches, each with five values, the match last."""
        return [
            clause("country", "in", [countries[(i + j) % 12] for j in range(4)] + ["DE"]),
            clause("plan", "in", [plans[(i + j) % 8] for j in range(4)] + ["enterprise"]),
            clause("email", "ends_with",
                   [domains[(i + j) % 9] for j in range(4)] + ["@acme-corp.com"]),
            clause("age", "gte", [40 + i, 50 + i, 60 + i, 70 + i, 18 + i]),
        ]

    # The fifth clause of rules 1-9: five values, none matching, a different operator each.
    failing = [
        clause("device", "in", ["android", "web", "windows", "macos", "linux"]),
        clause("org", "in", ["globex", "initech", "umbrella", "hooli", "stark"]),
        clause("email", "starts_with", ["admin@", "root@", "ops@", "billing@", "support@"]),
        clause("age", "lt", [18, 21, 25, 30, 16]),
        clause("email", "contains", ["+test", "qa.", "staging", "noreply", "example"]),
        clause("country", "in", ["DE", "US", "FR", "GB", "IT"], negate=True),
        clause("app_version", "semver_lt", ["1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"]),
        clause("plan", "in", ["free", "starter", "team", "business", "pro"]),
        clause("device", "in", ["tv", "watch", "car", "console", "kiosk"]),
    ]
    rules = []
    for i in range(9):
        rules.append({"id": "rule-%d" % (i + 1), "clauses": matching(i) + [failing[i]],
                      "serve": {"variation": i + 1}})
    last = matching(9) + [
        clause("app_version", "semver_gt", ["5.2.0", "6.0.0", "7.0.0", "8.0.0", "9.0.0"]),
        clause("", "segment_match", ["enterprise-beta"]),
    ]
    # The fifth clause of rule 10 matches: app_version 5.2.1 > 5.2.0 (the smallest operand).
    rules.append({"id": "rule-10", "clauses": last, "serve": {"variation": 10}})
    flag = {
        "key": "targeting",
        "kind": "string",
        "variations": [{"value": "control"}] + [{"value": "v%d" % i} for i in range(1, 11)],
        "on": True,
        "off_variation": 0,
        "rules": rules,
        "fallthrough": {"variation": 0},
        "salt": "targeting",
        "version": 1,
    }
    segment = {
        "key": "enterprise-beta",
        "name": "Enterprise beta",
        "included": ["customer-%d" % i for i in range(1000)],
        "excluded": ["user-1", "user-2", "user-3"],
        "rules": [{"id": "acme-like", "clauses": [
            clause("org", "in", ["globex", "initech", "umbrella", "hooli", "acme"]),
            clause("beta", "in", [True]),
        ]}],
        "salt": "enterprise-beta",
        "version": 1,
    }
    write("targeting", "10 rules of 5 clauses of 5 values each (in, ends_with, gte, and a "
          "fifth clause with a different operator per rule), plus a semver clause and a "
          "segment_match clause in the last rule. The context matches only the last rule; "
          "rules 1-9 fail on their fifth clause, so every clause of every rule runs. The "
          "segment (1,000 included keys) admits the context through a rule.", "targeting",
          {"version": 1, "flags": [flag], "segments": [segment]},
          {"value": "v10", "variation": 10,
           "reason": {"kind": "RULE_MATCH", "rule_index": 9, "rule_id": "rule-10"},
           "in_experiment": False})


def experiment():
    weights = [(0, 33000), (1, 33000), (2, 34000)]
    salt = "checkout-experiment-2026"
    flag = {
        "key": "experiment",
        "kind": "string",
        "variations": [{"value": "control"}, {"value": "treatment-a"},
                       {"value": "treatment-b"}],
        "on": True,
        "off_variation": 0,
        "fallthrough": {"rollout": {
            "variations": [{"variation": v, "weight": w} for v, w in weights],
            "experiment": True,
        }},
        "salt": salt,
        "version": 1,
    }
    b = bucket(salt, CONTEXT["key"])
    v = rollout_variation(weights, b)
    write("experiment", "A 33/33/34 experiment rollout on the fallthrough, bucketed by the "
          "context key (bucket %d)." % b, "experiment",
          {"version": 1, "flags": [flag], "segments": []},
          {"value": flag["variations"][v]["value"], "variation": v,
           "reason": {"kind": "FALLTHROUGH"}, "in_experiment": True})


if __name__ == "__main__":
    simple_bool()
    targeting()
    experiment()
