"""The emulator's WSGI app: IMS, Catalog and Data Access routes as the platform lays them out.

Routes (paths exactly as on ``platform.adobe.io`` and ``ims-na1.adobelogin.com``)::

    POST /ims/token/v3
    GET  /data/foundation/catalog/batches            objects keyed by catalog ID
    GET  /data/foundation/catalog/batches/{id}
    GET  /data/foundation/catalog/dataSets/{id}
    POST /data/foundation/catalog/dataSets, /data/core/ups/export/jobs[/{id}]
                                                     see cai_frames.emulator.segmentation
    GET  /data/foundation/export/batches/{batchId}/files
    GET  /data/foundation/export/files/{fileId}      listing; with ?path= the bytes
    HEAD /data/foundation/export/files/{fileId}?path=

Every request first passes :meth:`EmulatorApp.before_routing` and every response body
passes :meth:`EmulatorApp.wrap_body`: the two places where fault switches (errors,
throttling, truncated bodies) can be added without touching the routes.

What the emulator does where Adobe documents nothing, and why a careful client must
survive it:

- **IMS error body**: ``{"error": ..., "error_description": ...}``, 400 for a missing
  field, another grant type or an unknown client ID, 401 for a wrong secret. The format
  is undocumented, so a client should report the status and body, not parse them.
- **Gateway check order and status per code**: token, then API key, then org, then
  sandbox; statuses are the first digits of each ``error_code``. A client must not
  depend on which of several problems is reported first.
- **Wrong sandbox name**: accepted by the gateway, but the sandbox holds nothing, so
  the catalog lists no batches and lookups give 404, as an empty sandbox would.
- **Catalog errors** (``limit=0`` or above 100, a bad ``start`` or ``orderBy``): 400
  with ``{type, status, title, detail}``, the detail naming the valid range. The body
  is undocumented; a client should only show it.
- **Catalog order without ``orderBy``**: ascending by catalog key, which for the older
  24-hex keys is not time order. A client must always ask ``orderBy=desc:created``.
- **Data Access errors** (unknown batch, file or path; HEAD without ``path``): 404 or
  400 with the same ``{type, status, title, detail}`` body; the spec defines none.
- **Data Access ``limit`` above 100**: served as 100, so a client must follow
  ``_links.next`` rather than trust its own page size.
- **``_page.count``**: the number of items on the page (doc examples also use it for
  the total), and ``_links`` appears only when there is a next page. A client must
  page by ``_links.next`` alone and follow its href verbatim.
- **``isValid``**: ``false`` on every file item, as in the Customer AI example; it says
  nothing about whether a file can be read, so a client must not skip such files.
- **Rate limits, 429, ``Retry-After``, link expiry, maximum file size**: none today;
  hrefs never expire. Fault switches are meant to add the first three.
- **Old-layout ``createdClient``**: a producer name other than
  ``acp_foundation_push``; only the newer doc filters on it, so a client that always
  filters by it misses older score batches.
- **Catalog ID vs data batch ID**: the older layout's catalog key is unknown to Data
  Access (404); only ``relatedObjects[type=batch].id`` lists files.
- **Score schema, timestamps, ``identityMap``**: see :mod:`cai_frames.emulator.writer`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import quote

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from cai_frames.emulator.faults import Faults
from cai_frames.emulator.gateway import Gateway
from cai_frames.emulator.network import NetworkShape
from cai_frames.emulator.segmentation import SEGMENTATION_RULES, SegmentationRoutes
from cai_frames.emulator.state import Batch, PlatformState, ServedFile

logger = logging.getLogger(__name__)

CATALOG_PAGE, CATALOG_MAX = 20, 100
EXPORT_PAGE = 100
EXPORT = "/data/foundation/export"


class RecordedRequest(NamedTuple):
    """One request the emulator answered."""

    method: str
    path: str
    status: int


class RequestLog:
    """Thread-safe record of the requests served, in the order they finished."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def add(self, item: RecordedRequest) -> None:
        """Record one answered request."""
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> list[RecordedRequest]:
        """Return a copy of the requests recorded so far."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._items.clear()


URLS = Map(
    [
        Rule("/ims/token/v3", methods=["POST"], endpoint="token"),
        Rule("/data/foundation/catalog/batches", endpoint="batches", strict_slashes=False),
        Rule("/data/foundation/catalog/batches/<batch_id>", endpoint="batch"),
        Rule("/data/foundation/catalog/dataSets/<dataset_id>", endpoint="dataset"),
        Rule(f"{EXPORT}/batches/<batch_id>/files", endpoint="batch_files"),
        Rule(f"{EXPORT}/files/<file_id>", endpoint="file"),
        *SEGMENTATION_RULES,
    ]
)


def json_response(status: int, body: Any) -> Response:
    """A JSON response as the platform sends it."""
    return Response(json.dumps(body), status=status, mimetype="application/json")


def problem(status: int, title: str, detail: str) -> Response:
    """An error response in the ``{type, status, title, detail}`` shape."""
    body = {
        "type": f"https://ns.adobe.com/aep/errors/emulator-{status}",
        "status": status,
        "title": title,
        "detail": detail,
    }
    return json_response(status, body)


class BadQuery(Exception):
    """A query parameter the platform would refuse; the message names the valid values."""


def _int_arg(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadQuery(f"{name} must be an integer {bound}, got {raw!r}")
    return value


class EmulatorApp(SegmentationRoutes):
    """Routes requests to the platform state, behind the gateway checks.

    The audience-export routes come from
    :class:`~cai_frames.emulator.segmentation.SegmentationRoutes`.
    """

    def __init__(self, state: PlatformState, gateway: Gateway, log: RequestLog) -> None:
        """Serve ``state`` to callers ``gateway`` lets through; record calls in ``log``."""
        self.state = state
        self.gateway = gateway
        self.log = log
        self.faults = Faults()
        self.network = NetworkShape()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """WSGI entry point."""
        request = Request(environ)
        response = self.before_routing(request) or self.dispatch(request)
        query = environ.get("QUERY_STRING", "")
        path = request.path + (f"?{query}" if query else "")
        self.log.add(RecordedRequest(request.method, path, response.status_code))
        logger.debug("%s %s -> %d", request.method, request.path, response.status_code)
        return self.wrap_body(request, response(environ, start_response))

    def before_routing(self, request: Request) -> Response | None:
        """Answer a request before it is routed, or return ``None`` to route it."""
        return self.faults.before_routing(request, self)

    def wrap_body(self, request: Request, body: Iterable[bytes]) -> Iterable[bytes]:
        """Return the body stream to send for ``request``, through the fault switches.

        The network shape paces what the faults let through, as a real link would.
        """
        body = self.faults.wrap_body(request, body)
        return self.network.shape(body) if self.network.active else body

    def dispatch(self, request: Request) -> Response:
        """Check the gateway headers, then route to the endpoint."""
        adapter = URLS.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
        except HTTPException as error:
            refusal = self.gateway.check(request.headers.get)
            if refusal is not None and request.path != "/ims/token/v3":
                return json_response(*refusal)
            return problem(error.code or 404, error.name, f"no route for {request.path}")
        if endpoint != "token":
            refusal = self.gateway.check(request.headers.get)
            if refusal is not None:
                return json_response(*refusal)
        try:
            response: Response = getattr(self, f"on_{endpoint}")(request, **values)
        except BadQuery as error:
            return problem(400, "BadRequestError", str(error))
        return response

    def _visible(self, request: Request) -> bool:
        """Whether the request's sandbox is the one holding the data."""
        return request.headers.get("x-sandbox-name") == self.gateway.credentials.sandbox

    def on_token(self, request: Request) -> Response:
        """``POST /ims/token/v3``: fields from the form, or else the query string."""
        fields = {**request.args.to_dict(), **request.form.to_dict()}
        return json_response(*self.gateway.issue_token(fields))

    def on_batches(self, request: Request) -> Response:
        """``GET /catalog/batches``: filtered, ordered, paged; keyed by catalog ID."""
        limit = _int_arg(request, "limit", CATALOG_PAGE, 1, CATALOG_MAX)
        start = _int_arg(request, "start", 0, 0, None)
        order = request.args.get("orderBy", "")
        batches = self._filtered(request) if self._visible(request) else []
        batches = _ordered(batches, order)
        page = batches[start : start + limit]
        org = self.gateway.credentials.org_id
        records = {b.catalog_id: _project(b.record(org), request) for b in page}
        return json_response(200, records)

    def _filtered(self, request: Request) -> list[Batch]:
        args = request.args
        batches = list(self.state.catalog.values())
        for name, field in (("dataSet", "dataset"), ("status", "status"), ("batch", "batch")):
            if args.get(name):
                batches = [b for b in batches if _matches(args[name], _field(b, field))]
        org = self.gateway.credentials.org_id
        for name in ("createdClient", "externalId"):
            if args.get(name):
                batches = [b for b in batches if _matches(args[name], [b.record(org).get(name)])]
        after = _int_arg(request, "createdAfter", -1, -1, None)
        before = _int_arg(request, "createdBefore", 2**63, 0, None)
        return [b for b in batches if after < b.created < before]

    def on_batch(self, request: Request, batch_id: str) -> Response:
        """``GET /catalog/batches/{id}``: one record keyed by its catalog ID."""
        batch = self.state.catalog.get(batch_id)
        if batch is None or not self._visible(request):
            return problem(404, "NotFound", f"batch {batch_id} not found")
        record = _project(batch.record(self.gateway.credentials.org_id), request)
        return json_response(200, {batch.catalog_id: record})

    def on_dataset(self, request: Request, dataset_id: str) -> Response:
        """``GET /catalog/dataSets/{id}``: one dataset keyed by its ID."""
        dataset = self.state.datasets.get(dataset_id)
        if dataset is None or not self._visible(request):
            return problem(404, "NotFound", f"dataSet {dataset_id} not found")
        record = _project(dataset.record(self.gateway.credentials.org_id), request)
        return json_response(200, {dataset_id: record})

    def on_batch_files(self, request: Request, batch_id: str) -> Response:
        """``GET /export/batches/{id}/files``: the batch's dataSetFileIds, offset-paged."""
        batch = self.state.data_batches.get(batch_id)
        if batch is None or not self._visible(request):
            return problem(404, "NotFound", f"batch {batch_id} not found in Data Access")
        start = _int_arg(request, "start", 0, 0, None)
        limit = min(_int_arg(request, "limit", EXPORT_PAGE, 1, None), EXPORT_PAGE)
        base = request.host_url.rstrip("/")
        page = batch.files[start : start + limit]
        view_id = self.state.datasets[batch.spec.dataset_id].view_id
        body: dict[str, Any] = {
            "data": [_file_item(base, view_id, f) for f in page],
            "_page": {"limit": limit, "count": len(page)},
        }
        if start + limit < len(batch.files):
            here = f"{base}{EXPORT}/batches/{quote(batch_id)}/files"
            body["_links"] = {
                "next": {"href": f"{here}?start={start + limit}&limit={limit}"},
                "page": {"href": f"{here}?start={start}&limit={limit}", "templated": True},
            }
        return json_response(200, body)

    def on_file(self, request: Request, file_id: str) -> Response:
        """``GET|HEAD /export/files/{id}``: the listing, or with ``path`` the bytes."""
        served = self.state.files.get(file_id) if self._visible(request) else None
        if served is None:
            return problem(404, "NotFound", f"file {file_id} not found")
        path = request.args.get("path")
        if path is None:
            if request.method == "HEAD":
                return problem(400, "BadRequestError", "HEAD needs the path query parameter")
            return self._listing(request, served)
        entry = served.entry(path)
        if entry is None:
            return problem(404, "NotFound", f"no file {path!r} in {file_id}")
        mimetype = (
            "application/parquet" if path.endswith(".parquet") else "application/octet-stream"
        )
        response = send_file(entry.path, request.environ, mimetype=mimetype, conditional=True)
        response.headers["Accept-Ranges"] = "bytes"
        # The server adds its own Date, and the platform names no download file name.
        response.headers.remove("Date")
        response.headers.remove("Content-Disposition")
        return response

    def _listing(self, request: Request, served: ServedFile) -> Response:
        """The items of one dataSetFileId, paged by a file-name cursor."""
        cursor = request.args.get("start", "")
        limit = min(_int_arg(request, "limit", EXPORT_PAGE, 1, None), EXPORT_PAGE)
        remaining = [e for e in served.entries if e.name > cursor]
        page = remaining[:limit]
        base = f"{request.host_url.rstrip('/')}{EXPORT}/files/{quote(served.file_id)}"
        items = [
            {
                "name": e.name,
                "length": str(e.size),
                "_links": {"self": {"href": f"{base}?path={quote(e.name)}"}},
            }
            for e in page
        ]
        body: dict[str, Any] = {"data": items, "_page": {"limit": limit, "count": len(page)}}
        if len(remaining) > limit:
            after = quote(page[-1].name)
            body["_links"] = {
                "next": {"href": f"{base}?start={after}&limit={limit}"},
                "page": {"href": f"{base}?start={quote(cursor)}&limit={limit}", "templated": True},
            }
        return json_response(200, body)


