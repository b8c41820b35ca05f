"""The Catalog Service: which batch of a dataset to load.

The catalog answers lists as a bare object keyed by batch ID, at most 100 a page, paged
with ``start`` offsets. A score batch is usable when its status is ``success``.

Two layouts of a batch record exist, and :func:`batch_info` reads both:

- older: the catalog key (24 hex digits) differs from the data batch that Data Access
  serves, which is named in ``relatedObjects[type=batch].id``;
- newer: ``relatedObjects`` names only the dataset and the catalog key *is* the data
  batch ID.

An unknown dataset and a dataset without batches give the same answer to a batch
query (an empty object), so when no batch comes back the dataset itself is looked up
(``GET /dataSets/{id}``) to tell "no such dataset" (:class:`NotFoundError`) from "no
batch yet" (:class:`NoBatchError`). That costs one extra request, on the error path only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from .errors import ApiError, NoBatchError, NotFoundError
from .http import PlatformSession
from .source import BatchInfo

logger = logging.getLogger(__name__)

CATALOG = "/data/foundation/catalog"
SUCCESS = "success"

# The catalog's largest page.
PAGE_LIMIT = 100

# Pages of batches read while looking for a successful one (newest first): enough for
# years of daily scoring runs, and a bound on the requests a broken dataset can cost.
MAX_PAGES = 10


class Catalog:
    """Finds score batches in the Catalog Service.

    Args:
        session: The platform session requests go through.
        page_limit: Batches asked for per page (the catalog allows at most 100).
        max_pages: Pages read at most while looking for a successful batch.
    """

    def __init__(
        self, session: PlatformSession, *, page_limit: int = PAGE_LIMIT, max_pages: int = MAX_PAGES
    ) -> None:
        self.session = session
        self.page_limit = page_limit
        self.max_pages = max_pages

    def latest_batch(self, dataset_id: str) -> BatchInfo:
        """Return the newest batch of ``dataset_id`` whose status is ``success``.

        The catalog's own ``status=success`` filter is asked for, and the status is still
        checked here; when nothing successful comes back, the dataset's batches are read
        again without the filter so the error can say what there is.

        Raises:
            NotFoundError: The dataset does not exist in this sandbox.
            NoBatchError: The dataset has no batch, or none that succeeded.
        """
        for page in self._pages(dataset_id, status=SUCCESS):
            good = [r for r in page if _status(r) == SUCCESS]
            if good:
                newest = max(good, key=lambda r: _created(r))
                info = batch_info(dataset_id, newest)
                logger.debug("latest successful batch of %s: %s", dataset_id, info.batch_id)
                return info
        seen = [record for page in self._pages(dataset_id) for record in page]
        if not seen:
            self._require_dataset(dataset_id)
            raise NoBatchError(
                f"dataset {dataset_id} has no batches yet; Customer AI writes scores after "
                f"its first scoring run. Check the dataset ID, or wait for the run to finish."
            )
        statuses = ", ".join(sorted({_status(r) or "(none)" for r in seen}))
        count = f"{len(seen)} batch{'es' if len(seen) != 1 else ''}"
        if self._bound_reached(seen):
            count = f"at least {count} (the newest {len(seen)} were read)"
        raise NoBatchError(
            f"dataset {dataset_id} has {count}, none successful: {statuses}. Wait for a "
            f"scoring run to succeed, or pass batch_id= for a given batch."
        )

    def successful_batches(self, dataset_id: str) -> list[BatchInfo]:
        """Every batch of ``dataset_id`` whose status is ``success``, newest first.

        Read up to the page bound, so a dataset with more than
        ``page_limit * max_pages`` successful runs gives only the newest of them.
        """
        return [
            batch_info(dataset_id, record)
            for page in self._pages(dataset_id, status=SUCCESS)
            for record in page
            if _status(record) == SUCCESS
        ]

    def get_batch(self, dataset_id: str, batch_id: str) -> BatchInfo:
        """Return the batch ``batch_id`` of ``dataset_id``, which must be successful.

        ``batch_id`` may be the catalog key or the data batch ID (the older layout's
        ``relatedObjects[type=batch].id``), whichever was copied.

        Raises:
            NotFoundError: No such batch in this dataset, or no such dataset.
            NoBatchError: The batch exists but its status is not ``success``.
        """
        record = self._lookup(dataset_id, batch_id)
        info = batch_info(dataset_id, record[1], key=record[0])
        if info.status != SUCCESS:
            raise NoBatchError(
                f"batch {batch_id} of dataset {dataset_id} has status {info.status!r}, not "
                f"'success', so it holds no complete scores. Pick a successful batch, or "
                f"leave batch_id out to load the latest successful one."
            )
        return info

    def _lookup(self, dataset_id: str, batch_id: str) -> tuple[str, Mapping[str, Any]]:
        """Find a batch record by catalog key, else by data batch ID among the dataset's."""
        try:
            body = self.session.get_json(f"{CATALOG}/batches/{quote(batch_id, safe='')}")
        except NotFoundError:
            body = {}
        for key, record in _records(body, self.session):
            if batch_id in (key, _data_batch_id(key, record)):
                _check_dataset(dataset_id, batch_id, record)
                return key, record
        for page in self._pages(dataset_id):
            for key, record in _keyed(page):
                if batch_id in (key, _data_batch_id(key, record)):
                    return key, record
        self._require_dataset(dataset_id)
        raise NotFoundError(
            f"batch {batch_id} not found in dataset {dataset_id} (sandbox "
            f"{self.session.settings.sandbox}); check the batch ID, or leave batch_id out "
            f"to load the latest successful batch.",
            status=404,
            url=f"{CATALOG}/batches/{batch_id}",
        )

    def _pages(self, dataset_id: str, status: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of the dataset's batch records, newest first, up to the bound.

        Each record carries its catalog key as ``"__key__"``.
        """
        for number in range(self.max_pages):
            params: dict[str, Any] = {
                "dataSet": dataset_id,
                "orderBy": "desc:created",
                "limit": self.page_limit,
                "start": number * self.page_limit,
            }
            if status:
                params["status"] = status
            body = self.session.get_json(f"{CATALOG}/batches", params=params)
            page = [{**record, "__key__": key} for key, record in _records(body, self.session)]
            page.sort(key=_created, reverse=True)
            if page:
                yield page
            if len(page) < self.page_limit:
                return

    def _bound_reached(self, seen: list[dict[str, Any]]) -> bool:
        return len(seen) >= self.page_limit * self.max_pages

    def _require_dataset(self, dataset_id: str) -> None:
        """Raise :class:`NotFoundError` unless the catalog knows ``dataset_id``."""
        path = f"{CATALOG}/dataSets/{quote(dataset_id, safe='')}"
        settings = self.session.settings
        message = (
            f"dataset {dataset_id} not found in sandbox {settings.sandbox} of org "
            f"{settings.org_id}; check the dataset ID and AEP_SANDBOX_NAME."
        )
        try:
            body = self.session.get_json(path)
        except NotFoundError as exc:
            raise NotFoundError(message, status=404, url=exc.url) from exc
        if not isinstance(body, dict) or not body:
            raise NotFoundError(message, status=404, url=path)


def batch_info(dataset_id: str, record: Mapping[str, Any], *, key: str | None = None) -> BatchInfo:
    """Read a catalog batch record in either layout.

    Args:
        dataset_id: The dataset the batch belongs to.
        record: The record (the value under its key in a catalog answer).
        key: The catalog key; default the record's ``__key__`` or ``id``.
    """
    catalog_id = str(key or record.get("__key__") or record.get("id") or "")
    metadata = {k: v for k, v in record.items() if k != "__key__"}
    return BatchInfo(
        dataset_id=dataset_id,
        batch_id=_data_batch_id(catalog_id, record),
        catalog_id=catalog_id,
        status=_status(record),
        created=_created(record),
        record_count=_record_count(record),
        metadata=metadata,
    )


def _records(body: Any, session: PlatformSession) -> list[tuple[str, dict[str, Any]]]:
    """The ``(key, record)`` pairs of a catalog answer keyed by ID."""
    if not isinstance(body, dict):
        raise ApiError(
            f"the catalog answered with a {type(body).__name__} where an object keyed by "
            f"batch ID was expected; check that AEP_PLATFORM_URL "
            f"({session.settings.platform_base}) is the platform gateway.",
            status=200,
            url=f"{CATALOG}/batches",
        )
    return [(str(k), v) for k, v in body.items() if isinstance(v, dict)]


def _keyed(page: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for record in page:
        yield str(record["__key__"]), record


def _data_batch_id(key: str, record: Mapping[str, Any]) -> str:
    """``relatedObjects[type=batch].id`` when present, else the catalog key."""
    for related in _related(record):
        if related.get("type") == "batch" and related.get("id"):
            return str(related["id"])
    return key


def _check_dataset(dataset_id: str, batch_id: str, record: Mapping[str, Any]) -> None:
    """Refuse a batch whose record names another dataset, so it is not cached as this one."""
    owners = {str(r.get("id")) for r in _related(record) if r.get("type") == "dataSet"}
    if owners and dataset_id not in owners:
        raise NotFoundError(
            f"batch {batch_id} belongs to dataset {', '.join(sorted(owners))}, not "
            f"{dataset_id}; pass the dataset the batch was written to.",
            status=404,
            url=f"{CATALOG}/batches/{batch_id}",
        )


def _related(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    related = record.get("relatedObjects")
    if not isinstance(related, list):
        return []
    return [r for r in related if isinstance(r, Mapping)]


def _status(record: Mapping[str, Any]) -> str:
    return str(record.get("status") or "").lower()


def _created(record: Mapping[str, Any]) -> int:
    value = record.get("created")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _record_count(record: Mapping[str, Any]) -> int | None:
    """Rows the producer reported: ``metrics.outputRecordCount``, ``recordsWritten``, or
    the top-level ``recordCount``; ``None`` when none is a non-negative integer."""
    metrics = record.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    for value in (
        metrics.get("outputRecordCount"),
        metrics.get("recordsWritten"),
        record.get("recordCount"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
