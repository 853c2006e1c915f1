"""Every case of the shared evaluation fixtures (schema/testdata/eval) through the public
Python API: the same value, variation and reason as the engine, the server, the relay and the
Rust SDK."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import vexil
from conftest import EVAL_FIXTURES

FILES = sorted(EVAL_FIXTURES.glob("*.json"))


def same(a: object, b: object) -> bool:
    """JSON equality that tells 1 from 1.0 and True from 1 (Python's == does not)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def check(client: vexil.Client, file: str, case: dict) -> list[str]:
    failures: list[str] = []
    flag, expected = case["flag"], case["expected"]
    as_dict = case["context"]
    as_object = vexil.Context.from_dict(as_dict)

    def expect(method: str, ok: bool, got: object) -> None:
        if not ok:
            failures.append(f"{file}/{case['name']} via {method}: got {got!r}, expected {expected}")

    sentinel = object()
    d = client.json_variation_detail(flag, as_dict, sentinel)
    error = expected["reason"]["kind"] == "ERROR"
    expect(
        "json_variation_detail",
        (d.value is sentinel if error else same(d.value, expected["value"]))
        and d.variation_index == expected["variation"]
        and d.reason == expected["reason"]
        and d.in_experiment == expected.get("in_experiment", False),
        d,
    )
    v = client.json_variation(flag, as_object, sentinel)
    expect("json_variation", v is sentinel if error else same(v, expected["value"]), v)

    if error:
        # Every typed method returns its default with the same reason.
        d = client.bool_variation_detail(flag, as_object, True)
        expect("bool_variation_detail (error)",
               d.value is True and d.variation_index is None and d.reason == expected["reason"], d)
        d = client.string_variation_detail(flag, as_object, "default")
        expect("string_variation_detail (error)",
               d.value == "default" and d.variation_index is None
               and d.reason == expected["reason"], d)
        expect("string_variation (error)",
               client.string_variation(flag, as_object, "default") == "default", None)
        return failures

    def typed(d: vexil.EvaluationDetail) -> bool:
        return d.variation_index == expected["variation"] and d.reason == expected["reason"]

    value = expected["value"]
    if isinstance(value, bool):
        d = client.bool_variation_detail(flag, as_object, not value)
        expect("bool_variation_detail", d.value is value and typed(d), d)
        v = client.bool_variation(flag, as_dict, not value)
        expect("bool_variation", v is value, v)
    elif isinstance(value, str):
        d = client.string_variation_detail(flag, as_object, "\0default")
        expect("string_variation_detail", d.value == value and typed(d), d)
        v = client.string_variation(flag, as_dict, "\0default")
        expect("string_variation", v == value, v)
    elif isinstance(value, (int, float)):
        d = client.number_variation_detail(flag, as_object, math.nan)
        expect("number_variation_detail", d.value == value and typed(d), d)
        v = client.number_variation(flag, as_dict, math.nan)
        expect("number_variation", v == value, v)
    return failures


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_fixture_case_through_the_public_api(path: Path, snapshot_file) -> None:
    fixture = json.loads(path.read_text())
    client = vexil.Client("unused", file=snapshot_file(fixture["snapshot"]), events=False)
    try:
        assert client.is_initialized(), client.status()
        assert client.status()["origin"] == "file"
        failures = [f for case in fixture["cases"] for f in check(client, fixture["name"], case)]
        assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    finally:
        client.close()


def test_the_fixtures_are_all_there() -> None:
    cases = sum(len(json.loads(p.read_text())["cases"]) for p in FILES)
    assert len(FILES) >= 6 and cases > 100, (len(FILES), cases)
