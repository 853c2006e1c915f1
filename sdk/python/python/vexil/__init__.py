"""Vexil's server-side Python SDK.

Flags are evaluated in process by the Rust core that every Vexil SDK shares (a native
extension), kept current over the server's or a relay's SSE stream by a background thread of
the SDK's own, and served from a last-known-good file when nothing upstream answers.

    import vexil

    client = vexil.Client("sdk-key", base_url="https://flags.example.com",
                          last_known_good="/var/lib/myapp/flags.json")
    user = vexil.Context("user-42", kind="user", plan="pro")
    if client.bool_variation("new-checkout", user, False):
        ...
    client.track("purchase", user, 39.5)

Evaluation methods never raise: a missing flag, a flag of another type, a client without flags
or an unusable context all return the caller's default (the ``*_detail`` methods say why).
Every client still open is closed at interpreter exit (pending events sent, the
last-known-good file written). See docs/sdk-python.md for the guide.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any

from ._vexil import SDK_VERSION, Context, EvaluationDetail, FlagChange
from ._vexil import Client as _NativeClient

__all__ = ["SDK_VERSION", "Client", "Context", "EvaluationDetail", "FlagChange"]
__version__ = SDK_VERSION

_open_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class Client(_NativeClient):
    """A Vexil client. Create one per process and share it between threads.

    ``Client(sdk_key, *, base_url=None, last_known_good=None, start_wait=5.0, ...)`` starts the
    SDK's background work and waits up to ``start_wait`` seconds (without holding the GIL) for
    flags; see the stub (``_vexil.pyi``) or docs/sdk-python.md for every option. Usable as a
    context manager, which closes it.
    """

    def __init__(self, sdk_key: str, **options: Any) -> None:
        # The native constructor (`__new__`) has done the work; remember the client so that it
        # is closed cleanly at interpreter exit.
        _open_clients.add(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@atexit.register
def _close_open_clients() -> None:
    """Closes every client still open: sends pending events, writes the last-known-good file."""
    for client in list(_open_clients):
        client.close()