def _file_item(base: str, view_id: str, served: ServedFile) -> dict[str, Any]:
    created = str(served.created)
    return {
        "dataSetFileId": served.file_id,
        "dataSetViewId": view_id,
        "version": "1.0.0",
        "created": created,
        "updated": created,
        "isValid": False,
        "_links": {"self": {"href": f"{base}{EXPORT}/files/{quote(served.file_id)}"}},
    }


def _matches(expression: str, values: list[Any]) -> bool:
    """Catalog's simple filter: ``a,b`` is any-of, a leading ``!`` negates."""
    negate = expression.startswith("!")
    wanted = set(expression.lstrip("!").split(","))
    hit = any(str(v) in wanted for v in values if v is not None)
    return hit != negate


def _field(batch: Batch, field: str) -> list[Any]:
    if field == "dataset":
        return [batch.spec.dataset_id]
    if field == "status":
        return [batch.status]
    return [batch.catalog_id, batch.batch_id]


def _ordered(batches: list[Batch], order: str) -> list[Batch]:
    """Apply ``orderBy`` (``created``, ``asc:created``, ``desc:created``)."""
    if not order:
        return sorted(batches, key=lambda b: b.catalog_id)
    direction, _, field = order.rpartition(":")
    if field != "created" or direction not in ("", "asc", "desc"):
        raise BadQuery(f"orderBy must be created, asc:created or desc:created, got {order!r}")
    return sorted(batches, key=lambda b: b.created, reverse=direction == "desc")


def _project(record: dict[str, Any], request: Request) -> dict[str, Any]:
    """Keep only the top-level fields named in ``properties``, when given."""
    wanted = request.args.get("properties")
    if not wanted:
        return record
    names = set(wanted.split(","))
    return {k: v for k, v in record.items() if k in names}
