"""End to end: the Python SDK against a real `vexil-server` (SQLite) and a real `vexil-relay`,
both child processes. Initialisation, a flip received over the stream, the relay killed and
restarted (the client reconnects and catches up), `track` events stored by the server, the
OpenFeature provider's change events, and a new process serving the last-known-good file
once everything is stopped."""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import sys
import textwrap

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus
from openfeature.track import TrackingEventDetails

import vexil
from conftest import WAIT, wait_until
from vexil.openfeature import VexilProvider

# Quick reconnection and event delivery, so that the tests wait milliseconds, not seconds.
FAST = dict(reconnect_delay=0.05, max_reconnect_delay=0.5, events_flush_interval=0.1,
            start_wait=WAIT)


def changes_of(client: vexil.Client) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    client.on_flag_change(q.put)
    return q


def next_change(q: queue.Queue, flag: str) -> vexil.FlagChange:
    while True:
        change = q.get(timeout=WAIT)
        if flag in change:
            return change


def stored_events(server, kind: str) -> list[tuple]:
    with sqlite3.connect(server.db, timeout=WAIT) as db:
        return db.execute(
            "SELECT key, context_key, value FROM events WHERE kind = ? ORDER BY time_ms", (kind,)
        ).fetchall()


def test_streams_a_flip_and_reconnects_after_the_relay_restarts(stack) -> None:
    server, relay = stack
    with vexil.Client(server.sdk_key, base_url=relay.url, events=False, **FAST) as client:
        status = client.status()
        assert (status["state"], status["origin"]) == ("ready", "upstream"), status
        user = vexil.Context("u1")
        d = client.bool_variation_detail("checkout", user, False)
        assert (d.value, d.variation_name, d.reason) == (True, "on", {"kind": "FALLTHROUGH"})

        changes = changes_of(client)
        server.set_on("checkout", False)
        change = next_change(changes, "checkout")
        assert change.origin == "upstream" and change.version == client.version
        d = client.bool_variation_detail("checkout", user, True)
        assert (d.value, d.reason) == (False, {"kind": "OFF"})

        # The relay dies: the client keeps serving what it has, and goes stale.
        relay.kill()
        wait_until("the client to notice", lambda: client.status()["state"] == "stale")
        assert client.bool_variation("checkout", user, True) is False
        server.set_on("checkout", True)  # a change it cannot hear yet

        # The relay comes back at the same address: the client reconnects and catches up.
        relay.start()
        next_change(changes, "checkout")
        assert client.bool_variation("checkout", user, False) is True
        wait_until("the client to be ready again", lambda: client.status()["state"] == "ready")


def test_track_events_reach_the_server(stack) -> None:
    server, relay = stack
    with vexil.Client(server.sdk_key, base_url=relay.url, **FAST) as client:
        client.bool_variation("checkout", vexil.Context("buyer-1"), False)  # a summary
        client.track("purchase", vexil.Context("buyer-1"), 39.5)
        client.track("signup", {"key": "buyer-2", "kind": "user"})
        client.flush()
        rows = wait_until("the events in the server's database",
                          lambda: (r := stored_events(server, "custom")) and len(r) == 2 and r)
        assert sorted(rows) == [("purchase", "buyer-1", 39.5), ("signup", "buyer-2", None)]
        # Counted once the server's answer is read, which may follow the rows' commit.
        wait_until("the events counted as sent", lambda: client.status()["events"]["sent"] >= 2)
        # The summary the server stored names this package, not the Rust SDK it wraps.
        senders = wait_until("the summary in the server's database", lambda: stored_senders(server))
        assert senders == [f"vexil-python/{vexil.__version__}"]


def stored_senders(server) -> list[str]:
    with sqlite3.connect(server.db, timeout=WAIT) as db:
        return [r[0] for r in db.execute(
            "SELECT DISTINCT json_extract(detail, '$.sdk.name') || '/' || "
            "json_extract(detail, '$.sdk.version') FROM events WHERE kind = 'summary'")]


