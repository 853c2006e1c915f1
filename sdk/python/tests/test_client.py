"""The client's Python surface: contexts in every accepted form, errors that never raise,
typing of values, listeners, thread safety, the GIL released while waiting, and shutdown."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading

import pytest

import vexil

SNAPSHOT = {
    "version": 7,
    "flags": [
        {"key": "beta", "kind": "boolean",
         "variations": [{"value": True, "name": "on"}, {"value": False, "name": "off"}],
         "on": True, "off_variation": 1, "fallthrough": {"variation": 1},
         "rules": [{"id": "pro-in-fr", "serve": {"variation": 0}, "clauses": [
             {"attribute": "plan", "op": "in", "values": ["pro"]},
             {"attribute": "country", "op": "in", "values": ["FR"]}]}],
         "targets": [{"variation": 0, "values": ["vip"]}]},
        {"key": "banner", "kind": "string", "variations": [{"value": "hello"}, {"value": "bye"}],
         "on": True, "off_variation": 1, "fallthrough": {"variation": 0}},
        {"key": "ratio", "kind": "number", "variations": [{"value": 0.25}, {"value": 3}],
         "on": True, "off_variation": 1, "fallthrough": {"variation": 0},
         "rules": [{"id": "whole", "serve": {"variation": 1}, "clauses": [
             {"attribute": "kind", "op": "in", "values": ["org"]}]}]},
        {"key": "limits", "kind": "json",
         "variations": [{"value": {"max": 10, "tags": ["a", None, 2.5], "deep": {"x": True}}}],
         "on": True, "off_variation": 0, "fallthrough": {"variation": 0}},
    ],
    "segments": [],
}


@pytest.fixture
def client(snapshot_file):
    c = vexil.Client("unused", file=snapshot_file(SNAPSHOT), events=False)
    yield c
    c.close()


def test_contexts_in_every_form_evaluate_alike(client) -> None:
    forms = [
        vexil.Context("u1", plan="pro", country="FR"),
        vexil.Context("u1", attributes={"plan": "pro", "country": "FR"}),
        vexil.Context.from_dict({"key": "u1", "plan": "pro", "country": "FR"}),
        {"key": "u1", "plan": "pro", "country": "FR"},
        {"key": "u1", "attributes": {"plan": "pro", "country": "FR"}},
    ]
    for ctx in forms:
        d = client.bool_variation_detail("beta", ctx, False)
        assert d.value is True, ctx
        assert d.reason == {"kind": "RULE_MATCH", "rule_index": 0, "rule_id": "pro-in-fr"}
        assert d.variation_name == "on" and d.variation_index == 0
        assert d.openfeature_reason == "TARGETING_MATCH" and d.error_kind is None
    # A str is a key; None is anonymous.
    assert client.bool_variation_detail("beta", "vip", False).reason == {"kind": "TARGET_MATCH"}
    assert client.bool_variation_detail("beta", None, True).reason == {"kind": "FALLTHROUGH"}
    # The kind is what the `kind` clause reads.
    assert client.number_variation("ratio", vexil.Context("o", kind="org"), 0.0) == 3.0
    assert client.int_variation("ratio", {"key": "o", "kind": "org"}, 0) == 3


def test_the_context_type() -> None:
    c = vexil.Context("u1", kind="user", attributes={"plan": "pro"}, age=42, tags=["a", 1])
    assert (c.key, c.kind) == ("u1", "user")
    assert c.attributes == {"age": 42, "plan": "pro", "tags": ["a", 1]}
    assert c.get("age") == 42 and c.get("missing", "x") == "x"
    assert c.to_dict() == {"key": "u1", "kind": "user",
                           "attributes": {"age": 42, "plan": "pro", "tags": ["a", 1]}}
    assert vexil.Context.from_dict(c.to_dict()) == c
    assert vexil.Context().key is None
    with pytest.raises(ValueError, match='attribute "bad" holds a value of type object'):
        vexil.Context("u", bad=object())
    with pytest.raises(ValueError, match="non-finite"):
        vexil.Context("u", x=math.inf)
    with pytest.raises(ValueError, match="key must be a str"):
        vexil.Context.from_dict({"key": 5})


def test_values_have_their_python_types(client) -> None:
    assert client.string_variation("banner", "u", "x") == "hello"
    assert client.number_variation("ratio", "u", 0.0) == 0.25
    # 0.25 is not an integer: the default, WRONG_TYPE.
    d = client.int_variation_detail("ratio", "u", -1)
    assert (d.value, d.error_kind, d.openfeature_error_code) == (-1, "WRONG_TYPE", "TYPE_MISMATCH")
    v = client.json_variation("limits", "u", None)
    assert v == {"max": 10, "tags": ["a", None, 2.5], "deep": {"x": True}}
    assert isinstance(v["max"], int) and isinstance(v["tags"][2], float)
    assert client.all_flags("u") == {"banner": "hello", "beta": False, "ratio": 0.25,
                                     "limits": v}
    assert client.version == 7


def test_evaluation_never_raises(client, caplog) -> None:
    d = client.bool_variation_detail("missing", "u", True)
    assert d.value is True and d.error_kind == "FLAG_NOT_FOUND"
    assert d.reason == {"kind": "ERROR", "error_kind": "FLAG_NOT_FOUND"}
    assert d.openfeature_reason == "ERROR" and d.is_default_value
    d = client.string_variation_detail("beta", "u", "dflt")
    assert (d.value, d.error_kind) == ("dflt", "WRONG_TYPE")
    default = {"fallback": True}
    assert client.json_variation("missing", "u", default) is default
    # A context that cannot be converted: the default, logged, INVALID_CONTEXT.
    with caplog.at_level(logging.WARNING, logger="vexil"):
        assert client.bool_variation("beta", {"key": "vip", "x": object()}, False) is False
        assert client.bool_variation("beta", 42, True) is True
        d = client.string_variation_detail("banner", {"key": 3}, "d")
        client.track("purchase", object())
    assert (d.value, d.error_kind, d.openfeature_error_code) == ("d", "INVALID_CONTEXT",
                                                                  "INVALID_CONTEXT")
    assert sum("invalid context" in r.getMessage() for r in caplog.records) == 4


def test_a_client_without_flags_serves_defaults(tmp_path) -> None:
    with vexil.Client("k", offline=True, last_known_good=tmp_path / "none.json") as c:
        assert not c.is_initialized()
        assert c.status()["state"] == "offline"
        d = c.bool_variation_detail("beta", "u", True)
        assert (d.value, d.error_kind, d.openfeature_error_code) == (
            True, "CLIENT_NOT_READY", "PROVIDER_NOT_READY")
    assert c.closed


def test_bad_configuration_raises_at_construction() -> None:
    with pytest.raises(ValueError, match="SDK key"):
        vexil.Client("has space", start_wait=0)
    with pytest.raises(ValueError, match="base URL"):
        vexil.Client("k", base_url="localhost", start_wait=0)


def test_many_threads_evaluate_one_client(client) -> None:
    errors: list[str] = []

    def work(i: int) -> None:
        ctx = vexil.Context("vip" if i % 2 else f"user-{i}")
        for _ in range(2000):
            if client.bool_variation("beta", ctx, False) is not bool(i % 2):
                errors.append(f"thread {i}")
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_waiting_for_initialisation_releases_the_gil() -> None:
    # Nothing listens on port 9 of localhost: the client keeps retrying, and the wait lasts.
    c = vexil.Client("k", base_url="http://127.0.0.1:9", start_wait=0, events=False)
    done = threading.Event()
    result: list[bool] = []

    def wait() -> None:
        result.append(c.wait_for_initialization(0.5))
        done.set()

    t = threading.Thread(target=wait)
    t.start()
    spins = 0
    while not done.is_set():
        spins += 1
    t.join()
    c.close()
    assert result == [False]
    # Had the wait held the GIL, this thread could not have run meanwhile.
    assert spins > 10_000, spins


def test_listeners_and_close(snapshot_file) -> None:
    c = vexil.Client("unused", file=snapshot_file(SNAPSHOT), events=False)
    lid = c.on_flag_change(lambda change: None)
    assert c.remove_flag_change_listener(lid)
    assert not c.remove_flag_change_listener(lid)
    c.close()
    c.close()
    # Evaluations keep working on the flags held.
    assert c.string_variation("banner", "u", "x") == "hello"
    assert "Client(state=" in repr(c)


def test_a_process_exits_cleanly_with_a_client_left_open(snapshot_file) -> None:
    path = snapshot_file(SNAPSHOT)
    code = (
        "import vexil\n"
        f"c = vexil.Client('k', file={str(path)!r}, events=False)\n"
        "c.on_flag_change(lambda ch: None)\n"
        "print(c.string_variation('banner', 'u', 'x'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello"
