"""The OpenFeature provider through openfeature-sdk's own client: OpenFeature's expectations
for values, reasons (STATIC/DEFAULT/TARGETING_MATCH/SPLIT/DISABLED/ERROR), variants and error
codes (FLAG_NOT_FOUND, TYPE_MISMATCH, PARSE_ERROR, PROVIDER_NOT_READY), context mapping,
provider status, events and tracking."""

from __future__ import annotations

import datetime
import threading

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

import vexil
from vexil.openfeature import VexilProvider, to_vexil_context

SNAPSHOT = {
    "version": 3,
    "flags": [
        {"key": "beta", "kind": "boolean",
         "variations": [{"value": True, "name": "on"}, {"value": False, "name": "off"}],
         "on": True, "off_variation": 1, "fallthrough": {"variation": 1},
         "rules": [{"id": "pro", "serve": {"variation": 0}, "clauses": [
             {"attribute": "plan", "op": "in", "values": ["pro"]}]}],
         "targets": [{"variation": 0, "values": ["vip"]}]},
        {"key": "disabled", "kind": "boolean",
         "variations": [{"value": True}, {"value": False}],
         "on": False, "off_variation": 1, "fallthrough": {"variation": 0}},
        {"key": "split", "kind": "string",
         "variations": [{"value": "a"}, {"value": "b"}],
         "on": True, "off_variation": 0, "salt": "s",
         "fallthrough": {"rollout": {"experiment": True, "variations": [
             {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}},
        {"key": "device-only", "kind": "string", "variations": [{"value": "no"}, {"value": "yes"}],
         "on": True, "off_variation": 0, "fallthrough": {"variation": 0},
         "rules": [{"id": "dev", "serve": {"variation": 1}, "clauses": [
             {"attribute": "kind", "op": "in", "values": ["device"]},
             {"attribute": "since", "op": "before", "values": ["2030-01-01T00:00:00Z"]}]}]},
        {"key": "count", "kind": "number", "variations": [{"value": 3}, {"value": 2.5}],
         "on": True, "off_variation": 1, "fallthrough": {"variation": 0}},
        {"key": "fraction", "kind": "number", "variations": [{"value": 2.5}],
         "on": True, "off_variation": 0, "fallthrough": {"variation": 0}},
        {"key": "config", "kind": "json", "variations": [{"value": {"a": [1, 2]}}, {"value": [1]}],
         "on": True, "off_variation": 1, "fallthrough": {"variation": 0}},
        {"key": "broken", "kind": "boolean", "variations": [{"value": True}],
         "on": True, "off_variation": 0, "fallthrough": {"variation": 7}},
    ],
    "segments": [],
}


@pytest.fixture
def of_client(snapshot_file):
    client = vexil.Client("unused", file=snapshot_file(SNAPSHOT), events=False)
    provider = VexilProvider(client)
    api.set_provider_and_wait(provider)
    yield api.get_client()
    api.shutdown()
    client.close()


def test_values_reasons_and_variants(of_client) -> None:
    d = of_client.get_boolean_details("beta", False, EvaluationContext("vip"))
    assert (d.value, d.reason, d.variant, d.error_code) == (True, Reason.TARGETING_MATCH, "on", None)
    d = of_client.get_boolean_details("beta", True, EvaluationContext("u", {"plan": "pro"}))
    assert (d.value, d.reason, d.variant) == (True, Reason.TARGETING_MATCH, "on")
    d = of_client.get_boolean_details("beta", True, EvaluationContext("u"))
    assert (d.value, d.reason, d.variant) == (False, Reason.DEFAULT, "off")
    d = of_client.get_boolean_details("disabled", True, EvaluationContext("u"))
    assert (d.value, d.reason, d.variant) == (False, Reason.DISABLED, "1")
    d = of_client.get_string_details("split", "z", EvaluationContext("user-1"))
    assert d.reason == Reason.SPLIT and d.value in ("a", "b") and d.variant in ("0", "1")
    assert d.flag_metadata == {"inExperiment": True}
    assert of_client.get_integer_value("count", 0) == 3
    assert of_client.get_float_value("fraction", 0.0) == 2.5
    assert of_client.get_float_value("count", 0.0) == 3.0
    assert of_client.get_object_value("config", {}) == {"a": [1, 2]}


def test_error_codes(of_client) -> None:
    d = of_client.get_boolean_details("nope", True)
    assert (d.value, d.reason, d.error_code) == (True, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
    assert "nope" in (d.error_message or "")
    d = of_client.get_string_details("beta", "dflt")
    assert (d.value, d.reason, d.error_code) == ("dflt", Reason.ERROR, ErrorCode.TYPE_MISMATCH)
    d = of_client.get_integer_details("fraction", 9)
    assert (d.value, d.error_code) == (9, ErrorCode.TYPE_MISMATCH)
    d = of_client.get_object_details("count", {"d": 1})
    assert (d.value, d.error_code) == ({"d": 1}, ErrorCode.TYPE_MISMATCH)
    d = of_client.get_boolean_details("broken", False)
    assert (d.value, d.reason, d.error_code) == (False, Reason.ERROR, ErrorCode.PARSE_ERROR)


def test_the_evaluation_context_is_mapped() -> None:
    ctx = to_vexil_context(EvaluationContext("dev-1", {
        "kind": "device", "key": "ignored", "since": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "tags": ["x", 1], "nested": {"a": {"b": True}}, "bad": object()}))
    assert (ctx.key, ctx.kind) == ("dev-1", "device")
    assert ctx.attributes == {"since": "2026-01-02T03:04:05+00:00", "tags": ["x", 1],
                              "nested": {"a": {"b": True}}}
    assert to_vexil_context(EvaluationContext()).key is None


def test_kind_and_datetimes_reach_rules(of_client) -> None:
    ctx = EvaluationContext("d", {"kind": "device",
                                  "since": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)})
    assert of_client.get_string_value("device-only", "x", ctx) == "yes"
    assert of_client.get_string_value("device-only", "x", EvaluationContext("d")) == "no"


def test_a_provider_without_flags_is_not_ready(tmp_path) -> None:
    provider = VexilProvider(sdk_key="k", offline=True, init_wait=0.1)
    api.set_provider_and_wait(provider)
    try:
        d = api.get_client().get_boolean_details("beta", True)
        assert (d.value, d.error_code) == (True, ErrorCode.PROVIDER_NOT_READY)
    finally:
        api.shutdown()
    assert provider.client is None  # owned: closed and dropped by shutdown


def test_a_source_that_gives_up_makes_the_provider_fatal(tmp_path) -> None:
    # A snapshot file that does not exist, not watched: the file source gives up for good.
    provider = VexilProvider(sdk_key="k", file=tmp_path / "missing.json", init_wait=5)
    try:
        with pytest.raises(ProviderFatalError) as raised:
            api.set_provider_and_wait(provider)
        assert "missing.json" in (raised.value.error_message or "")
        assert api.get_client().get_provider_status() == ProviderStatus.FATAL
        d = api.get_client().get_boolean_details("beta", True)
        assert (d.value, d.error_code) == (True, ErrorCode.PROVIDER_FATAL)
    finally:
        api.shutdown()


def test_after_initialisation_a_lost_stream_is_stale_and_a_refused_key_fatal() -> None:
    """A real HTTP server speaking the SDK protocol: the snapshot and the first stream
    connection get the flags, the stream is ended on cue, and every request after that is
    refused with 401 (the key was revoked meanwhile)."""
    import http.server
    import json
    import queue

    end_stream = threading.Event()
    connections = []

    class Stream(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            connections.append(self.path)
            if self.path.startswith("/sdk/v1/snapshot") and not end_stream.is_set():
                body = json.dumps(SNAPSHOT).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if end_stream.is_set() or sum(p.startswith("/sdk/v1/stream") for p in connections) > 1:
                self.send_response(401)
                self.send_header("content-type", "application/problem+json")
                self.send_header("content-length", "14")
                self.end_headers()
                self.wfile.write(b'{"status":401}')
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            frame = f"event: put\nid: 3\ndata: {json.dumps(SNAPSHOT)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
            end_stream.wait(30)
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stale: queue.Queue = queue.Queue()
    errors: queue.Queue = queue.Queue()
    try:
        # Reconnection slow enough that STALE is not coalesced with the failure after it.
        provider = VexilProvider(sdk_key="revoked-key", base_url=f"http://127.0.0.1:{server.server_port}",
                                 events=False, reconnect_delay=0.2, max_reconnect_delay=0.4)
        api.set_provider_and_wait(provider, "revoked")
        client = api.get_client("revoked")
        assert provider.client is not None
        assert provider.client.status()["state"] == "ready", (provider.client.status(), connections)
        client.add_handler(ProviderEvent.PROVIDER_STALE, stale.put)
        client.add_handler(ProviderEvent.PROVIDER_ERROR, errors.put)
        end_stream.set()
        details = stale.get(timeout=10)
        assert details.message and "serving the last-known flags" in details.message, details
        details = errors.get(timeout=10)
        assert details.error_code == ErrorCode.PROVIDER_FATAL, details
        assert details.message and "401" in details.message, details
        assert client.get_provider_status() == ProviderStatus.FATAL
        # OpenFeature answers defaults once FATAL; the Vexil client keeps its last flags.
        assert provider.client.bool_variation("beta", "vip", False) is True
    finally:
        end_stream.set()
        api.shutdown()
        server.shutdown()
