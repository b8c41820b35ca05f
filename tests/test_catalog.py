"""Catalog: the latest successful batch in both record layouts, and clear errors otherwise."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from _shared import aep_example

from cai_frames.catalog import Catalog
from cai_frames.errors import NoBatchError, NotFoundError
from cai_frames.http import PlatformSession, build_retry
from cai_frames.settings import Settings

BASE = "https://platform.adobe.io"
IMS = "https://ims-na1.adobelogin.com/ims/token/v3"
BATCHES = f"{BASE}/data/foundation/catalog/batches"
DATASETS = f"{BASE}/data/foundation/catalog/dataSets"
DATASET = "5cd9146b31dae914b75f654f"

Callback = Callable[[requests.PreparedRequest], tuple[int, dict[str, str], str]]


def example_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = aep_example(name)["body"]
    return body


@pytest.fixture
def catalog() -> Catalog:
    responses.post(IMS, json={"access_token": "tok", "expires_in": 86399})
    settings = Settings.from_env(environ={}, client_id="cid", client_secret="s", org_id="O")
    return Catalog(PlatformSession(settings, retry=build_retry(backoff_factor=0)))


def batch(status: str, created: int, **extra: Any) -> dict[str, Any]:
    return {"status": status, "created": created, **extra}


def fake_batches(records: dict[str, dict[str, Any]], *, honour_status: bool = True) -> Callback:
    """A /batches endpoint: newest first, ``start``/``limit`` paging, optional status filter."""

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
        rows = sorted(records.items(), key=lambda kv: -int(kv[1]["created"]))
        if honour_status and "status" in query:
            rows = [kv for kv in rows if kv[1]["status"] == query["status"]]
        start, limit = int(query.get("start", 0)), int(query.get("limit", 20))
        return 200, {}, json.dumps(dict(rows[start : start + limit]))

    return answer


def batch_queries() -> list[dict[str, str]]:
    return [
        {k: v[0] for k, v in parse_qs(urlsplit(str(c.request.url)).query).items()}
        for c in responses.calls
        if str(c.request.url).startswith(BATCHES + "?")
    ]


@responses.activate
def test_latest_batch_old_layout_uses_related_batch_id(catalog: Catalog) -> None:
    body = example_body("catalog__get-batches__customer-ai-old.json")
    responses.get(BATCHES, json=body)

    info = catalog.latest_batch(DATASET)

    assert info.batch_id == "035e2520-5e69-11ea-b624-51evfeba55d1"
    assert info.catalog_id == "5e602f67c2f39715a87f46b1"
    assert (info.status, info.created, info.record_count) == ("success", 1550791457173, 46721830)
    assert info.metadata == body["5e602f67c2f39715a87f46b1"]
    assert batch_queries()[0] == {
        "dataSet": DATASET,
        "orderBy": "desc:created",
        "status": "success",
        "limit": "100",
        "start": "0",
    }


@responses.activate
def test_latest_batch_new_layout_uses_catalog_key(catalog: Catalog) -> None:
    responses.get(BATCHES, json=example_body("catalog__get-batches__customer-ai-new.json"))

    info = catalog.latest_batch(DATASET)

    assert info.batch_id == info.catalog_id == "01E5QSWCAASFQ054FNBKYV6TIQ"
    assert (info.created, info.record_count) == (1586715571217, 24340)


@responses.activate
def test_latest_batch_several_successes_newest_wins(catalog: Catalog) -> None:
    records = {"b-old": batch("success", 100), "b-new": batch("success", 300)}
    records["b-mid"] = batch("success", 200)
    responses.add_callback(responses.GET, BATCHES, callback=fake_batches(records))

    assert catalog.latest_batch(DATASET).batch_id == "b-new"


@responses.activate
def test_latest_batch_status_filter_ignored_checked_client_side(catalog: Catalog) -> None:
    records = {"b-failed": batch("failed", 300), "b-good": batch("success", 200)}
    callback = fake_batches(records, honour_status=False)
    responses.add_callback(responses.GET, BATCHES, callback=callback)

    assert catalog.latest_batch(DATASET).batch_id == "b-good"


@responses.activate
def test_latest_batch_success_past_first_page_found_by_paging(catalog: Catalog) -> None:
    records = {f"b-fail-{i}": batch("processing", 1000 - i) for i in range(5)}
    records["b-good"] = batch("success", 10)
    callback = fake_batches(records, honour_status=False)
    responses.add_callback(responses.GET, BATCHES, callback=callback)
    catalog.page_limit = 2

    info = catalog.latest_batch(DATASET)

    assert info.batch_id == "b-good"
    assert [q["start"] for q in batch_queries()] == ["0", "2", "4"]


@responses.activate
def test_latest_batch_only_failed_and_processing_lists_statuses(catalog: Catalog) -> None:
    records = example_body("catalog__get-batches__monitor-failed.json")
    records["b-running"] = batch("processing", 1536610000000)
    responses.add_callback(responses.GET, BATCHES, callback=fake_batches(records))

    with pytest.raises(NoBatchError) as caught:
        catalog.latest_batch(DATASET)

    message = str(caught.value)
    assert f"dataset {DATASET} has 2 batches, none successful: failed, processing" in message


@responses.activate
def test_latest_batch_no_batches_says_none_yet(catalog: Catalog) -> None:
    responses.get(BATCHES, json={})
    responses.get(f"{DATASETS}/{DATASET}", json={DATASET: {"name": "Customer AI Scores"}})

    with pytest.raises(NoBatchError, match=f"dataset {DATASET} has no batches yet"):
        catalog.latest_batch(DATASET)


@pytest.mark.parametrize(
    "answer",
    [{"status": 404, "json": {"error_code": "404", "message": "no"}}, {"json": {}}],
    ids=["404", "empty-object"],
)
@responses.activate
def test_latest_batch_unknown_dataset_not_found(catalog: Catalog, answer: dict[str, Any]) -> None:
    responses.get(BATCHES, json={})
    responses.get(f"{DATASETS}/ds-missing", **answer)

    with pytest.raises(NotFoundError, match="dataset ds-missing not found"):
        catalog.latest_batch("ds-missing")


@responses.activate
def test_get_batch_by_catalog_key_resolves_data_batch(catalog: Catalog) -> None:
    body = example_body("catalog__get-batches__customer-ai-old.json")
    responses.get(f"{BATCHES}/5e602f67c2f39715a87f46b1", json=body)

    # The example record names dataset 5c01a918..., so that is the one asked for.
    info = catalog.get_batch("5c01a91863540e14cd3d0432", "5e602f67c2f39715a87f46b1")

    assert info.batch_id == "035e2520-5e69-11ea-b624-51evfeba55d1"


@responses.activate
def test_get_batch_by_data_batch_id_found_in_dataset(catalog: Catalog) -> None:
    data_id = "035e2520-5e69-11ea-b624-51evfeba55d1"
    responses.get(f"{BATCHES}/{data_id}", status=404, json={"message": "not found"})
    records = {"k-other": batch("success", 200)}
    records["k-1"] = batch("success", 100, relatedObjects=[{"type": "batch", "id": data_id}])
    responses.add_callback(responses.GET, BATCHES, callback=fake_batches(records))

    info = catalog.get_batch(DATASET, data_id)

    assert (info.catalog_id, info.batch_id) == ("k-1", data_id)


@responses.activate
def test_get_batch_not_successful_says_status(catalog: Catalog) -> None:
    responses.get(f"{BATCHES}/b-1", json={"b-1": batch("failed", 1)})

    with pytest.raises(NoBatchError, match="batch b-1 of dataset .* has status 'failed'"):
        catalog.get_batch(DATASET, "b-1")


@responses.activate
def test_get_batch_other_dataset_refused(catalog: Catalog) -> None:
    record = batch("success", 1, relatedObjects=[{"type": "dataSet", "id": "ds-other"}])
    responses.get(f"{BATCHES}/b-1", json={"b-1": record})

    with pytest.raises(NotFoundError, match="belongs to dataset ds-other"):
        catalog.get_batch(DATASET, "b-1")


@responses.activate
def test_get_batch_unknown_batch_not_found(catalog: Catalog) -> None:
    responses.get(f"{BATCHES}/b-nope", status=404, json={"message": "not found"})
    responses.get(BATCHES, json={"b-1": batch("success", 1)})
    responses.get(f"{DATASETS}/{DATASET}", json={DATASET: {"name": "scores"}})

    with pytest.raises(NotFoundError, match=f"batch b-nope not found in dataset {DATASET}"):
        catalog.get_batch(DATASET, "b-nope")
