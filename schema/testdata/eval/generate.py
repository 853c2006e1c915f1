#!/usr/bin/env python3
"""Writes the shared evaluation fixtures (schema/testdata/eval/*.json).

The expected results here are written by hand from the semantics in docs/design.md; they
are NOT produced by running the Rust engine. Only rollout and segment-weight expectations
are computed, by `bucketing.py`, an independent implementation of the bucketing function
on top of Python's `xxhash` package (pip install xxhash).

Run from anywhere: `python3 schema/testdata/eval/generate.py`. The output is deterministic;
commit the JSON files together with any change to this script.
"""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bucketing import bucket, rollout_variation  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------
# Building blocks


def flag(key, kind="boolean", variations=(True, False), on=True, off=1, fallthrough=0,
         rules=(), targets=(), prerequisites=(), salt=None):
    f = {
        "key": key,
        "kind": kind,
        "variations": [{"value": v} for v in variations],
        "on": on,
        "off_variation": off,
        "fallthrough": serve(fallthrough),
    }
    if rules:
        f["rules"] = list(rules)
    if targets:
        f["targets"] = [{"variation": v, "values": list(ks)} for v, ks in targets]
    if prerequisites:
        f["prerequisites"] = [{"key": k, "variation": v} for k, v in prerequisites]
    if salt is not None:
        f["salt"] = salt
    return f


def serve(s):
    return {"variation": s} if isinstance(s, int) else s


def rollout(weights, bucket_by=None, experiment=False):
    r = {"variations": [{"variation": v, "weight": w} for v, w in weights]}
    if bucket_by is not None:
        r["bucket_by"] = bucket_by
    if experiment:
        r["experiment"] = True
    return {"rollout": r}


def rule(rid, clauses, serve_=0):
    return {"id": rid, "clauses": list(clauses), "serve": serve(serve_)}


def clause(attribute, op, values=(), negate=False):
    c = {"attribute": attribute, "op": op, "values": list(values)}
    if negate:
        c["negate"] = True
    return c


def ctx(key="user-1", kind=None, **attributes):
    c = {}
    if key is not None:
        c["key"] = key
    if kind is not None:
        c["kind"] = kind
    if attributes:
        c["attributes"] = attributes
    return c


def anon(**attributes):
    return ctx(key=None, **attributes)


OFF = {"kind": "OFF"}
FALLTHROUGH = {"kind": "FALLTHROUGH"}
TARGET = {"kind": "TARGET_MATCH"}


def RULE(index, rid):
    return {"kind": "RULE_MATCH", "rule_index": index, "rule_id": rid}


def PREREQ(key):
    return {"kind": "PREREQUISITE_FAILED", "prerequisite_key": key}


def ERROR(kind):
    return {"kind": "ERROR", "error_kind": kind}


MALFORMED = ERROR("MALFORMED")
NOT_FOUND = ERROR("FLAG_NOT_FOUND")


class File:
    def __init__(self, name, description):
        self.name = name
        self.description = description
        self.flags = []
        self.segments = []
        self.cases = []

    def add_flag(self, f):
        self.flags.append(f)
        return f["key"]

    def add_segment(self, s):
        self.segments.append(s)
        return s["key"]

    def case(self, name, flag_key, context, value, variation, reason, in_experiment=False):
        self.cases.append({
            "name": name,
            "flag": flag_key,
            "context": context,
            "expected": {
                "value": value,
                "variation": variation,
                "reason": reason,
                "in_experiment": in_experiment,
            },
        })

    def write(self):
        doc = {
            "name": self.name,
            "description": self.description,
            "snapshot": {"version": 1, "flags": self.flags, "segments": self.segments},
            "cases": self.cases,
        }
        with open(os.path.join(HERE, self.name + ".json"), "w") as out:
            json.dump(doc, out, indent=1, sort_keys=False)
            out.write("\n")
        return len(self.cases)


def on_off_flag(key, *clauses, **kw):
    """A boolean flag serving true (variation 0) when one rule of `clauses` matches."""
    return flag(key, rules=[rule("r", clauses)], fallthrough=1, off=1, **kw)


# ---------------------------------------------------------------------------------------
# basics: on/off, targets, rule order, fallthrough, value kinds, flag not found


