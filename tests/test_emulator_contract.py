"""The emulator answers each documented request with the documented shape.

For every fixture in ``aep-examples`` that the download path uses, the same request is
made to the emulator; the response must carry at least the fixture body's keys, each
with the same JSON type, the same status, and the documented header names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from _emulator import fetch_token, platform_headers, token_form
from _shared import aep_example

from cai_frames.emulator import DatasetSpec, Emulator, default_specs

BATCHES = "/data/foundation/catalog/batches"
EXPORT = "/data/foundation/export"
DIRECTORY_SPEC = DatasetSpec(name="Customer AI Scores - Paged", rows=390, parts=130)
PER_FILE_SPEC = DatasetSpec(
    name="Customer AI Scores - Per File", rows=60, parts=3, file_layout="per_file"
)


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value (``bool`` is not a number here)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    names = {str: "string", list: "array", dict: "object", type(None): "null"}
    return names[type(value)]


def assert_same_shape(expected: Any, actual: Any, where: str = "body") -> None:
    """Assert ``actual`` has every key of ``expected``, recursively, with the same JSON types.

    Values only constrain types, so placeholders such as ``"..."`` match any string.
    Each actual list item is held to the expected item at its index, or to the first.
    """
    assert json_type(actual) == json_type(expected), f"{where}: {actual!r} vs {expected!r}"
    if isinstance(expected, dict):
        for key, value in expected.items():
            assert key in actual, f"{where}: missing key {key!r}"
            assert_same_shape(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list) and expected:
        assert actual, f"{where}: empty, but the example shows items"
        for index, item in enumerate(actual):
            model = expected[index] if index < len(expected) else expected[0]
            assert_same_shape(model, item, f"{where}[{index}]")


def test_assert_same_shape_nested_type_change_fails() -> None:
    with pytest.raises(AssertionError, match=r"body.a\[0\].b"):
        assert_same_shape({"a": [{"b": "1"}]}, {"a": [{"b": 1}]})


def test_assert_same_shape_placeholder_and_extra_keys_pass() -> None:
    assert_same_shape({"a": "...", "n": 1}, {"a": "x", "n": 2.5, "extra": True})


def example(name: str) -> dict[str, Any]:
    """Load one documented example response."""
    return aep_example(name)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    specs = [*default_specs().values(), DIRECTORY_SPEC, PER_FILE_SPEC]
    with Emulator(specs, seed=3) as running:
        yield running


@pytest.fixture(scope="module")
def headers(emu: Emulator) -> dict[str, str]:
    return platform_headers(emu, fetch_token(emu, "openid,AdobeID,read_organizations"))


Call = Callable[[Emulator, dict[str, str]], requests.Response]


def _get(path: str, **extra: str) -> Call:
    def call(emu: Emulator, headers: dict[str, str]) -> requests.Response:
        return requests.get(emu.platform_url + path, headers={**headers, **extra}, timeout=10)

    return call


def _token(emu: Emulator, headers: dict[str, str]) -> requests.Response:
    return requests.post(emu.ims_url, data=token_form(emu), timeout=10)


def _without(name: str, replace: str | None = None) -> Call:
    def call(emu: Emulator, headers: dict[str, str]) -> requests.Response:
        sent = {k: v for k, v in headers.items() if k != name}
        if replace is not None:
            sent[name] = replace
        return requests.get(emu.platform_url + BATCHES, headers=sent, timeout=10)

    return call


def _latest_files(key: str) -> Call:
    """The batch-files listing of the newest successful batch of a dataset."""

    def call(emu: Emulator, headers: dict[str, str]) -> requests.Response:
        batch_id = emu.latest_batch_id(_dataset_id(emu, key))
        return _get(f"{EXPORT}/batches/{batch_id}/files")(emu, headers)

    return call


def _listing(key: str) -> Call:
    """The listing of the newest successful batch's first dataSetFileId."""

    def call(emu: Emulator, headers: dict[str, str]) -> requests.Response:
        item = _latest_files(key)(emu, headers).json()["data"][0]
        return requests.get(item["_links"]["self"]["href"], headers=headers, timeout=10)

    return call


def _part(extra: dict[str, str], method: str = "GET") -> Call:
    def call(emu: Emulator, headers: dict[str, str]) -> requests.Response:
        items = _listing("churn")(emu, headers).json()["data"]
        href = next(i for i in items if i["name"].endswith(".parquet"))["_links"]["self"]["href"]
        return requests.request(method, href, headers={**headers, **extra}, timeout=10)

    return call


def _dataset_id(emu: Emulator, key: str) -> str:
    extra = {"paged": DIRECTORY_SPEC.dataset_id, "per_file": PER_FILE_SPEC.dataset_id}
    return extra.get(key) or emu.dataset_id(key)


