"""Evaluation latency from Python: Vexil's SDK beside LaunchDarkly's and Unleash's Python SDKs,
on the three benchmark flags (schema/testdata/bench: a plain boolean, 10 rules with a segment,
a 33/33/34 experiment) and the same context.

Each peer gets a faithful translation of the same flags (the same rules, clauses, values,
segment and weights; the translation follows loadtest/peers, which proves it agrees with Vexil
in Rust), loaded offline: LaunchDarkly from a flag file (``Files`` data source, events off),
Unleash from a bootstrap (no network, metrics off). A peer's rollout seed (LaunchDarkly) or
groupId (Unleash) is chosen so that it serves the benchmark context the same variation as
Vexil, and every peer's answer is checked before timing. Not part of CI:

    python -m venv /tmp/bench && /tmp/bench/bin/pip install maturin launchdarkly-server-sdk UnleashClient
    (cd sdk/python && VIRTUAL_ENV=/tmp/bench PATH=/tmp/bench/bin:$PATH maturin develop --release)
    /tmp/bench/bin/python sdk/python/bench/bench_eval.py
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "schema" / "testdata" / "bench"
NAMES = ["simple-bool", "targeting", "experiment"]
SEED_TRIES = 1000


# ---------------------------------------------------------------- LaunchDarkly

LD_OPS = {
    "in": "in", "starts_with": "startsWith", "ends_with": "endsWith", "contains": "contains",
    "matches": "matches", "lt": "lessThan", "lte": "lessThanOrEqual", "gt": "greaterThan",
    "gte": "greaterThanOrEqual", "before": "before", "after": "after",
    "semver_eq": "semVerEqual", "semver_lt": "semVerLessThan", "semver_gt": "semVerGreaterThan",
    "segment_match": "segmentMatch",
}


def ld_clause(c: dict) -> dict:
    return {
        "contextKind": "user",
        "attribute": "key" if c["op"] == "segment_match" else c["attribute"],
        "op": LD_OPS[c["op"]],
        "values": c["values"],
        "negate": c.get("negate", False),
    }


def ld_serve(serve: dict, seed: int | None) -> dict:
    if "variation" in serve:
        return {"variation": serve["variation"]}
    r = serve["rollout"]
    out: dict[str, Any] = {"variations": [{"variation": w["variation"], "weight": w["weight"]}
                                          for w in r["variations"]]}
    if r.get("experiment"):
        out["kind"] = "experiment"
    if r.get("bucket_by"):
        out["bucketBy"] = r["bucket_by"]
    if seed is not None:
        out["seed"] = seed
    return {"rollout": out}


def ld_document(snapshot: dict, seed: int | None) -> dict:
    flags = {}
    for f in snapshot["flags"]:
        flags[f["key"]] = {
            "key": f["key"], "version": 1, "on": f["on"], "offVariation": f["off_variation"],
            "variations": [v["value"] for v in f["variations"]],
            "targets": [{"values": t["values"], "variation": t["variation"]}
                        for t in f.get("targets", [])],
            "contextTargets": [],
            "prerequisites": [{"key": p["key"], "variation": p["variation"]}
                              for p in f.get("prerequisites", [])],
            "rules": [{**ld_serve(r["serve"], seed), "id": r["id"],
                       "clauses": [ld_clause(c) for c in r["clauses"]], "trackEvents": False}
                      for r in f.get("rules", [])],
            "fallthrough": ld_serve(f["fallthrough"], seed),
            "salt": f.get("salt") or f["key"],
            "trackEvents": False, "trackEventsFallthrough": False, "clientSide": False,
        }
    segments = {}
    for s in snapshot.get("segments", []):
        segments[s["key"]] = {
            "key": s["key"], "version": 1, "included": s.get("included", []),
            "excluded": s.get("excluded", []), "includedContexts": [], "excludedContexts": [],
            "rules": [{"id": r.get("id", f"r{i}"), "clauses": [ld_clause(c) for c in r["clauses"]],
                       **({"weight": r["weight"]} if r.get("weight") is not None else {}),
                       **({"bucketBy": r["bucket_by"]} if r.get("bucket_by") else {})}
                      for i, r in enumerate(s.get("rules", []))],
            "salt": s.get("salt") or s["key"], "unbounded": False,
        }
    return {"flags": flags, "segments": segments}


def launchdarkly(fixture: dict, tmp: Path) -> tuple[Callable[[], Any], Any]:
    import ldclient
    from ldclient import Context as LDContext
    from ldclient.config import Config
    from ldclient.integrations import Files

    ctx = fixture["context"]
    b = LDContext.builder(ctx["key"]).kind(ctx.get("kind", "user"))
    for k, v in ctx.get("attributes", {}).items():
        b.set(k, v)
    ld_ctx = b.build()
    flag, want = fixture["flag"], fixture["expected"]["variation"]
    has_rollout = "rollout" in json.dumps(fixture["snapshot"])
    for seed in (range(SEED_TRIES) if has_rollout else [None]):
        path = tmp / f"ld-{fixture['name']}.json"
        path.write_text(json.dumps(ld_document(fixture["snapshot"], seed)))
        client = ldclient.LDClient(Config("bench", send_events=False,
                                          update_processor_class=Files.new_data_source(paths=[str(path)])))
        detail = client.variation_detail(flag, ld_ctx, None)
        if detail.variation_index == want:
            default = not fixture["expected"]["value"] if isinstance(fixture["expected"]["value"], bool) else None
            return (lambda: client.variation(flag, ld_ctx, default)), client
        client.close()
    raise SystemExit(f"launchdarkly: no seed serves {flag} variation {want}")


# ---------------------------------------------------------------- Unleash

UNLEASH_RESERVED = {"userId", "sessionId", "environment", "appName", "currentTime",
                    "remoteAddress", "properties"}


def scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def semver_key(v: str) -> tuple:
    core = v.split("-")[0].split("+")[0]
    return tuple(int(x) for x in core.split("."))


def unleash_constraint(c: dict) -> dict:
    name = "userId" if c["attribute"] == "key" else c["attribute"]
    op, vals = c["op"], c["values"]
    simple = {"in": "IN", "starts_with": "STR_STARTS_WITH", "ends_with": "STR_ENDS_WITH",
              "contains": "STR_CONTAINS"}
    out: dict[str, Any] = {"contextName": name, "inverted": c.get("negate", False),
                           "caseInsensitive": False}
    if op in simple:
        out.update(operator=simple[op], values=[scalar(v) for v in vals])
    elif op in ("lt", "lte", "gt", "gte"):
        # x < any(v) <=> x < max(v); x > any(v) <=> x > min(v).
        pick = max if op in ("lt", "lte") else min
        out.update(operator={"lt": "NUM_LT", "lte": "NUM_LTE", "gt": "NUM_GT", "gte": "NUM_GTE"}[op],
                   value=scalar(pick(vals, key=float)))
    elif op in ("semver_lt", "semver_gt"):
        pick = max if op == "semver_lt" else min
        out.update(operator="SEMVER_LT" if op == "semver_lt" else "SEMVER_GT",
                   value=pick(vals, key=semver_key))
    else:
        raise SystemExit(f"unleash: no translation for operator {op}")
    return out


def unleash_document(snapshot: dict, group_id: str | None) -> tuple[dict, dict]:
    """Unleash client features, and how each flag's answer maps back to a variation."""
    seg_src = {s["key"]: s for s in snapshot.get("segments", [])}
    seg_ids: dict[str, list[int]] = {}
    used: list[dict] = []

    def disjuncts(key: str) -> list[int]:
        if key in seg_ids:
            return seg_ids[key]
        s = seg_src.get(key)
        if s is None:
            return []
        alternatives = []
        if s.get("included"):
            alternatives.append([{"contextName": "userId", "operator": "IN", "values": s["included"],
                                  "inverted": False, "caseInsensitive": False}])
        for r in s.get("rules", []):
            cons = []
            if s.get("excluded"):
                cons.append({"contextName": "userId", "operator": "NOT_IN", "values": s["excluded"],
                             "inverted": False, "caseInsensitive": False})
            cons += [unleash_constraint(c) for c in r["clauses"]]
            alternatives.append(cons)
        ids = []
        for cons in alternatives:
            used.append({"id": len(used) + 1, "constraints": cons})
            ids.append(len(used))
        seg_ids[key] = ids
        return ids

    features, shapes = [], {}
    for f in snapshot["flags"]:
        variations = [v["value"] for v in f["variations"]]
        ft = f["fallthrough"]
        if (f["kind"] == "boolean" and not f.get("targets") and not f.get("rules")
                and "variation" in ft and variations[ft["variation"]] is True
                and variations[f["off_variation"]] is False):
            features.append({"name": f["key"], "type": "release", "enabled": f["on"],
                             "project": "default", "impressionData": False,
                             "strategies": [{"name": "default", "parameters": {}, "constraints": []}]})
            shapes[f["key"]] = ("boolean", ft["variation"], f["off_variation"])
            continue
        gid = group_id or f.get("salt") or f["key"]
        strategies: list[dict] = []

        def push(cons: list, segs: list, serve: dict) -> None:
            if "variation" in serve:
                variants = [{"name": str(serve["variation"]), "weight": 1000, "stickiness": "default"}]
                stick = "default"
            else:
                r = serve["rollout"]
                stick = r.get("bucket_by") or "userId"
                variants = [{"name": str(w["variation"]), "weight": w["weight"] // 100,
                             "stickiness": stick} for w in r["variations"]]
            strategies.append({"name": "flexibleRollout", "sortOrder": len(strategies),
                               "parameters": {"rollout": "100", "stickiness": stick, "groupId": gid},
                               "constraints": cons, "segments": segs, "variants": variants})

        for t in f.get("targets", []):
            push([{"contextName": "userId", "operator": "IN", "values": t["values"],
                   "inverted": False, "caseInsensitive": False}], [], {"variation": t["variation"]})
        for r in f.get("rules", []):
            cons, combos = [], [[]]
            for c in r["clauses"]:
                if c["op"] != "segment_match":
                    cons.append(unleash_constraint(c))
                    continue
                choices = [i for k in c["values"] for i in disjuncts(k)]
                combos = [combo + [i] for combo in combos for i in choices]
            for combo in combos:
                push(cons, combo, r["serve"])
        push([], [], ft)
        experiment = "rollout" in ft and ft["rollout"].get("experiment")
        features.append({"name": f["key"], "type": "experiment" if experiment else "release",
                         "enabled": f["on"], "project": "default", "impressionData": False,
                         "strategies": strategies, "variants": []})
        shapes[f["key"]] = ("variants", f["off_variation"])
    return {"version": 2, "features": features, "segments": used}, shapes