def basics():
    f = File("basics", "Evaluation order: off, individual targets, rules in order, "
             "fallthrough; value kinds; unknown flags.")
    f.add_flag(flag("on-flag"))
    f.case("on flag serves its fallthrough", "on-flag", ctx(), True, 0, FALLTHROUGH)
    f.case("anonymous context gets the fallthrough", "on-flag", anon(), True, 0, FALLTHROUGH)

    f.add_flag(flag("off-flag", on=False, off=1, targets=[(0, ["user-1"])],
                    rules=[rule("everyone", [])]))
    f.case("off flag serves the off variation", "off-flag", ctx(), False, 1, OFF)
    f.case("off flag ignores targets and rules", "off-flag", ctx("other"), False, 1, OFF)

    precedence = flag(
        "precedence", kind="string", variations=("target-a", "target-b", "rule-0", "rule-1",
                                                 "fallthrough", "off"),
        off=5, fallthrough=4,
        targets=[(0, ["alice", "both"]), (1, ["bob", "both"])],
        rules=[
            rule("admins", [clause("role", "in", ["admin"])], 2),
            rule("staff", [clause("role", "in", ["admin", "staff"])], 3),
        ])
    f.add_flag(precedence)
    f.case("target beats a matching rule", "precedence", ctx("alice", role="admin"),
           "target-a", 0, TARGET)
    f.case("second target list", "precedence", ctx("bob"), "target-b", 1, TARGET)
    f.case("key in two target lists: first list wins", "precedence", ctx("both"),
           "target-a", 0, TARGET)
    f.case("first matching rule wins", "precedence", ctx("carol", role="admin"),
           "rule-0", 2, RULE(0, "admins"))
    f.case("later rule matches when earlier do not", "precedence", ctx("dave", role="staff"),
           "rule-1", 3, RULE(1, "staff"))
    f.case("no target or rule: fallthrough", "precedence", ctx("erin", role="guest"),
           "fallthrough", 4, FALLTHROUGH)
    f.case("anonymous context is never a target", "precedence", anon(role="guest"),
           "fallthrough", 4, FALLTHROUGH)
    f.case("anonymous context still matches rules", "precedence", anon(role="staff"),
           "rule-1", 3, RULE(1, "staff"))
    f.case("target keys are case-sensitive", "precedence", ctx("Alice"),
           "fallthrough", 4, FALLTHROUGH)

    f.add_flag(flag("empty-rule", rules=[rule("all", [], 1)], fallthrough=0))
    f.case("a rule with no clauses matches everyone", "empty-rule", ctx(), False, 1,
           RULE(0, "all"))

    f.add_flag(flag("number-flag", kind="number", variations=(1, 2.5, -3), off=0, fallthrough=1))
    f.case("number value", "number-flag", ctx(), 2.5, 1, FALLTHROUGH)
    f.add_flag(flag("json-flag", kind="json", variations=({"a": [1, 2]}, None, "s"),
                    off=2, fallthrough=0))
    f.case("json value", "json-flag", ctx(), {"a": [1, 2]}, 0, FALLTHROUGH)
    f.add_flag(flag("json-null", kind="json", variations=({"a": 1}, None), off=0,
                    fallthrough=1))
    f.case("json flag may serve null", "json-null", ctx(), None, 1, FALLTHROUGH)
    f.add_flag(flag("string-off", kind="string", variations=("on", "off"), on=False))
    f.case("string flag off", "string-off", ctx(), "off", 1, OFF)

    f.case("unknown flag", "no-such-flag", ctx(), None, None, NOT_FOUND)
    f.case("flag keys are case-sensitive", "ON-FLAG", ctx(), None, None, NOT_FOUND)

    # Duplicate keys in a snapshot: the later definition wins.
    f.add_flag(flag("dup", fallthrough=0))
    f.add_flag(flag("dup", fallthrough=1))
    f.case("duplicate flag keys: the later one wins", "dup", ctx(), False, 1, FALLTHROUGH)
    return f


# ---------------------------------------------------------------------------------------
# operators: every operator, negation, missing and null attributes, wrong types, arrays


