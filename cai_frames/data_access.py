"""The Data Access API as a :class:`~cai_frames.source.PartSource`.

Listing a batch takes two kinds of request, each paged 100 items at a time:

1. ``GET /export/batches/{batch_id}/files`` lists the batch's files as ``dataSetFileId``
   items;
2. ``GET /export/files/{dataSetFileId}`` lists what one of them holds: either files
   (``name``/``length`` items, whose ``_links.self.href`` serves the bytes) or, for a
   directory, more ``dataSetFileId`` items, followed in turn.

The two item shapes are told apart by their fields; nothing else in the answer says
which one it is. Pages are chained by ``_links.next``, followed verbatim (the platform
writes ``:443`` into them); a ``next`` already seen means the listing loops, and
listing stops with an error rather than spinning.

Every name is checked by :func:`cai_frames.names.check_file_name` (the one rule the
cache applies too) before the listing is handed back, so no byte is written for a
batch that names a file outside a plain file name. Spark's marker files
(``_SUCCESS``, ``_committed_*``, ``*.crc``, ...) are left out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3.exceptions

from .catalog import Catalog
from .errors import ApiError, DownloadError, IncompleteBodyError, UnsafeFileNameError
from .http import PlatformSession
from .names import check_file_name
from .redaction import redact_url
from .source import BatchInfo, RemotePart

logger = logging.getLogger(__name__)

EXPORT = "/data/foundation/export"
CHUNK_SIZE = 1 << 20

# What a body read raises when the connection breaks or stalls midway.
_BODY_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)

# Bounds on what one batch listing may cost: pages per listing, and directory nesting.
MAX_PAGES = 10_000
MAX_DEPTH = 8

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


def skip_reason(name: str, size: int) -> str | None:
    """Why a listed file is not a part to download, or ``None`` for a parquet part.

    Markers Spark and the platform write next to the data (``_SUCCESS``,
    ``_committed_*``, ``_started_*``, ``*.crc``, any name starting with ``_`` or ``.``)
    and files that are not ``.parquet`` are left out.
    """
    if name.startswith(("_", ".")):
        return "marker file"
    if name.endswith(".crc"):
        return "checksum file"
    if not name.endswith(".parquet"):
        return "empty file" if size == 0 else "not a .parquet file"
    return None


class DataAccessSource:
    """Score batches from the Catalog and Data Access APIs.

    Args:
        session: The platform session requests go through.
        catalog: The catalog used to resolve batches; default one over ``session``.
        chunk_size: Bytes read at a time while streaming a part.

    Example:
        >>> source = DataAccessSource(session)  # doctest: +SKIP
        >>> batch = source.resolve_batch("5cd9146b31dae914b75f654f")  # doctest: +SKIP
        >>> parts = source.list_parts(batch)  # doctest: +SKIP
    """

    def __init__(
        self,
        session: PlatformSession,
        *,
        catalog: Catalog | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.session = session
        self.catalog = catalog or Catalog(session)
        self.chunk_size = chunk_size

    def resolve_batch(self, dataset_id: str, batch_id: str | None = None) -> BatchInfo:
        """Return the latest successful batch of ``dataset_id``, or the given one.

        Raises:
            NoBatchError: The dataset has no successful batch, or the given batch did
                not succeed.
            NotFoundError: The dataset or the given batch does not exist.
        """
        if batch_id is None:
            return self.catalog.latest_batch(dataset_id)
        return self.catalog.get_batch(dataset_id, batch_id)

    def list_parts(self, batch: BatchInfo) -> list[RemotePart]:
        """Return every parquet part of ``batch``, sorted by name, markers left out.

        The whole listing is read and checked before it is returned, so an unsafe name
        anywhere in it stops the batch before any part is written.

        Raises:
            UnsafeFileNameError: A name is not a plain file name, or two files share one.
            ApiError: The listing loops, or an item or a ``length`` cannot be read.
        """
        url = self.session.url_for(f"{EXPORT}/batches/{quote(batch.batch_id, safe='')}/files")
        parts: dict[str, RemotePart] = {}
        for part in self._walk(url, "", visited=set(), depth=0):
            reason = skip_reason(part.name, part.size)
            if reason:
                logger.debug("skipping %s (%s, %d bytes)", part.name, reason, part.size)
                continue
            key = part.name.casefold()
            if key in parts:
                raise UnsafeFileNameError(
                    f"batch {batch.batch_id} lists two files named {part.name!r} (in "
                    f"{parts[key].file_id} and {part.file_id}); one would overwrite the "
                    f"other, so the batch is not downloaded."
                )
            parts[key] = part
        found = sorted(parts.values(), key=lambda p: p.name)
        logger.debug("batch %s has %d parts", batch.batch_id, len(found))
        return found

    def fetch_part(
        self,
        part: RemotePart,
        out: BinaryIO,
        *,
        start: int = 0,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Stream the bytes of ``part`` from ``start`` on into ``out``.

        A server that answers a ranged request with the whole file (200) is accepted:
        ``out`` is rewound and truncated and the whole part is written.

        Returns:
            The offset the written bytes began at: ``start``, or 0 after a fallback.

        Raises:
            DownloadError: The server resumed at another offset than asked for.
            IncompleteBodyError: The connection broke while the body was streaming; every
                byte received before is in ``out``.
            TransportError: No answer at all.
            ApiError: The server answered with an error status.
        """
        headers = {"Range": f"bytes={start}-"} if start > 0 else None
        response = self.session.get(part.url, headers=headers, stream=True)
        with response:
            offset = self._offset(response, part, start)
            if offset != start:
                logger.warning(
                    "%s: asked to resume at byte %d, the server sent the whole file; "
                    "downloading it again from the start",
                    part.name,
                    start,
                )
                out.seek(0)
                out.truncate()
            self._copy(response, out, part, offset, on_bytes)
        return offset

    def _walk(
        self, url: str, file_id: str, *, visited: set[str], depth: int
    ) -> Iterator[RemotePart]:
        """Yield the files under a listing URL, following directory items in turn."""
        for page_url, items in self._pages(url):
            for item in items:
                if "name" in item or "length" in item:
                    yield self._file_part(item, file_id, page_url)
                elif item.get("dataSetFileId"):
                    child = str(item["dataSetFileId"])
                    if child in visited:
                        logger.warning("dataSetFileId %s listed twice; reading it once", child)
                        continue
                    visited.add(child)
                    if depth >= MAX_DEPTH:
                        raise _listing_error(f"directories nest deeper than {MAX_DEPTH}", url)
                    child_url = self.session.url_for(f"{EXPORT}/files/{quote(child, safe='')}")
                    yield from self._walk(child_url, child, visited=visited, depth=depth + 1)
                else:
                    raise _listing_error(
                        f"an item has neither name/length nor dataSetFileId (keys {sorted(item)})",
                        page_url,
                    )

    def _pages(self, url: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Yield ``(page URL, items)`` for every page of a listing.

        Raises:
            ApiError: A ``next`` link was already followed (a loop), there are more
                than :data:`MAX_PAGES` pages, or a page has no ``data`` list.
        """
        seen = {url}
        for _ in range(MAX_PAGES):
            body = self.session.get_json(url)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise _listing_error("the page has no 'data' list", url)
            yield url, [item for item in data if isinstance(item, dict)]
            href = _next_href(body)
            if not href:
                return
            url = href if urlsplit(href).scheme else urljoin(url, href)
            if url in seen:
                raise _listing_error(
                    f"its next link {redact_url(url)} was already followed (a pagination loop)",
                    url,
                )
            seen.add(url)
        raise _listing_error(f"it has more than {MAX_PAGES} pages", url)

    def _file_part(self, item: dict[str, Any], file_id: str, page_url: str) -> RemotePart:
        """A listed file item as a :class:`RemotePart`, its name checked."""
        name = check_file_name(item.get("name"))
        size = _parse_length(item.get("length"), name, page_url)
        href = _self_href(item)
        if href:
            url = href if urlsplit(href).scheme else urljoin(page_url, href)
        elif file_id:
            url = self.session.url_for(
                f"{EXPORT}/files/{quote(file_id, safe='')}?path={quote(name, safe='')}"
            )
        else:
            raise _listing_error(f"file {name!r} has no _links.self.href", page_url)
        return RemotePart(name=name, size=size, file_id=file_id, url=url)

    def _offset(self, response: requests.Response, part: RemotePart, start: int) -> int:
        """Where the body of ``response`` begins in the file."""
        if response.status_code == 200:
            return 0
        if response.status_code != 206:
            raise DownloadError(
                f"{part.name}: the server answered {response.status_code} instead of the "
                f"file's bytes ({redact_url(part.url)}); try again later."
            )
        header = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.match(header)
        if not match or int(match.group(1)) != start:
            raise DownloadError(
                f"{part.name}: asked for bytes from {start} on, the server sent "
                f"Content-Range {header!r}; delete the partial file to download it whole."
            )
        return start

    def _copy(
        self,
        response: requests.Response,
        out: BinaryIO,
        part: RemotePart,
        offset: int,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        """Write the streamed body to ``out``, reporting each chunk.

        ``read1`` hands over whatever has arrived, so when the connection breaks every
        byte received is already in ``out`` and a resume asks only for the rest. Only
        the reads count as the network: an error writing ``out`` (a full disk) is no
        broken body and goes to the caller as it is.
        """
        written = 0
        while True:
            try:
                chunk = response.raw.read1(self.chunk_size, decode_content=True)
            except _BODY_ERRORS as exc:
                out.flush()
                cause = _as_requests_error(exc)
                raise IncompleteBodyError(
                    f"{part.name}: the connection broke after {offset + written} of "
                    f"{part.size} bytes ({type(exc).__name__}); the download resumes from "
                    f"there when tried again."
                ) from cause
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        logger.debug("%s: wrote %d bytes from offset %d", part.name, written, offset)


def _as_requests_error(exc: BaseException) -> requests.RequestException:
    """The error ``requests`` itself raises for a failed body read, so callers see one kind."""
    if isinstance(exc, requests.RequestException):
        return exc
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return requests.exceptions.ChunkedEncodingError(exc)
    return requests.ConnectionError(exc)


def _parse_length(value: object, name: str, url: str) -> int:
    """A listed ``length`` (a string of digits, sometimes a number) as an int."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    raise _listing_error(f"file {name!r} has length {value!r}, not a number of bytes", url)


def _self_href(item: dict[str, Any]) -> str | None:
    links = item.get("_links")
    link = links.get("self") if isinstance(links, dict) else None
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) and href else None


def _next_href(body: dict[str, Any]) -> str | None:
    links = body.get("_links")
    link = links.get("next") if isinstance(links, dict) else None
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) and href else None


def _listing_error(problem: str, url: str) -> ApiError:
    redacted = redact_url(url)
    return ApiError(
        f"the file listing at {redacted} cannot be read: {problem}. The platform's answer "
        f"is malformed; try again later, or report the batch to Adobe support.",
        status=200,
        url=redacted,
    )