def unleash(fixture: dict, tmp: Path) -> tuple[Callable[[], Any], Any]:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    ctx = fixture["context"]
    u_ctx = {"userId": ctx["key"], "properties": {k: scalar(v) for k, v in ctx.get("attributes", {}).items()}}
    flag, want = fixture["flag"], fixture["expected"]["variation"]
    has_rollout = "rollout" in json.dumps(fixture["snapshot"])
    for i in (range(SEED_TRIES) if has_rollout else [None]):
        doc, shapes = unleash_document(fixture["snapshot"], None if i is None else f"{flag}-{i}")
        cache = FileCache(f"bench-{fixture['name']}-{i}", directory=str(tmp))
        cache.bootstrap_from_dict(doc)
        client = UnleashClient(url="http://127.0.0.1:9", app_name="bench", cache=cache,
                               disable_metrics=True, disable_registration=True,
                               refresh_interval=86_400)
        client.initialize_client(fetch_toggles=False)
        shape = shapes[flag]
        if shape[0] == "boolean":
            got = shape[1] if client.is_enabled(flag, u_ctx) else shape[2]
            call = lambda: client.is_enabled(flag, u_ctx)  # noqa: E731
        else:
            v = client.get_variant(flag, u_ctx)
            got = int(v["name"]) if v.get("feature_enabled") and v.get("enabled") else shape[1]
            call = lambda: client.get_variant(flag, u_ctx)  # noqa: E731
        if got == want:
            return call, client
        client.destroy()
    raise SystemExit(f"unleash: no groupId serves {flag} variation {want}")


