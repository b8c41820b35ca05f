"""Fault switches: the ways a real network and a real platform misbehave, on demand.

A :class:`Faults` holds any number of :class:`Switch` es, each built by one of the
functions below and each limited to the requests whose path (with its query) matches a
pattern, to at most ``count`` of them, and to a ``fraction`` drawn from a random stream
seeded by the ``Faults`` seed and the switch's position, so the same seed hits the same
requests in the same order. IMS token requests are only hit by a switch whose pattern
names them, so that faults aim at the platform unless asked otherwise.

=====================  ==============================================================
switch                 effect on a request it hits
=====================  ==============================================================
:func:`status_error`   answers 500, 502, 503 (or another status) with a gateway body
:func:`throttle`       answers 429 with ``Retry-After`` in seconds or as an HTTP date
:func:`expire_token`   every issued token expires now; the gateway answers 401013
:func:`slow_first_byte`  waits before routing, so the first byte comes late
:func:`ignore_range`   drops the ``Range`` header: 200 with the whole body
:func:`wrong_length`   sends a body shorter or longer than the listed ``length``
:func:`drop_connection`  sends part of the body, then shuts the socket down
:func:`stall`          sends part of the body, waits, then sends the rest
:func:`loop_listing`   a listing page whose ``next`` link points at itself
:func:`unsafe_name`    a file listing that also names an unsafe or duplicated file
=====================  ==============================================================

The switches act through the app's two hooks: :meth:`Faults.before_routing` answers or
rewrites a request, :meth:`Faults.wrap_body` cuts or delays a body. Every file body
served is also counted (:attr:`Faults.served`), so a test can tell how many bytes a
resume asked for again.
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from cai_frames.emulator.app import EmulatorApp

logger = logging.getLogger(__name__)

#: File downloads (``/export/files/{id}?path=...``).
FILES = r"^/data/foundation/export/files/[^?]+\?(.*&)?path="
#: Listings of a batch or a directory (no ``path=``).
LISTINGS = r"^/data/foundation/export/(batches/[^/]+/files|files/[^?]+)(\?(?!(.*&)?path=)|$)"
#: Directory listings only, where file names appear.
FILE_LISTINGS = r"^/data/foundation/export/files/[^?]+(\?(?!(.*&)?path=)|$)"
IMS = "/ims/"


@dataclass(frozen=True)
class Switch:
    """One fault, and the requests it may hit.

    Build switches with the functions of this module rather than by hand.

    Attributes:
        kind: What the fault does (the name of the function that built it).
        path: Regular expression searched in the request path with its query;
            ``None`` means every platform request (not IMS).
        count: Hit at most this many requests; ``None`` for no limit.
        fraction: Share of the matching requests hit, drawn from the seeded stream.
        options: The fault's own settings (status, delay, name, ...).
    """

    kind: str
    path: str | None = None
    count: int | None = None
    fraction: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse settings the fault cannot act on, naming the setting and its range.

        Raises:
            ValueError: Unknown kind, a bad pattern, or a setting out of its range.
        """
        if self.kind not in SWITCHES:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(sorted(SWITCHES))}")
        if self.path is not None:
            try:
                re.compile(self.path)
            except (re.error, TypeError) as exc:
                raise ValueError(
                    f"{self.kind} path {self.path!r} is not a regular expression: {exc}"
                ) from None
        _check(self.kind, "count", self.count)
        _check(self.kind, "fraction", self.fraction)
        expected = set(_options(self.kind))
        if set(self.options) != expected:
            raise ValueError(
                f"{self.kind} takes the options {sorted(expected)}, got {sorted(self.options)}"
            )
        for name, value in self.options.items():
            _check(self.kind, name, value)


def status_error(
    status: int = 503, *, path: str | None = None, count: int | None = None, fraction: float = 1.0
) -> Switch:
    """Answer with an error status (500, 502, 503, ...) instead of routing."""
    return Switch("status_error", path, count, fraction, {"status": status})


def throttle(
    retry_after: int = 1,
    *,
    http_date: bool = False,
    path: str | None = None,
    count: int | None = None,
    fraction: float = 1.0,
) -> Switch:
    """Answer 429 with ``Retry-After``: ``retry_after`` seconds, or that moment as a date."""
    options = {"retry_after": retry_after, "http_date": http_date}
    return Switch("throttle", path, count, fraction, options)


