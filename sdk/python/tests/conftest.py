"""Shared test helpers: the repository's paths, snapshot files, and the real control plane and
relay run as child processes (their binaries built by cargo; see ci.sh)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
EVAL_FIXTURES = REPO / "schema" / "testdata" / "eval"
BENCH_FIXTURES = REPO / "schema" / "testdata" / "bench"

# How long any single wait may take before a test fails.
WAIT = 30.0


def wait_until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Polls `check` (every 20 ms) until it returns something truthy; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Callable[[dict], Path]:
    """Writes an environment snapshot to a file a client can load (`file=`)."""
    counter = [0]

    def write(snapshot: dict) -> Path:
        counter[0] += 1
        path = tmp_path / f"snapshot-{counter[0]}.json"
        path.write_text(json.dumps(snapshot))
        return path

    return write


def _binary(names: tuple[str, ...], env: str) -> Path:
    """A server or relay binary: `$env`, else the first of `names` built in the cargo target
    directory (`vexil-server`, or the end-to-end crate's identical `vexil-e2e-server`)."""
    explicit = os.environ.get(env)
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"
    for name in names:
        if (target / name).exists():
            return target / name
    pytest.fail(f"none of {names} in {target}: build them with cargo (see ci.sh) or set {env}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose output is read continuously (its last lines kept for failures)."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.lines: deque[str] = deque(maxlen=300)
        self.listening: Optional[str] = None
        self._listening = threading.Event()
        full_env = {**os.environ, "NO_COLOR": "1", **env}
        self.proc = subprocess.Popen(
            args,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if "listening on http://" in line and self.listening is None:
                self.listening = "http://" + line.split("listening on http://", 1)[1].split()[0]
                self._listening.set()

    def wait_listening(self) -> str:
        if not self._listening.wait(WAIT):
            self.stop()
            pytest.fail(f"{self.name} did not say where it listens:\n{self.logs()}")
        assert self.listening is not None
        return self.listening

    def logs(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no draining, no goodbye."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)


class Server:
    """`vexil-server` on a SQLite file, with project `p`, environment `prod`, a boolean flag
    `checkout` (on, serving true), an SDK key and a relay key."""

    def __init__(self, directory: Path) -> None:
        self.db = directory / "vexil.db"
        self.admin = f"vxa_{uuid.uuid4().hex}"
        self.process = Process(
            [str(_binary(("vexil-server", "vexil-e2e-server"), "VEXIL_SERVER_BIN"))],
            {
                "VEXIL_LISTEN": "127.0.0.1:0",
                "VEXIL_DATABASE_URL": str(self.db),
                "VEXIL_BOOTSTRAP_TOKEN": self.admin,
                "RUST_LOG": "info,sqlx=warn,tower_http=warn",
            },
            "vexil-server",
        )
        self.url = self.process.wait_listening()
        self.api("POST", "/api/v1/projects", {"key": "p", "name": "p"}, 201)
        self.api("POST", "/api/v1/projects/p/environments", {"key": "prod", "name": "prod"}, 201)
        self.api(
            "POST",
            "/api/v1/projects/p/flags",
            {"key": "checkout", "name": "checkout", "kind": "boolean",
             "variations": [{"value": True, "name": "on"}, {"value": False, "name": "off"}]},
            201,
        )
        self.set_on("checkout", True)
        self.sdk_key = self.api(
            "POST", "/api/v1/projects/p/environments/prod/sdk-keys", {"name": "python"}, 201
        )["secret"]
        self.relay_key = self.api(
            "POST",
            "/api/v1/relay-keys",
            {"name": "edge", "environments": [{"project": "p", "environment": "prod"}]},
            201,
        )["secret"]

    def api(self, method: str, path: str, body: Optional[dict], status: int) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("authorization", f"Bearer {self.admin}")
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as res:
                got, text = res.status, res.read().decode()
        except urllib.error.HTTPError as e:
            got, text = e.code, e.read().decode()
        assert got == status, f"{method} {path}: {got} {text}\n{self.process.logs()}"
        return json.loads(text) if text else None

    def set_on(self, flag: str, on: bool) -> None:
        self.api(
            "PATCH",
            f"/api/v1/projects/p/flags/{flag}/environments/prod",
            {"on": on, "fallthrough": {"variation": 0}, "off_variation": 1},
            200,
        )

    def stop(self) -> None:
        self.process.stop()


class Relay:
    """`vexil-relay` in front of a server, on a fixed port so that it can be restarted at the
    same address."""

    def __init__(self, upstream: str, relay_key: str) -> None:
        self.upstream = upstream
        self.relay_key = relay_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Optional[Process] = None
        self.start()

    def start(self) -> None:
        self.process = Process(
            [str(_binary(("vexil-relay", "vexil-e2e-relay"), "VEXIL_RELAY_BIN"))],
            {
                "VEXIL_UPSTREAM_URL": self.upstream,
                "VEXIL_RELAY_KEY": self.relay_key,
                "VEXIL_LISTEN": f"127.0.0.1:{self.port}",
                "VEXIL_METRICS": "false",
                "VEXIL_UPSTREAM_BACKOFF_INITIAL": "50ms",
                "VEXIL_UPSTREAM_BACKOFF_MAX": "500ms",
                "VEXIL_DRAIN_WINDOW": "100ms",
                "RUST_LOG": "info",
            },
            "vexil-relay",
        )
        wait_until("the relay to be ready", self._ready)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.proc.poll() is not None:
            pytest.fail(f"the relay exited:\n{self.process.logs()}")
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as res:
                return res.status == 200 and json.loads(res.read())["status"] == "ready"
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
def stack(tmp_path: Path):
    """A server and a relay in front of it, stopped after the test."""
    server = Server(tmp_path)
    relay = Relay(server.url, server.relay_key)
    try:
        yield server, relay
    finally:
        relay.stop()
        server.stop()