# ---------------------------------------------------------------- Vexil

def vexil_calls(fixture: dict, tmp: Path) -> tuple[dict[str, Callable[[], Any]], Any]:
    import vexil

    path = tmp / f"vexil-{fixture['name']}.json"
    path.write_text(json.dumps(fixture["snapshot"]))
    client = vexil.Client("bench", file=str(path), events=False)
    flag, expected = fixture["flag"], fixture["expected"]
    ctx_obj = vexil.Context.from_dict(fixture["context"])
    ctx_dict = {"key": fixture["context"]["key"], "kind": fixture["context"].get("kind"),
                **fixture["context"].get("attributes", {})}
    d = client.json_variation_detail(flag, ctx_obj, None)
    assert d.variation_index == expected["variation"], (flag, d)
    value = expected["value"]
    if isinstance(value, bool):
        method, default = client.bool_variation, not value
    else:
        method, default = client.string_variation, ""
    return {
        "vexil (Context)": lambda: method(flag, ctx_obj, default),
        "vexil (dict context)": lambda: method(flag, ctx_dict, default),
    }, client


# ---------------------------------------------------------------- timing

def ns_per_call(call: Callable[[], Any], target_s: float, repeats: int) -> float:
    n, t = 1, 0.0
    while t < 0.05:
        n *= 2
        t = timeit.timeit(call, number=n)
    number = max(1, int(n * target_s / t))
    runs = timeit.repeat(call, number=number, repeat=repeats)
    return statistics.median(runs) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON rather than a table")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in NAMES:
            fixture = json.loads((FIXTURES / f"{name}.json").read_text())
            calls, vclient = vexil_calls(fixture, tmp)
            ld_call, ld_client = launchdarkly(fixture, tmp)
            un_call, un_client = unleash(fixture, tmp)
            calls["launchdarkly-server-sdk"] = ld_call
            calls["UnleashClient"] = un_call
            results[name] = {k: ns_per_call(c, args.seconds, args.repeats) for k, c in calls.items()}
            vclient.close()
            ld_client.close()
            un_client.destroy()
    if args.json:
        print(json.dumps(results, indent=1))
        return
    import importlib.metadata as md
    print(f"Python {sys.version.split()[0]}; vexil {md.version('vexil')}, "
          f"launchdarkly-server-sdk {md.version('launchdarkly-server-sdk')}, "
          f"UnleashClient {md.version('UnleashClient')}")
    names = list(next(iter(results.values())))
    print("| flag | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for flag, row in results.items():
        print(f"| {flag} | " + " | ".join(f"{row[n]:,.0f} ns" for n in names) + " |")


if __name__ == "__main__":
    main()