def expire_token(
    *, path: str | None = None, count: int | None = 1, fraction: float = 1.0
) -> Switch:
    """Expire every issued token before the gateway checks this request (401013)."""
    return Switch("expire_token", path, count, fraction)


def slow_first_byte(
    delay: float = 0.5, *, path: str | None = FILES, count: int | None = None, fraction: float = 1.0
) -> Switch:
    """Wait ``delay`` seconds before answering at all."""
    return Switch("slow_first_byte", path, count, fraction, {"delay": delay})


def ignore_range(*, path: str = FILES, count: int | None = None, fraction: float = 1.0) -> Switch:
    """Serve the whole file with 200 to a request that asked for a ``Range``."""
    return Switch("ignore_range", path, count, fraction)


def wrong_length(
    delta: int = -100, *, path: str = FILES, count: int | None = 1, fraction: float = 1.0
) -> Switch:
    """Send ``delta`` bytes fewer (negative) or more (positive) than the file holds.

    The response is consistent in itself (its ``Content-Length`` matches what is sent),
    so only a comparison with the listed ``length`` can tell.
    """
    return Switch("wrong_length", path, count, fraction, {"delta": delta})


def drop_connection(
    at: float = 0.5, *, path: str = FILES, count: int | None = 1, fraction: float = 1.0
) -> Switch:
    """Send the first ``at`` share of the body, then shut the connection down."""
    return Switch("drop_connection", path, count, fraction, {"at": at})


def stall(
    delay: float = 1.0,
    at: float = 0.5,
    *,
    path: str = FILES,
    count: int | None = None,
    fraction: float = 1.0,
) -> Switch:
    """Send the first ``at`` share of the body, wait ``delay`` seconds, send the rest."""
    return Switch("stall", path, count, fraction, {"delay": delay, "at": at})


def loop_listing(
    *, path: str = LISTINGS, count: int | None = None, fraction: float = 1.0
) -> Switch:
    """Give a listing page a ``next`` link to itself, so following links never ends."""
    return Switch("loop_listing", path, count, fraction)


def unsafe_name(
    name: str | None = "../x.parquet",
    *,
    path: str = FILE_LISTINGS,
    count: int | None = None,
    fraction: float = 1.0,
) -> Switch:
    """Add a file called ``name`` to a file listing; ``None`` repeats the first file's name."""
    return Switch("unsafe_name", path, count, fraction, {"name": name})


SWITCHES = {
    factory.__name__: factory
    for factory in (
        status_error,
        throttle,
        expire_token,
        slow_first_byte,
        ignore_range,
        wrong_length,
        drop_connection,
        stall,
        loop_listing,
        unsafe_name,
    )
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Each setting: whether a value fits it, and the accepted range as the message says it.
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0, or none"),
    "fraction": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "status": (lambda v: _is_int(v) and 400 <= v <= 599, "an HTTP error status, 400 to 599"),
    "retry_after": (lambda v: _is_int(v) and v >= 0, "an integer number of seconds >= 0"),
    "http_date": (lambda v: isinstance(v, bool), "true or false"),
    "delay": (lambda v: _is_number(v) and 0 <= v < float("inf"), "a number of seconds >= 0"),
    "at": (lambda v: _is_number(v) and 0 < v < 1, "a share of the body in (0, 1)"),
    "delta": (lambda v: _is_int(v) and v != 0, "a non-zero integer number of bytes"),
    "name": (lambda v: v is None or (isinstance(v, str) and v != ""), "a file name, or none"),
}


def _check(kind: str, name: str, value: Any) -> None:
    fits, accepted = _RANGES[name]
    if not fits(value):
        raise ValueError(f"{kind} {name} must be {accepted}, got {value!r}")


def _options(kind: str) -> list[str]:
    """The names of the fault's own options (the factory's parameters but the common ones)."""
    common = {"path", "count", "fraction"}
    return [p for p in inspect.signature(SWITCHES[kind]).parameters if p not in common]