def operators():
    f = File("operators", "Every clause operator: matches, non-matches, negation, missing "
             "and null attributes, wrong types (never an error), array attributes, empty "
             "value lists, the reserved key and kind attributes. Each flag serves true "
             "(variation 0) through rule \"r\" when its one clause matches, else false "
             "through the fallthrough.")
    n = [0]

    def check(name, clause_, context, matches):
        key = "op-%03d" % n[0]
        n[0] += 1
        f.add_flag(on_off_flag(key, clause_))
        if matches:
            f.case(name, key, context, True, 0, RULE(0, "r"))
        else:
            f.case(name, key, context, False, 1, FALLTHROUGH)

    c = clause("country", "in", ["US", "DE"])
    check("in: string listed", c, ctx(country="DE"), True)
    check("in: string not listed", c, ctx(country="FR"), False)
    check("in: strings are case-sensitive", c, ctx(country="de"), False)
    check("in: missing attribute", c, ctx(), False)
    check("in: null attribute", c, ctx(country=None), False)
    check("in: object attribute never matches", c, ctx(country={"code": "DE"}), False)
    check("in: array attribute, one element listed", c, ctx(country=["FR", "US"]), True)
    check("in: array attribute, none listed", c, ctx(country=["FR", "IT"]), False)
    check("in: empty array attribute", c, ctx(country=[]), False)
    check("in: array with null elements", c, ctx(country=[None, "DE"]), True)
    n_ = clause("country", "in", ["US"], negate=True)
    check("not in: other value", n_, ctx(country="DE"), True)
    check("not in: listed value", n_, ctx(country="US"), False)
    check("not in: missing attribute still never matches", n_, ctx(), False)
    check("not in: null attribute still never matches", n_, ctx(country=None), False)
    check("not in: array containing a listed value", n_, ctx(country=["DE", "US"]), False)
    check("not in: array without listed values", n_, ctx(country=["DE", "FR"]), True)
    check("not in: empty array", n_, ctx(country=[]), True)
    num = clause("age", "in", [18, 21])
    check("in: number listed", num, ctx(age=21), True)
    check("in: 21.0 equals 21", num, ctx(age=21.0), True)
    check("in: number not listed", num, ctx(age=20), False)
    check("in: string \"21\" is not the number 21", num, ctx(age="21"), False)
    check("in: float operand", clause("score", "in", [0.5]), ctx(score=0.5), True)
    check("in: boolean listed", clause("beta", "in", [True]), ctx(beta=True), True)
    check("in: boolean not listed", clause("beta", "in", [True]), ctx(beta=False), False)
    check("in: true is not the string \"true\"", clause("beta", "in", [True]),
          ctx(beta="true"), False)
    mixed = clause("code", "in", ["5", 5, False])
    check("in: mixed list, number", mixed, ctx(code=5), True)
    check("in: mixed list, string", mixed, ctx(code="5"), True)
    check("in: mixed list, boolean", mixed, ctx(code=False), True)
    check("in: empty value list matches nothing", clause("country", "in", []),
          ctx(country="US"), False)
    check("not in: empty value list matches any present value",
          clause("country", "in", [], negate=True), ctx(country="US"), True)
    long_list = clause("id", "in", ["id-%d" % i for i in range(40)])
    check("in: long list (hashed), listed", long_list, ctx(id="id-33"), True)
    check("in: long list (hashed), not listed", long_list, ctx(id="id-40"), False)
    check("key: targeting key in list", clause("key", "in", ["user-1"]), ctx("user-1"), True)
    check("key: other key", clause("key", "in", ["user-1"]), ctx("user-2"), False)
    check("key: anonymous context has no key", clause("key", "in", ["user-1"]), anon(), False)
    check("key: negated, anonymous still never matches",
          clause("key", "in", ["user-1"], negate=True), anon(), False)
    check("key: attribute named key is the targeting key",
          clause("key", "starts_with", ["user-"]), ctx("user-9"), True)
    check("kind: context kind", clause("kind", "in", ["organization"]),
          ctx("acme", kind="organization"), True)
    check("kind: no kind is missing", clause("kind", "in", ["organization"]), ctx("acme"),
          False)

    sw = clause("email", "starts_with", ["admin@", "root@"])
    check("starts_with: second prefix", sw, ctx(email="root@example.com"), True)
    check("starts_with: no prefix", sw, ctx(email="user@example.com"), False)
    check("starts_with: number never matches", sw, ctx(email=42), False)
    check("starts_with: array element", sw, ctx(email=["x@y", "admin@y"]), True)
    check("starts_with: negated", clause("email", "starts_with", ["admin@"], negate=True),
          ctx(email="user@example.com"), True)
    check("starts_with: negated, wrong type matches",
          clause("email", "starts_with", ["admin@"], negate=True), ctx(email=42), True)
    check("starts_with: empty prefix matches every string",
          clause("email", "starts_with", [""]), ctx(email="anything"), True)
    ew = clause("email", "ends_with", ["@example.com"])
    check("ends_with: suffix", ew, ctx(email="a@example.com"), True)
    check("ends_with: other suffix", ew, ctx(email="a@example.org"), False)
    check("ends_with: case-sensitive", ew, ctx(email="A@EXAMPLE.COM"), False)
    check("ends_with: missing", ew, ctx(), False)
    check("ends_with: negated", clause("email", "ends_with", ["@example.com"], negate=True),
          ctx(email="a@example.com"), False)
    co = clause("app", "contains", ["beta", "canary"])
    check("contains: substring", co, ctx(app="my-canary-app"), True)
    check("contains: no substring", co, ctx(app="stable"), False)
    check("contains: boolean never matches", co, ctx(app=True), False)
    check("contains: unicode", clause("name", "contains", ["é"]), ctx(name="José"), True)
    check("contains: negated missing never matches",
          clause("app", "contains", ["beta"], negate=True), ctx(), False)
    mt = clause("email", "matches", ["^[a-z]+@example\\.com$"])
    check("matches: full pattern", mt, ctx(email="bob@example.com"), True)
    check("matches: anchored pattern, no match", mt, ctx(email="Bob@example.com"), False)
    check("matches: unanchored pattern finds a substring", clause("path", "matches", ["bc"]),
          ctx(path="abcd"), True)
    ms = clause("name", "matches", ["^a", "z$"])
    check("matches: any of several patterns", ms, ctx(name="xyz"), True)
    check("matches: none of several patterns", ms, ctx(name="mmm"), False)
    check("matches: numbers are not strings", clause("id", "matches", ["^1"]), ctx(id=123),
          False)
    check("matches: inline flags", clause("name", "matches", ["(?i)^ALICE$"]),
          ctx(name="alice"), True)
    check("matches: negated", clause("name", "matches", ["^a"], negate=True), ctx(name="bob"),
          True)

    lt = clause("age", "lt", [18])
    check("lt: below", lt, ctx(age=17), True)
    check("lt: equal", lt, ctx(age=18), False)
    check("lt: fractional", lt, ctx(age=17.5), True)
    check("lt: numeric string is not a number", lt, ctx(age="17"), False)
    check("lt: negated", clause("age", "lt", [18], negate=True), ctx(age=30), True)
    check("lt: negated, wrong type matches", clause("age", "lt", [18], negate=True),
          ctx(age="x"), True)
    check("lt: any operand (below the largest)", clause("age", "lt", [10, 20]), ctx(age=15),
          True)
    check("lte: equal", clause("age", "lte", [18]), ctx(age=18), True)
    check("lte: above", clause("age", "lte", [18]), ctx(age=18.01), False)
    check("gt: any operand (above the smallest)", clause("age", "gt", [10, 20]), ctx(age=15),
          True)
    check("gt: equal", clause("age", "gt", [10]), ctx(age=10), False)
    check("gte: equal", clause("age", "gte", [10, 20]), ctx(age=10), True)
    check("gte: below all", clause("age", "gte", [10, 20]), ctx(age=9), False)
    check("gte: negative numbers", clause("balance", "gte", [-5]), ctx(balance=-4.5), True)
    check("gt: array attribute", clause("scores", "gt", [90]), ctx(scores=[50, 95]), True)
    check("gt: booleans are not numbers", clause("age", "gt", [0]), ctx(age=True), False)

    bf = clause("created", "before", ["2026-01-01T00:00:00Z"])
    check("before: earlier date", bf, ctx(created="2025-12-31T23:59:59Z"), True)
    check("before: same instant", bf, ctx(created="2026-01-01T00:00:00Z"), False)
    check("before: same instant, other offset", bf, ctx(created="2026-01-01T01:00:00+01:00"),
          False)
    check("before: epoch milliseconds", bf, ctx(created=0), True)
    check("before: unparsable date never matches", bf, ctx(created="yesterday"), False)
    check("before: boolean never matches", bf, ctx(created=True), False)
    af = clause("created", "after", ["2026-01-01T00:00:00Z", 1767225600000 + 86400000])
    check("after: after the earliest operand", af, ctx(created="2026-01-01T00:00:00.001Z"),
          True)
    check("after: equal", af, ctx(created=1767225600000), False)
    check("after: fractional seconds and offsets", af,
          ctx(created="2026-01-01T05:30:00.5+05:30"), True)
    check("after: epoch operand", clause("created", "after", [1000]), ctx(created=1001), True)
    check("after: negated", clause("created", "after", ["2026-01-01T00:00:00Z"], negate=True),
          ctx(created="2020-01-01T00:00:00Z"), True)

    se = clause("version", "semver_eq", ["1.2.3"])
    check("semver_eq: equal", se, ctx(version="1.2.3"), True)
    check("semver_eq: leading v", se, ctx(version="v1.2.3"), True)
    check("semver_eq: build metadata ignored", se, ctx(version="1.2.3+build.7"), True)
    check("semver_eq: pre-release differs", se, ctx(version="1.2.3-beta"), False)
    check("semver_eq: missing parts are zero", clause("version", "semver_eq", ["1.2.0"]),
          ctx(version="1.2"), True)
    check("semver_eq: unparsable never matches", se, ctx(version="banana"), False)
    check("semver_eq: numbers are not versions", se, ctx(version=1.2), False)
    sl = clause("version", "semver_lt", ["2.0.0"])
    check("semver_lt: lower", sl, ctx(version="1.9.9"), True)
    check("semver_lt: pre-release is lower", sl, ctx(version="2.0.0-rc.1"), True)
    check("semver_lt: equal", sl, ctx(version="2.0.0"), False)
    check("semver_lt: numeric, not lexical", sl, ctx(version="10.0.0"), False)
    sg = clause("version", "semver_gt", ["1.9.0"])
    check("semver_gt: 1.10.0 > 1.9.0", sg, ctx(version="1.10.0"), True)
    check("semver_gt: equal", sg, ctx(version="1.9.0"), False)
    check("semver_gt: negated", clause("version", "semver_gt", ["1.9.0"], negate=True),
          ctx(version="1.0.0"), True)

    ex = clause("plan", "exists")
    check("exists: present", ex, ctx(plan="free"), True)
    check("exists: false is present", ex, ctx(plan=False), True)
    check("exists: empty array is present", ex, ctx(plan=[]), True)
    check("exists: null is absent", ex, ctx(plan=None), False)
    check("exists: missing", ex, ctx(), False)
    nex = clause("plan", "exists", negate=True)
    check("not exists: missing matches", nex, ctx(), True)
    check("not exists: null matches", nex, ctx(plan=None), True)
    check("not exists: present does not match", nex, ctx(plan="free"), False)
    check("exists: key of an anonymous context", clause("key", "exists"), anon(), False)

    both = rule("r", [clause("country", "in", ["US"]), clause("age", "gte", [18])])
    f.add_flag(flag("and-clauses", rules=[both], fallthrough=1))
    f.case("all clauses must match", "and-clauses", ctx(country="US", age=21), True, 0,
           RULE(0, "r"))
    f.case("one failing clause fails the rule", "and-clauses", ctx(country="US", age=16),
           False, 1, FALLTHROUGH)
    f.case("missing attribute fails the rule", "and-clauses", ctx(age=30), False, 1,
           FALLTHROUGH)
    return f