def test_the_openfeature_provider_on_a_real_stream(stack) -> None:
    server, relay = stack
    provider = VexilProvider(sdk_key=server.sdk_key, base_url=relay.url, **{
        k: v for k, v in FAST.items() if k != "start_wait"})
    events: queue.Queue = queue.Queue()
    stale: queue.Queue = queue.Queue()
    ready: queue.Queue = queue.Queue()
    api.set_provider_and_wait(provider)
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, events.put)
    api.add_handler(ProviderEvent.PROVIDER_STALE, stale.put)
    api.add_handler(ProviderEvent.PROVIDER_READY, ready.put)
    # A READY handler added to a ready provider runs at once: that one is not the test's.
    ready.get(timeout=WAIT)
    try:
        of = api.get_client()
        ctx = EvaluationContext("u1")
        assert of.get_boolean_value("checkout", False, ctx) is True
        server.set_on("checkout", False)
        details = events.get(timeout=WAIT)
        assert "checkout" in (details.flags_changed or [])
        d = of.get_boolean_details("checkout", True, ctx)
        assert (d.value, d.variant, d.reason) == (False, "off", "DISABLED")
        of.track("checkout-completed", ctx, TrackingEventDetails(value=12.0))
        assert provider.client is not None
        provider.client.flush()
        wait_until("the tracked event at the server",
                   lambda: ("checkout-completed", "u1", 12.0) in stored_events(server, "custom"))

        # The relay dies: PROVIDER_STALE, and the last-known flags are still served.
        relay.kill()
        details = stale.get(timeout=WAIT)
        assert details.message and "serving the last-known flags" in details.message, details
        assert of.get_provider_status() == ProviderStatus.STALE
        assert of.get_boolean_value("checkout", True, ctx) is False
        # Back: PROVIDER_READY.
        relay.start()
        details = ready.get(timeout=WAIT)
        assert details.message == "flags current", details
        assert of.get_provider_status() == ProviderStatus.READY
    finally:
        api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, events.put)
        api.remove_handler(ProviderEvent.PROVIDER_STALE, stale.put)
        api.remove_handler(ProviderEvent.PROVIDER_READY, ready.put)
        api.shutdown()


def test_a_refused_sdk_key_makes_the_provider_fatal(stack) -> None:
    server, _ = stack
    errors: queue.Queue = queue.Queue()
    api.add_handler(ProviderEvent.PROVIDER_ERROR, errors.put)
    try:
        provider = VexilProvider(sdk_key="not-a-real-key", base_url=server.url, events=False,
                                 init_wait=WAIT)
        api.set_provider(provider, "refused")
        details = errors.get(timeout=WAIT)
        assert details.error_code == ErrorCode.PROVIDER_FATAL, details
        assert api.get_client("refused").get_provider_status() == ProviderStatus.FATAL
    finally:
        api.remove_handler(ProviderEvent.PROVIDER_ERROR, errors.put)
        api.shutdown()


def run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=WAIT * 2)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_new_process_serves_the_last_known_good_file(stack, tmp_path) -> None:
    server, relay = stack
    lkg = tmp_path / "flags.json"
    # A first process: ready from the relay; exits without closing its client, so the
    # last-known-good file and its pending event are written at interpreter exit.
    first = run_python(f"""
        import json, vexil
        c = vexil.Client({server.sdk_key!r}, base_url={relay.url!r}, last_known_good={str(lkg)!r},
                         start_wait=30, events_flush_interval=60)
        c.track("first-process", "p1")
        print(json.dumps({{"state": c.status()["state"], "value": c.bool_variation("checkout", "u", False),
                           "version": c.version}}))
    """)
    assert first["state"] == "ready" and first["value"] is True
    assert lkg.exists()
    wait_until("the event sent at exit", lambda: any(
        r[0] == "first-process" for r in stored_events(server, "custom")))

    # Everything stops.
    relay.stop()
    server.stop()

    second = run_python(f"""
        import json, vexil
        c = vexil.Client({server.sdk_key!r}, base_url={relay.url!r}, last_known_good={str(lkg)!r},
                         start_wait=1, init_timeout=0.2, events=False)
        d = c.bool_variation_detail("checkout", "u", False)
        s = c.status()
        print(json.dumps({{"state": s["state"], "origin": s["origin"], "version": c.version,
                           "value": d.value, "reason": d.reason}}))
    """)
    assert second == {"state": "stale", "origin": "last_known_good", "version": first["version"],
                      "value": True, "reason": {"kind": "FALLTHROUGH"}}