def parse_switch(text: str) -> Switch:
    """Build a switch from ``kind[:key=value,...]``, as ``cai-frames emulate --fault`` takes.

    Values are read as ``true``/``false``, ``none``, a number, or else a string; they
    cannot hold a comma. Example: ``status_error:status=502,fraction=0.1``.

    Raises:
        ValueError: The kind is unknown or a setting does not fit it.
    """
    kind, _, settings = text.partition(":")
    factory = SWITCHES.get(kind.strip())
    if factory is None:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(SWITCHES))}")
    kwargs: dict[str, Any] = {}
    known = sorted(inspect.signature(factory).parameters)
    for item in filter(None, (part.strip() for part in settings.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault {text!r}: {item!r} is not key=value")
        if key.strip() not in known:
            raise ValueError(
                f"fault {text!r}: unknown option {key.strip()!r}; {factory.__name__} takes "
                f"{', '.join(known)}"
            )
        kwargs[key.strip()] = _value(value.strip())
    try:
        switch: Switch = factory(**kwargs)
    except ValueError as exc:
        raise ValueError(f"fault {text!r}: {exc}") from None
    return switch


def _value(text: str) -> Any:
    words = {"true": True, "false": False, "none": None}
    if text.lower() in words:
        return words[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Served(NamedTuple):
    """One file body as it left the emulator."""

    path: str
    range: str | None
    bytes: int


# Where a ``Range`` the emulator ignored is kept, so the served bodies still show it.
_ASKED_RANGE = "cai_frames.ignored_range"
_ROUTED_STATUS = "cai_frames.routed_status"
_RESPONDERS = ("status_error", "throttle")
_REWRITERS = ("wrong_length", "loop_listing", "unsafe_name")
_BODY = ("drop_connection", "stall")


class Faults:
    """The fault switches of one emulator, and the file bodies it served.

    Args:
        *switches: The switches, tried in this order; the first to hit a request in a
            phase (answer, rewrite, body) acts, later ones of that phase do not.
        seed: Seed of the streams that pick the requests a ``fraction`` hits.

    Example:
        >>> emu.faults = Faults(drop_connection(path=FILES), throttle(count=2))
        ... # doctest: +SKIP
    """

    def __init__(self, *switches: Switch, seed: int = 0) -> None:
        self.switches = switches
        self.seed = seed
        self._patterns = [re.compile(s.path) if s.path else None for s in switches]
        self._streams = [random.Random(f"{seed}:{i}") for i in range(len(switches))]
        self._hits = [0] * len(switches)
        self._served: list[Served] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        kinds = ", ".join(s.kind for s in self.switches)
        return f"Faults({kinds}, seed={self.seed})"

    @property
    def hits(self) -> list[int]:
        """How many requests each switch has hit so far, in switch order."""
        with self._lock:
            return list(self._hits)

    @property
    def served(self) -> list[Served]:
        """Every file body sent so far: path, ``Range`` asked for, bytes sent."""
        with self._lock:
            return list(self._served)

    def before_routing(self, request: Request, app: EmulatorApp) -> Response | None:
        """Answer the request, rewrite what routing answers, or return ``None``.

        Args:
            request: The incoming request.
            app: The app, whose gateway and router some faults use.
        """
        target = _target(request)
        early: tuple[str, ...] = ("slow_first_byte", "expire_token")
        if "HTTP_RANGE" in request.environ:
            early += ("ignore_range",)
        for switch in self._hitting(target, early):
            if switch.kind == "slow_first_byte":
                time.sleep(switch.options["delay"])
            elif switch.kind == "ignore_range":
                request.environ[_ASKED_RANGE] = request.environ.pop("HTTP_RANGE")
            else:
                app.gateway.expire_tokens()
        for switch in self._hitting(target, _RESPONDERS, first=True):
            return _answer(switch)
        if not self._may_hit(target, _REWRITERS + _BODY):
            return None
        response = app.dispatch(request)
        # Bodies are cut only when they carry the file, never an error answer.
        request.environ[_ROUTED_STATUS] = response.status_code
        if response.status_code == 200:
            for switch in self._hitting(target, _REWRITERS, first=True):
                _rewrite(switch, request, response)
        return response

    def wrap_body(self, request: Request, body: Iterable[bytes]) -> Iterable[bytes]:
        """Return the body to send: counted, and cut or delayed when a switch hits."""
        target = _target(request)
        if not re.search(FILES, target):
            return body
        hit = None
        if request.environ.get(_ROUTED_STATUS) in (200, 206):
            hit = next(iter(self._hitting(target, _BODY, first=True)), None)
        wanted = request.environ.get(_ASKED_RANGE) or request.headers.get("Range")
        if hit is None:
            return self._counted(target, wanted, body)
        return self._counted(target, wanted, _faulty(hit, body, request.environ))

    def _counted(self, target: str, wanted: str | None, body: Iterable[bytes]) -> Iterator[bytes]:
        sent = 0
        try:
            for chunk in body:
                yield chunk
                sent += len(chunk)
        finally:
            with self._lock:
                self._served.append(Served(target, wanted, sent))
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def _may_hit(self, target: str, kinds: tuple[str, ...]) -> bool:
        """Whether any switch of ``kinds`` matches ``target`` (no stream is drawn)."""
        return any(
            s.kind in kinds and self._matches(i, target) for i, s in enumerate(self.switches)
        )

    def _hitting(self, target: str, kinds: tuple[str, ...], first: bool = False) -> list[Switch]:
        """The switches of ``kinds`` that hit this request, counting each hit."""
        hits: list[Switch] = []
        with self._lock:
            for i, switch in enumerate(self.switches):
                if switch.kind not in kinds or not self._matches(i, target):
                    continue
                if switch.count is not None and self._hits[i] >= switch.count:
                    continue
                if self._streams[i].random() >= switch.fraction:
                    continue
                self._hits[i] += 1
                hits.append(switch)
                if first:
                    break
        if hits:
            logger.debug("faults %s hit %s", [s.kind for s in hits], target)
        return hits

    def _matches(self, index: int, target: str) -> bool:
        pattern = self._patterns[index]
        if pattern is None:
            return not target.startswith(IMS)
        return pattern.search(target) is not None


def _target(request: Request) -> str:
    query = request.environ.get("QUERY_STRING", "")
    return request.path + (f"?{query}" if query else "")


def _answer(switch: Switch) -> Response:
    """The error response of a status or throttle switch."""
    if switch.kind == "throttle":
        seconds = int(switch.options["retry_after"])
        retry_after = str(seconds)
        if switch.options["http_date"]:
            moment = datetime.now(timezone.utc) + timedelta(seconds=seconds)
            retry_after = format_datetime(moment, usegmt=True)
        body = {"error_code": "429050", "message": "Too many requests"}
        response = Response(json.dumps(body), status=429, mimetype="application/json")
        response.headers["Retry-After"] = retry_after
        return response
    status = int(switch.options["status"])
    body = {"error_code": f"{status}000", "message": "Service temporarily unavailable"}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _rewrite(switch: Switch, request: Request, response: Response) -> None:
    """Change a routed 200 answer as ``switch`` says."""
    if switch.kind == "wrong_length":
        response.direct_passthrough = False
        data = response.get_data()
        delta = int(switch.options["delta"])
        response.set_data(data[:delta] if delta < 0 else data + b"\0" * delta)
        return
    body = json.loads(response.get_data())
    if switch.kind == "loop_listing":
        body["_links"] = {"next": {"href": request.url}}
    elif body.get("data"):
        items = body["data"]
        first = next((i for i in items if str(i.get("name", "")).endswith(".parquet")), items[0])
        name = switch.options["name"] or first.get("name", "x.parquet")
        items.append({**first, "name": name})
    response.set_data(json.dumps(body))


def _faulty(switch: Switch, body: Iterable[bytes], environ: dict[str, Any]) -> Iterator[bytes]:
    """``body`` cut at the switch's share: dropped there, or paused there."""
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    cut = int(len(data) * switch.options["at"])
    yield data[:cut]
    if switch.kind == "stall":
        time.sleep(switch.options["delay"])
        yield data[cut:]
        return
    sock = environ.get("werkzeug.socket")
    logger.debug("dropping the connection after %d of %d bytes", cut, len(data))
    if sock is not None:
        # Shut down, not close: the server's file objects keep a closed socket open until
        # they are closed themselves, while a shutdown ends the connection at once.
        sock.shutdown(socket.SHUT_RDWR)