# ---------------------------------------------------------------------------------------
# prerequisites


def prerequisites():
    f = File("prerequisites", "Prerequisites: each must exist, be on, pass its own "
             "prerequisites and serve the required variation (by target, rule or "
             "fallthrough); otherwise the off variation with PREREQUISITE_FAILED. Cycles and "
             "chains deeper than 32 make the flags involved malformed.")
    f.add_flag(flag("base-on"))                       # serves 0
    f.add_flag(flag("base-off", on=False, off=0))     # off, but its off variation is 0
    f.add_flag(flag("base-admins", rules=[rule("admins", [clause("role", "in", ["admin"])], 0)],
                    fallthrough=1))
    f.add_flag(flag("needs-on", prerequisites=[("base-on", 0)]))
    f.case("met prerequisite", "needs-on", ctx(), True, 0, FALLTHROUGH)
    f.add_flag(flag("needs-other-variation", prerequisites=[("base-on", 1)]))
    f.case("prerequisite serving another variation", "needs-other-variation", ctx(), False, 1,
           PREREQ("base-on"))
    f.add_flag(flag("needs-off", prerequisites=[("base-off", 0)]))
    f.case("off prerequisite fails even if its off variation is the required one",
           "needs-off", ctx(), False, 1, PREREQ("base-off"))
    f.add_flag(flag("needs-missing", prerequisites=[("not-there", 0)]))
    f.case("missing prerequisite", "needs-missing", ctx(), False, 1, PREREQ("not-there"))
    f.add_flag(flag("needs-admins", prerequisites=[("base-admins", 0)]))
    f.case("context-dependent prerequisite met", "needs-admins", ctx(role="admin"), True, 0,
           FALLTHROUGH)
    f.case("context-dependent prerequisite failed", "needs-admins", ctx(role="user"), False, 1,
           PREREQ("base-admins"))
    f.add_flag(flag("needs-two", prerequisites=[("base-on", 0), ("base-admins", 0)]))
    f.case("second prerequisite fails: its key is reported", "needs-two", ctx(), False, 1,
           PREREQ("base-admins"))
    f.case("both prerequisites met", "needs-two", ctx(role="admin"), True, 0, FALLTHROUGH)
    f.add_flag(flag("needs-off-and-missing", on=False,
                    prerequisites=[("not-there", 0)]))
    f.case("off flag does not check prerequisites", "needs-off-and-missing", ctx(), False, 1,
           OFF)
    f.add_flag(flag("targeted-dep", prerequisites=[("base-admins", 0)],
                    targets=[(0, ["vip"])], fallthrough=0))
    f.case("prerequisites are checked before targets", "targeted-dep", ctx("vip"), False, 1,
           PREREQ("base-admins"))

    # Chains: top -> mid -> base-admins.
    f.add_flag(flag("mid", prerequisites=[("base-admins", 0)], fallthrough=0))
    f.add_flag(flag("top", prerequisites=[("mid", 0)], fallthrough=0))
    f.case("chain met", "top", ctx(role="admin"), True, 0, FALLTHROUGH)
    f.case("chain broken below: the direct prerequisite is reported", "top", ctx(role="user"),
           False, 1, PREREQ("mid"))
    # A prerequisite whose own prerequisite failed serves its off variation, which here is
    # the required one; it still does not count as met.
    f.add_flag(flag("mid-off0", prerequisites=[("base-admins", 0)], off=0, fallthrough=0))
    f.add_flag(flag("over-mid-off0", prerequisites=[("mid-off0", 0)]))
    f.case("prerequisite that failed its own prerequisites is not met", "over-mid-off0",
           ctx(role="user"), False, 1, PREREQ("mid-off0"))

    # Prerequisite with a rule-served variation.
    f.add_flag(flag("str-base", kind="string", variations=("a", "b"), off=0,
                    rules=[rule("b-users", [clause("plan", "in", ["pro"])], 1)],
                    fallthrough=0))
    f.add_flag(flag("needs-b", prerequisites=[("str-base", 1)]))
    f.case("prerequisite served by a rule", "needs-b", ctx(plan="pro"), True, 0, FALLTHROUGH)
    f.case("prerequisite served by fallthrough", "needs-b", ctx(plan="free"), False, 1,
           PREREQ("str-base"))

    # Malformed prerequisite (bad regex): dependents fail the prerequisite, not malformed.
    f.add_flag(flag("broken-base", rules=[rule("bad", [clause("e", "matches", ["("])])]))
    f.add_flag(flag("needs-broken", prerequisites=[("broken-base", 0)]))
    f.case("malformed prerequisite fails the prerequisite", "needs-broken", ctx(), False, 1,
           PREREQ("broken-base"))
    f.case("the malformed prerequisite itself", "broken-base", ctx(), None, None, MALFORMED)

    # Cycles.
    f.add_flag(flag("cycle-a", prerequisites=[("cycle-b", 0)]))
    f.add_flag(flag("cycle-b", prerequisites=[("cycle-a", 0)]))
    f.add_flag(flag("above-cycle", prerequisites=[("cycle-a", 0)]))
    f.add_flag(flag("self-prereq", prerequisites=[("self-prereq", 0)]))
    f.case("cycle: first flag malformed", "cycle-a", ctx(), None, None, MALFORMED)
    f.case("cycle: second flag malformed", "cycle-b", ctx(), None, None, MALFORMED)
    f.case("flag above a cycle is malformed", "above-cycle", ctx(), None, None, MALFORMED)
    f.case("flag requiring itself is malformed", "self-prereq", ctx(), None, None, MALFORMED)
    f.add_flag(flag("cycle-off", on=False, prerequisites=[("cycle-off-b", 0)]))
    f.add_flag(flag("cycle-off-b", prerequisites=[("cycle-off", 0)]))
    f.case("an off flag in a cycle still serves its off variation", "cycle-off", ctx(), False,
           1, OFF)
    f.case("the on flag of that cycle is malformed", "cycle-off-b", ctx(), None, None,
           MALFORMED)

    # Depth: chain-0 -> chain-1 -> ... -> chain-32: chain-0 is 33 deep, chain-1 32.
    for i in range(33):
        prereqs = [("chain-%d" % (i + 1), 0)] if i < 32 else []
        f.add_flag(flag("chain-%d" % i, prerequisites=prereqs))
    f.case("prerequisite chain of 32 flags evaluates", "chain-1", ctx(), True, 0, FALLTHROUGH)
    f.case("prerequisite chain of 33 flags is malformed", "chain-0", ctx(), None, None,
           MALFORMED)
    return f


