"""Network shaping: make loopback behave like a link to a distant server.

Over loopback every response arrives at once, which hides what a real client spends its
time on: waiting for the first byte of each answer, and pulling bytes through a link
whose speed is capped per connection (a CDN serves each TCP stream at a bounded rate).
:class:`NetworkShape` puts both back, on every response body the emulator sends:

- ``latency``: seconds between the request and the first byte of the answer (headers
  included, since the server writes them with the first body chunk);
- ``bandwidth``: bytes per second each response is paced to. The emulator's server
  closes the connection after every response, so per response is per connection, and
  concurrent downloads each get the full rate, as they do from a CDN.

Pacing releases each chunk when a link at ``bandwidth`` would have finished sending it,
measured from the first byte, so a slow consumer does not bank credit and short bodies
pay only for their bytes. Large chunks are cut into slices first, so pacing stays
smooth whatever chunk size the route yields.

Example:
    >>> shape = NetworkShape(latency=0.05, bandwidth=10e6)
    >>> b"".join(shape.shape([b"abc"], sleep=lambda s: None))
    b'abc'
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Largest slice sent at once under a bandwidth cap: small enough to pace smoothly,
#: large enough that pacing costs little CPU.
SLICE_BYTES = 64 * 1024


# An hour before the first byte is already no network; more overflows the clock.
MAX_LATENCY = 3600.0


@dataclass(frozen=True)
class NetworkShape:
    """A first-byte latency and a per-connection bandwidth cap.

    Attributes:
        latency: Seconds before the first byte of every response; 0 for none.
        bandwidth: Bytes per second each response is paced to; ``None`` for no cap.

    Raises:
        ValueError: ``latency`` is negative or ``bandwidth`` is not positive.
    """

    latency: float = 0.0
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        """Refuse values no network has."""
        if not 0 <= self.latency <= MAX_LATENCY:
            raise ValueError(
                f"latency must be between 0 and {MAX_LATENCY:g} seconds, got "
                f"{self.latency!r}; try 0.05"
            )
        if self.bandwidth is not None and not 0 < self.bandwidth < math.inf:
            raise ValueError(
                f"bandwidth must be a finite number > 0 bytes per second (or None for no cap), got "
                f"{self.bandwidth!r}; try 10e6 for 10 MB/s"
            )

    @property
    def active(self) -> bool:
        """Whether this shape changes anything."""
        return self.latency > 0 or self.bandwidth is not None

    def shape(
        self,
        body: Iterable[bytes],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ShapedBody:
        """Wrap a WSGI response body so it is sent at this shape's pace.

        Args:
            body: The body as the route returned it.
            clock: Monotonic seconds (tests pass a fake one).
            sleep: Waits the given seconds (tests record the waits instead).
        """
        return ShapedBody(body, self, clock=clock, sleep=sleep)


class ShapedBody:
    """A response body sent after a latency and paced to a bandwidth.

    It keeps the wrapped body's ``close`` (a WSGI server calls it whether or not the
    body was read), so files behind ``send_file`` are closed either way.
    """

    def __init__(
        self,
        body: Iterable[bytes],
        shape: NetworkShape,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        """Pace ``body`` to ``shape``, timing with ``clock`` and waiting with ``sleep``."""
        self._body = body
        self._shape = shape
        self._clock = clock
        self._sleep = sleep

    def __iter__(self) -> Iterator[bytes]:
        """Wait out the latency, then yield the body's bytes at the capped rate."""
        if self._shape.latency > 0:
            self._sleep(self._shape.latency)
        bandwidth = self._shape.bandwidth
        if bandwidth is None:
            yield from self._body
            return
        started = self._clock()
        sent = 0
        for chunk in self._body:
            for piece in _slices(chunk):
                sent += len(piece)
                wait = started + sent / bandwidth - self._clock()
                if wait > 0:
                    self._sleep(wait)
                yield piece

    def close(self) -> None:
        """Close the wrapped body, if it can be closed."""
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _slices(chunk: bytes) -> Iterator[bytes]:
    if len(chunk) <= SLICE_BYTES:
        yield chunk
        return
    view = memoryview(chunk)
    for start in range(0, len(chunk), SLICE_BYTES):
        yield bytes(view[start : start + SLICE_BYTES])