def _catalog(key: str, query: str) -> Call:
    def call(emu: Emulator, headers: dict[str, str]) -> requests.Response:
        path = f"{BATCHES}?{query.format(dataset=_dataset_id(emu, key))}"
        return _get(path)(emu, headers)

    return call


def _dataset(emu: Emulator, headers: dict[str, str]) -> requests.Response:
    dataset_id = emu.dataset_id("churn")
    return _get(f"/data/foundation/catalog/dataSets/{dataset_id}")(emu, headers)


def _batch_files_page(emu: Emulator, headers: dict[str, str]) -> requests.Response:
    batch_id = emu.latest_batch_id(_dataset_id(emu, "per_file"))
    return _get(f"{EXPORT}/batches/{batch_id}/files?start=0&limit=1")(emu, headers)


NEW_QUERY = "dataSet={dataset}&createdClient=acp_foundation_push&status=success"
JSON_CASES: dict[str, Call] = {
    "ims__token-v3": _token,
    "gateway__error-403010": _without("Authorization"),
    "gateway__error-401013": _without("Authorization", "Bearer not-a-token"),
    "gateway__error-403000": _without("x-api-key"),
    "gateway__error-403003": _without("x-api-key", "someone-else"),
    "gateway__error-400003": _without("x-gw-ims-org-id"),
    "gateway__error-403025": _without("x-gw-ims-org-id", "OTHER0000@AdobeOrg"),
    "catalog__get-batches__customer-ai-old": _catalog(
        "legacy", "dataSet={dataset}&orderBy=desc:created&limit=1"
    ),
    "catalog__get-batches__customer-ai-new": _catalog(
        "churn", NEW_QUERY + "&orderBy=desc:created&limit=1"
    ),
    "catalog__get-dataset": _dataset,
    "data-access__get-batch-files__customer-ai-new": _latest_files("churn"),
    "data-access__get-batch-files__customer-ai-old": _latest_files("legacy"),
    "data-access__get-batch-files__single": _latest_files("multi"),
    "data-access__get-batch-files__paged": _batch_files_page,
    "data-access__get-files__file": _listing("per_file"),
    "data-access__get-files__file-api-guide": _listing("per_file"),
    "data-access__get-files__paged-customer-ai-new": _listing("paged"),
    "data-access__get-files__paged-customer-ai-old": _listing("paged"),
}
KEYED_BY_ID = ("catalog__",)


@pytest.mark.parametrize("name", sorted(JSON_CASES))
def test_emulator_documented_request_same_status_and_shape(
    name: str, emu: Emulator, headers: dict[str, str]
) -> None:
    fixture = example(name)
    response = JSON_CASES[name](emu, headers)

    assert response.status_code == fixture["status"]
    body, expected = response.json(), fixture["body"]
    if name.startswith(KEYED_BY_ID):
        assert len(body) == len(expected)
        for record in body.values():
            assert_same_shape(next(iter(expected.values())), record)
    else:
        assert_same_shape(expected, body)


@pytest.mark.parametrize("name", sorted(n for n in JSON_CASES if n.startswith("gateway")))
def test_emulator_gateway_error_body_is_documented_body(
    name: str, emu: Emulator, headers: dict[str, str]
) -> None:
    assert JSON_CASES[name](emu, headers).json() == example(name)["body"]


HEADER_CASES: dict[str, Call] = {
    "data-access__get-file-content__full": _part({}),
    "data-access__get-file-content__range": _part({"Range": "bytes=0-99"}),
    "data-access__get-file-content__spec-206": _part({"Range": "bytes=0-100"}),
    "data-access__head-file": _part({}, "HEAD"),
    "data-access__head-file__spec": _part({}, "HEAD"),
}


@pytest.mark.parametrize("name", sorted(HEADER_CASES))
def test_emulator_documented_file_request_same_status_and_headers(
    name: str, emu: Emulator, headers: dict[str, str]
) -> None:
    fixture = example(name)
    response = HEADER_CASES[name](emu, headers)

    assert response.status_code == fixture["status"]
    for header, value in fixture["headers"].items():
        assert header in response.headers  # requests compares names case-insensitively
        if header.lower() in ("accept-ranges", "content-length") and value is not None:
            assert response.headers[header] == value
    if "Content-Range" in fixture["headers"]:
        size = response.headers["Content-Range"].rpartition("/")[2]
        assert response.headers["Content-Range"] == f"bytes 0-{len(response.content) - 1}/{size}"
    if fixture["status"] == 206:
        assert response.headers["Content-Type"] == "application/parquet"