# ---------------------------------------------------------------------------------------
# segments


def seg(key, included=(), excluded=(), rules=(), salt=None):
    s = {"key": key, "name": key}
    if included:
        s["included"] = list(included)
    if excluded:
        s["excluded"] = list(excluded)
    if rules:
        s["rules"] = list(rules)
    if salt is not None:
        s["salt"] = salt
    return s


def seg_rule(rid, clauses, weight=None, bucket_by=None):
    r = {"id": rid, "clauses": list(clauses)}
    if weight is not None:
        r["weight"] = weight
    if bucket_by is not None:
        r["bucket_by"] = bucket_by
    return r


def segments():
    f = File("segments", "Segments: a key in `included` is in; else a key in `excluded` is "
             "out; else any matching rule (with its optional weight) puts the context in. "
             "Each flag serves true through rule \"r\" when its segment_match clause "
             "matches.")

    def seg_flag(key, segs, negate=False):
        return f.add_flag(on_off_flag(key, clause("", "segment_match", segs, negate)))

    def member(name, key, context, yes):
        if yes:
            f.case(name, key, context, True, 0, RULE(0, "r"))
        else:
            f.case(name, key, context, False, 1, FALLTHROUGH)

    f.add_segment(seg("beta", included=["alice", "both"], excluded=["bob", "both", "carol"],
                      rules=[seg_rule("staff", [clause("email", "ends_with", ["@corp.example"])])]))
    k = seg_flag("in-beta", ["beta"])
    member("included key", k, ctx("alice"), True)
    member("excluded key", k, ctx("bob"), False)
    member("included and excluded: included wins", k, ctx("both"), True)
    member("rule match", k, ctx("dave", email="dave@corp.example"), True)
    member("excluded key beats a matching rule", k, ctx("carol", email="carol@corp.example"),
           False)
    member("no match", k, ctx("erin", email="erin@else.example"), False)
    member("anonymous context: rules still apply", k, anon(email="x@corp.example"), True)
    member("anonymous context without attributes", k, anon(), False)
    k = seg_flag("not-in-beta", ["beta"], negate=True)
    member("negated: not a member", k, ctx("erin"), True)
    member("negated: member", k, ctx("alice"), False)

    f.add_segment(seg("gamma", included=["gina"]))
    k = seg_flag("in-beta-or-gamma", ["beta", "gamma"])
    member("any listed segment: second", k, ctx("gina"), True)
    member("any listed segment: none", k, ctx("hank"), False)

    k = seg_flag("in-missing", ["no-such-segment"])
    member("missing segment: not a member", k, ctx("alice"), False)
    k = seg_flag("not-in-missing", ["no-such-segment"], negate=True)
    member("negated missing segment matches", k, ctx("alice"), True)

    big = ["member-%d" % i for i in range(2000)]
    f.add_segment(seg("big", included=big))
    k = seg_flag("in-big", ["big"])
    member("large include list: member", k, ctx("member-1999"), True)
    member("large include list: not a member", k, ctx("member-2000"), False)

    # Weighted rule: 30% of users with plan=pro, by key, salt "seg-salt".
    f.add_segment(seg("pro-30", salt="seg-salt",
                      rules=[seg_rule("pro", [clause("plan", "in", ["pro"])], weight=30000)]))
    k = seg_flag("in-pro-30", ["pro-30"])
    seen_in = seen_out = 0
    for i in range(40):
        user = "user-%d" % i
        b = bucket("seg-salt", user)
        yes = b < 30000
        if (yes and seen_in < 3) or (not yes and seen_out < 3):
            member("weighted rule, %s bucket %d" % (user, b), k, ctx(user, plan="pro"), yes)
            seen_in += yes
            seen_out += not yes
    member("weighted rule: clauses still apply", k, ctx("user-0", plan="free"), False)
    member("weighted rule, anonymous: bucket 0 is in", k, anon(plan="pro"), True)

    f.add_segment(seg("nobody", rules=[seg_rule("all", [], weight=0)]))
    f.add_segment(seg("everybody", rules=[seg_rule("all", [], weight=100000)]))
    member("weight 0 admits nobody", seg_flag("in-nobody", ["nobody"]), anon(), False)
    member("weight 100000 admits everybody", seg_flag("in-everybody", ["everybody"]),
           ctx("z"), True)

    # Bucket by an attribute, empty salt (the segment key is the salt).
    f.add_segment(seg("orgs-50", rules=[seg_rule("half", [], weight=50000, bucket_by="org")]))
    k = seg_flag("in-orgs-50", ["orgs-50"])
    for org in ["acme", "globex", "initech", "umbrella"]:
        b = bucket("orgs-50", org)
        member("segment bucketed by org %s (bucket %d)" % (org, b), k,
               ctx("u-" + org, org=org), b < 50000)

    # Later rules are tried when an earlier one matches but its weight excludes the context.
    f.add_segment(seg("second-chance", rules=[
        seg_rule("none", [], weight=0), seg_rule("vip", [clause("vip", "in", [True])])]))
    member("second rule after a weighted-out first", seg_flag("in-second-chance",
           ["second-chance"]), ctx(vip=True), True)

    # Nested segments.
    f.add_segment(seg("outer", rules=[seg_rule("via-beta",
                                                [clause("", "segment_match", ["beta"])])]))
    k = seg_flag("in-outer", ["outer"])
    member("nested segment: member of the inner one", k, ctx("alice"), True)
    member("nested segment: not a member", k, ctx("bob"), False)

    f.add_segment(seg("loop-a", rules=[seg_rule("b", [clause("", "segment_match", ["loop-b"])])]))
    f.add_segment(seg("loop-b", rules=[seg_rule("a", [clause("", "segment_match", ["loop-a"])])]))
    k = seg_flag("in-loop", ["loop-a"])
    f.case("segment cycle makes the flag malformed", k, ctx(), None, None, MALFORMED)

    f.add_segment(seg("bad-regex", rules=[seg_rule("x", [clause("e", "matches", ["[z-a]"])])]))
    k = seg_flag("in-bad-regex", ["bad-regex"])
    f.case("malformed segment makes the flag malformed", k, ctx(), None, None, MALFORMED)
    f.add_segment(seg("too-heavy", rules=[seg_rule("x", [], weight=100001)]))
    k = seg_flag("in-too-heavy", ["too-heavy"])
    f.case("segment weight above 100000 is malformed", k, ctx(), None, None, MALFORMED)
    f.add_flag(flag("bad-seg-but-off", on=False, rules=[
        rule("r", [clause("", "segment_match", ["bad-regex"])])]))
    f.case("off flag referencing a malformed segment serves its off variation",
           "bad-seg-but-off", ctx(), False, 1, OFF)
    return f


