"""An OpenFeature provider (``openfeature-sdk``) over the Vexil client.

    from openfeature import api
    from vexil.openfeature import VexilProvider

    api.set_provider_and_wait(VexilProvider(sdk_key="...", base_url="https://flags.example.com"))
    enabled = api.get_client().get_boolean_value("new-checkout", False, ctx)

Reasons and error codes come from the SDK's single mapping (the same as the Rust provider's):
``STATIC``/``DEFAULT``/``TARGETING_MATCH``/``SPLIT``/``DISABLED``/``ERROR``, and
``FLAG_NOT_FOUND``, ``TYPE_MISMATCH``, ``PARSE_ERROR`` (a malformed flag),
``PROVIDER_NOT_READY`` and ``INVALID_CONTEXT``. The variant is the variation's name, or its
index when it has none. The evaluation context's targeting key is the context key (none: an
anonymous context); a string attribute ``kind`` sets the context kind; other attributes become
context attributes (datetimes as RFC 3339 strings; values that are not JSON are skipped).
Flag changes are emitted as ``PROVIDER_CONFIGURATION_CHANGED`` with the keys changed; the
client's state changes after initialisation as ``PROVIDER_STALE`` (the stream was lost: the
last-known flags are served), ``PROVIDER_READY`` (current again) and ``PROVIDER_ERROR`` with
``PROVIDER_FATAL`` (the data source gave up, e.g. the SDK key was refused).
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from . import Client, Context, EvaluationDetail

__all__ = ["VexilProvider", "to_vexil_context"]

_log = logging.getLogger("vexil")

ObjectValue = Union[Sequence[Any], Mapping[str, Any]]


def _attribute(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """An evaluation-context value as JSON: ``(True, json)``, or ``(False, None)`` to skip it."""
    if depth > 64:
        return False, None
    if value is None or isinstance(value, (bool, int, str)):
        return True, value
    if isinstance(value, float):
        return (True, value) if math.isfinite(value) else (False, None)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return True, value.isoformat()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            ok, j = _attribute(v, depth + 1)
            if not ok or not isinstance(k, str):
                return False, None
            out[k] = j
        return True, out
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items = []
        for v in value:
            ok, j = _attribute(v, depth + 1)
            if not ok:
                return False, None
            items.append(j)
        return True, items
    return False, None


def to_vexil_context(ctx: Optional[EvaluationContext]) -> Context:
    """Maps an OpenFeature evaluation context to a Vexil context."""
    if ctx is None:
        return Context()
    kind = None
    attributes = {}
    for name, value in (ctx.attributes or {}).items():
        if name == "key":
            continue  # the targeting key is the only key
        if name == "kind":
            if isinstance(value, str):
                kind = value
            continue
        ok, json_value = _attribute(value)
        if ok:
            attributes[name] = json_value
        else:
            _log.debug("vexil: skipping context attribute %r of type %s", name, type(value))
    return Context(ctx.targeting_key, kind=kind, attributes=attributes)


def _error_message(detail: EvaluationDetail, flag_key: str) -> str:
    kind = detail.error_kind
    if kind == "FLAG_NOT_FOUND":
        return f"no flag {flag_key!r} in this environment"
    if kind == "WRONG_TYPE":
        return f"flag {flag_key!r} serves another type"
    if kind == "MALFORMED":
        return f"flag {flag_key!r} is malformed; see the SDK's logs"
    if kind == "CLIENT_NOT_READY":
        return "the Vexil client has no flags yet"
    if kind == "INVALID_CONTEXT":
        return "the evaluation context could not be converted"
    return f"flag {flag_key!r}: {kind}"


def _resolution(detail: EvaluationDetail, flag_key: str, default: Any) -> FlagResolutionDetails[Any]:
    code = detail.openfeature_error_code
    if code is not None:
        return FlagResolutionDetails(
            value=default,
            reason=Reason.ERROR,
            error_code=ErrorCode(code),
            error_message=_error_message(detail, flag_key),
        )
    variant = detail.variation_name
    if variant is None and detail.variation_index is not None:
        variant = str(detail.variation_index)
    metadata = {"inExperiment": True} if detail.in_experiment else {}
    return FlagResolutionDetails(
        value=detail.value,
        reason=Reason(detail.openfeature_reason),
        variant=variant,
        flag_metadata=metadata,
    )


#: The client states that are provider events (``initializing`` and ``offline`` are none).
_EVENT_STATES = frozenset({"ready", "stale", "failed"})


class VexilProvider(AbstractProvider):
    """OpenFeature provider over a :class:`vexil.Client`.

    Give it a client you own (``VexilProvider(client)``; it is not closed by ``shutdown``), or
    the client's options (``VexilProvider(sdk_key="...", base_url=...)``): the provider then
    creates the client in ``initialize`` (waiting up to ``init_wait`` seconds, the GIL
    released) and closes it in ``shutdown``.
    """

    def __init__(
        self,
        client: Optional[Client] = None,
        *,
        sdk_key: Optional[str] = None,
        init_wait: float = 5.0,
        **client_options: Any,
    ) -> None:
        super().__init__()
        if client is None and sdk_key is None:
            raise ValueError("VexilProvider needs a vexil.Client or an sdk_key")
        self._client = client
        self._owned = client is None
        self._sdk_key = sdk_key
        self._init_wait = init_wait
        self._options = client_options
        self._listener: Optional[int] = None
        self._status_listener: Optional[int] = None
        # The client state OpenFeature last heard of: None until `initialize` ends (OpenFeature
        # reports its outcome itself); then only changes are emitted. Written from the
        # caller's thread and the SDK's, hence the lock.
        self._reported: Optional[str] = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Optional[Client]:
        """The client evaluations go to (``None`` before ``initialize`` when owned)."""
        return self._client

    def get_metadata(self) -> Metadata:
        return Metadata(name="vexil")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self._client is None:
            assert self._sdk_key is not None
            self._client = Client(self._sdk_key, start_wait=0, **self._options)
        client = self._client
        # Before waiting, so that no change is missed; reported only once initialised.
        self._status_listener = client.on_status_change(self._status_changed)
        try:
            if not client.wait_for_initialization(self._init_wait):
                status = client.status()
                if status["state"] == "failed":
                    raise ProviderFatalError(
                        error_message=f"the Vexil client failed: {status['last_error']}"
                    )
                if not client.is_initialized():
                    # Not ready and no fallback: the client keeps trying, evaluations return
                    # defaults with PROVIDER_NOT_READY meanwhile, and READY follows the flags.
                    _log.warning("vexil: no flags within %ss; state %s", self._init_wait,
                                 status["state"])
        finally:
            with self._lock:
                self._reported = client.status()["state"]
        self._listener = client.on_flag_change(self._changed)

    def _changed(self, change: Any) -> None:
        self.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=list(change.keys), message=f"version {change.version}")
        )

    def _status_changed(self, status: dict[str, Any]) -> None:
        state = status["state"]
        with self._lock:
            if self._reported is None or state not in _EVENT_STATES or state == self._reported:
                return
            self._reported = state
        error = status.get("last_error")
        if state == "ready":
            self.emit_provider_ready(ProviderEventDetails(message="flags current"))
        elif state == "stale":
            self.emit_provider_stale(ProviderEventDetails(
                message=f"serving the last-known flags: {error or 'upstream unreachable'}"))
        else:
            # The data source will not retry: OpenFeature's fatal error.
            self.emit_provider_error(ProviderEventDetails(
                message=f"the Vexil client failed: {error}", error_code=ErrorCode.PROVIDER_FATAL))

    def shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        for listener in (self._listener, self._status_listener):
            if listener is not None:
                client.remove_flag_change_listener(listener)
        self._listener = self._status_listener = None
        if self._owned:
            client.close()
            self._client = None

    def _detail(self, method: str, flag_key: str, default: Any, ctx: Optional[EvaluationContext]) -> Any:
        client = self._client
        if client is None:
            return FlagResolutionDetails(
                value=default,
                reason=Reason.ERROR,
                error_code=ErrorCode.PROVIDER_NOT_READY,
                error_message="the provider is not initialised",
            )
        detail = getattr(client, method)(flag_key, to_vexil_context(ctx), default)
        return _resolution(detail, flag_key, default)

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: Optional[EvaluationContext] = None,
    ) -> FlagResolutionDetails[bool]:
        return self._detail("bool_variation_detail", flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: Optional[EvaluationContext] = None,
    ) -> FlagResolutionDetails[str]:
        return self._detail("string_variation_detail", flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: Optional[EvaluationContext] = None,
    ) -> FlagResolutionDetails[int]:
        return self._detail("int_variation_detail", flag_key, default_value, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: Optional[EvaluationContext] = None,
    ) -> FlagResolutionDetails[float]:
        return self._detail("number_variation_detail", flag_key, float(default_value), evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: Optional[EvaluationContext] = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        resolution = self._detail("json_variation_detail", flag_key, default_value, evaluation_context)
        if resolution.error_code is None and not isinstance(resolution.value, (dict, list)):
            return FlagResolutionDetails(
                value=default_value,
                reason=Reason.ERROR,
                error_code=ErrorCode.TYPE_MISMATCH,
                error_message=f"flag {flag_key!r} does not serve an object or a list",
            )
        return resolution

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: Optional[EvaluationContext] = None,
        tracking_event_details: Optional[TrackingEventDetails] = None,
    ) -> None:
        if self._client is None:
            return
        value = tracking_event_details.value if tracking_event_details is not None else None
        self._client.track(tracking_event_name, to_vexil_context(evaluation_context), value)