# ---------------------------------------------------------------------------------------
# rollouts


def rollouts():
    f = File("rollouts", "Percentage rollouts: bucket = fastrange(xxh3_64_with_seed(value, "
             "xxh3_64(salt))) into [0, 100000), walked cumulatively over the weights. "
             "Expected variations were computed with Python's xxhash package. An empty salt "
             "means the flag key. Anonymous contexts and missing or non-bucketable "
             "bucket-by values use bucket 0 and are not experiment exposures.")

    def rollout_cases(key, salt, weights, contexts, values, reason, experiment,
                      bucket_by=None):
        for name, context in contexts:
            attr = bucket_by or "key"
            raw = context.get("key") if attr == "key" else context.get("attributes", {}).get(attr)
            b = bucket_value(salt, raw)
            v = rollout_variation(weights, 0 if b is None else b)
            f.case("%s (bucket %s)" % (name, b), key, context, values[v], v, reason,
                   experiment and b is not None)

    def bucket_value(salt, raw):
        if isinstance(raw, bool) or raw is None:
            return None
        if isinstance(raw, str):
            return bucket(salt, raw)
        if isinstance(raw, int):
            return bucket(salt, str(raw))
        if isinstance(raw, float) and raw.is_integer() and abs(raw) <= 2 ** 53:
            return bucket(salt, str(int(raw)))
        return None

    users = [("user-%d" % i, ctx("user-%d" % i)) for i in range(10)]

    w50 = [(0, 50000), (1, 50000)]
    f.add_flag(flag("half", fallthrough=rollout(w50), salt="rollout-50"))
    rollout_cases("half", "rollout-50", w50, users, [True, False], FALLTHROUGH, False)

    w3 = [(0, 33000), (1, 33000), (2, 34000)]
    f.add_flag(flag("ab-test", kind="string", variations=("control", "a", "b"), off=0,
                    fallthrough=rollout(w3, experiment=True), salt="ab-salt"))
    rollout_cases("ab-test", "ab-salt", w3, users, ["control", "a", "b"], FALLTHROUGH, True)
    f.case("experiment, anonymous: first variation, not an exposure", "ab-test", anon(),
           "control", 0, FALLTHROUGH, False)

    wz = [(0, 0), (1, 60000), (2, 40000)]
    f.add_flag(flag("zero-first", kind="number", variations=(0, 1, 2), off=0,
                    fallthrough=rollout(wz), salt="z"))
    f.case("anonymous skips zero-weight slices", "zero-first", anon(), 1, 1, FALLTHROUGH)
    rollout_cases("zero-first", "z", wz, users[:4], [0, 1, 2], FALLTHROUGH, False)

    # Bucket by org: members of one org share a variation.
    f.add_flag(flag("by-org", fallthrough=rollout(w50, bucket_by="org", experiment=True),
                    salt="org-salt"))
    orgs = [("%s/%s" % (org, u), ctx(u, org=org)) for org in ("acme", "globex", "initech")
            for u in ("u1", "u2")]
    rollout_cases("by-org", "org-salt", w50, orgs, [True, False], FALLTHROUGH, True,
                  bucket_by="org")
    f.case("bucket_by attribute missing: bucket 0, not an exposure", "by-org", ctx("u1"),
           True, 0, FALLTHROUGH, False)
    f.case("bucket_by boolean does not bucket", "by-org", ctx("u1", org=True), True, 0,
           FALLTHROUGH, False)
    f.case("bucket_by array does not bucket", "by-org", ctx("u1", org=["acme"]), True, 0,
           FALLTHROUGH, False)

    # Integers bucket by their decimal string; integral floats like the integer.
    f.add_flag(flag("by-account", fallthrough=rollout(w50, bucket_by="account"),
                    salt="acct"))
    nums = [("account %d" % n, ctx("x", account=n)) for n in (1, 42, 1234567, -7)]
    rollout_cases("by-account", "acct", w50, nums, [True, False], FALLTHROUGH, False,
                  bucket_by="account")
    b42 = bucket("acct", "42")
    v42 = rollout_variation(w50, b42)
    f.case("integral float 42.0 buckets like 42 (bucket %d)" % b42, "by-account",
           ctx("x", account=42.0), [True, False][v42], v42, FALLTHROUGH)
    f.case("string \"42\" buckets like 42 (bucket %d)" % b42, "by-account",
           ctx("x", account="42"), [True, False][v42], v42, FALLTHROUGH)
    f.case("fractional number does not bucket", "by-account", ctx("x", account=4.5), True, 0,
           FALLTHROUGH)

    # Empty salt: the flag key is the salt.
    f.add_flag(flag("no-salt", fallthrough=rollout(w50)))
    rollout_cases("no-salt", "no-salt", w50, users[:5], [True, False], FALLTHROUGH, False)

    # Rollout served by a rule, bucketing on the key of an organization context.
    wr = [(0, 10000), (1, 90000)]
    f.add_flag(flag("rule-rollout", rules=[rule("orgs", [clause("kind", "in", ["org"])],
                                                rollout(wr, experiment=True))],
                    fallthrough=1, salt="rr"))
    orgctx = [("org %s" % o, ctx(o, kind="org")) for o in ("o-1", "o-2", "o-3", "o-4", "o-5")]
    rollout_cases("rule-rollout", "rr", wr, orgctx, [True, False], RULE(0, "orgs"), True)
    f.case("rule rollout not reached", "rule-rollout", ctx("u"), False, 1, FALLTHROUGH)

    # A rollout that gives everyone one variation is still a split.
    f.add_flag(flag("all-in", fallthrough=rollout([(0, 0), (1, 100000)], experiment=True)))
    f.case("100% slice", "all-in", ctx("anyone"), False, 1, FALLTHROUGH, True)
    return f


# ---------------------------------------------------------------------------------------
# malformed flags


def malformed():
    f = File("malformed", "Flags that cannot be evaluated return ERROR(MALFORMED) with no "
             "value (the caller's default applies) and never crash. An off flag whose off "
             "variation is valid still serves it, so kill switches keep working.")

    def bad(name, fl, context=None):
        f.add_flag(fl)
        f.case(name, fl["key"], context or ctx(), None, None, MALFORMED)

    bad("off variation out of range", flag("m-off", off=2))
    bad("off variation out of range, flag off", flag("m-off-off", off=5, on=False))
    bad("fallthrough variation out of range", flag("m-ft", fallthrough=2))
    bad("rule variation out of range", flag("m-rule", rules=[rule("r", [], 7)]))
    bad("target variation out of range", flag("m-target", targets=[(3, ["user-1"])]))
    bad("target variation out of range, other user",
        flag("m-target-2", targets=[(3, ["someone-else"])]))
    bad("rollout weights sum below 100000",
        flag("m-sum-low", fallthrough=rollout([(0, 50000), (1, 49999)])))
    bad("rollout weights sum above 100000",
        flag("m-sum-high", fallthrough=rollout([(0, 50000), (1, 50001)])))
    bad("empty rollout", flag("m-empty-rollout", fallthrough={"rollout": {"variations": []}}))
    bad("rollout variation out of range",
        flag("m-rollout-var", fallthrough=rollout([(0, 50000), (2, 50000)])))
    bad("invalid regular expression",
        flag("m-regex", rules=[rule("r", [clause("e", "matches", ["(unclosed"])])]))
    bad("unparsable semver operand",
        flag("m-semver", rules=[rule("r", [clause("v", "semver_gt", ["banana"])])]))
    bad("unparsable date operand",
        flag("m-date", rules=[rule("r", [clause("d", "before", ["yesterday"])])]))
    bad("string operand for a number operator",
        flag("m-lt", rules=[rule("r", [clause("n", "lt", ["5"])])]))
    bad("number operand for a string operator",
        flag("m-sw", rules=[rule("r", [clause("s", "starts_with", [5])])]))
    bad("object operand for in",
        flag("m-in", rules=[rule("r", [clause("s", "in", [{"a": 1}])])]))
    bad("null operand for in", flag("m-in-null", rules=[rule("r", [clause("s", "in", [None])])]))
    bad("malformed rule after the matching one",
        flag("m-late", rules=[rule("ok", []), rule("r", [clause("e", "matches", ["("])])]))
    bad("variation of the wrong kind", flag("m-kind", variations=(True, "false")))
    bad("number flag with a string variation",
        flag("m-kind-num", kind="number", variations=(1, "2"), off=0))
    bad("no variations", flag("m-none", variations=(), off=0, fallthrough=0))
    bad("non-string segment key", flag("m-segkey", rules=[
        rule("r", [clause("", "segment_match", [1])])]))

    f.add_flag(flag("m-broken-but-off", on=False, rules=[rule("r", [clause("e", "matches",
                                                                            ["("])])]))
    f.case("off flag with broken targeting serves its off variation", "m-broken-but-off",
           ctx(), False, 1, OFF)
    f.add_flag(flag("m-bad-fallthrough-off", on=False, fallthrough=9))
    f.case("off flag with a bad fallthrough serves its off variation", "m-bad-fallthrough-off",
           ctx(), False, 1, OFF)
    return f


def main():
    total = 0
    for build in (basics, operators, prerequisites, segments, rollouts, malformed):
        fixture = build()
        count = fixture.write()
        print("%-14s %3d cases" % (fixture.name, count))
        total += count
    print("%-14s %3d cases" % ("total", total))


if __name__ == "__main__":
    main()
