"""DataAccessSource: paged listings followed verbatim, safe names only, resumable fetches."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from _shared import aep_example

from cai_frames.data_access import DataAccessSource, check_file_name, skip_reason
from cai_frames.errors import (
    ApiError,
    DownloadError,
    NoBatchError,
    TransportError,
    UnsafeFileNameError,
)
from cai_frames.http import PlatformSession, build_retry
from cai_frames.settings import Settings
from cai_frames.source import BatchInfo, PartSource, RemotePart

BASE = "https://platform.adobe.io"
LINK_BASE = "https://platform.adobe.io:443"  # what the platform writes into its links
IMS = "https://ims-na1.adobelogin.com/ims/token/v3"
EXPORT = "/data/foundation/export"
BATCH = BatchInfo(dataset_id="ds-1", batch_id="b-1", catalog_id="b-1", status="success", created=1)
PAYLOAD = bytes(range(256)) * 40  # 10 240 bytes, every byte value, so offsets show

Callback = Callable[[requests.PreparedRequest], tuple[int, dict[str, str], str]]


@pytest.fixture
def source() -> DataAccessSource:
    responses.post(IMS, json={"access_token": "tok", "expires_in": 86399})
    settings = Settings.from_env(environ={}, client_id="cid", client_secret="s", org_id="O")
    session = PlatformSession(settings, retry=build_retry(backoff_factor=0))
    return DataAccessSource(session, chunk_size=1000)


def file_item(name: str, length: str = "100", owner: str = "f-1") -> dict[str, Any]:
    href = f"{LINK_BASE}{EXPORT}/files/{owner}?path={name}"
    return {"name": name, "length": length, "_links": {"self": {"href": href}}}


def dir_item(file_id: str) -> dict[str, Any]:
    href = f"{LINK_BASE}{EXPORT}/files/{file_id}"
    return {"dataSetFileId": file_id, "isValid": False, "_links": {"self": {"href": href}}}


def add_listing(path: str, items: list[dict[str, Any]], page_size: int = 100) -> None:
    """Serve ``items`` at ``path`` in pages, linking each to the next with ``:443``."""

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(str(request.url)).query)
        start = int(query.get("start", ["0"])[0])
        body: dict[str, Any] = {
            "data": items[start : start + page_size],
            "_page": {"limit": page_size, "count": len(items)},
        }
        if start + page_size < len(items):
            nxt = f"{LINK_BASE}{path}?start={start + page_size}&limit={page_size}"
            body["_links"] = {"next": {"href": nxt}}
        return 200, {}, json.dumps(body)

    pattern = re.compile(rf"^https://platform\.adobe\.io(:443)?{re.escape(path)}(\?.*)?$")
    responses.add_callback(responses.GET, pattern, callback=answer)


def add_batch(files: dict[str, list[dict[str, Any]]]) -> None:
    """A batch whose files listing names each key of ``files``, which lists its items."""
    add_listing(f"{EXPORT}/batches/b-1/files", [dir_item(file_id) for file_id in files])
    for file_id, items in files.items():
        add_listing(f"{EXPORT}/files/{file_id}", items)


def get_urls() -> list[str]:
    return [str(c.request.url) for c in responses.calls if c.request.method == "GET"]


@responses.activate
def test_list_parts_more_than_100_follows_next_links_verbatim(source: DataAccessSource) -> None:
    names = [f"part-{i:05d}-c000.snappy.parquet" for i in range(250)]
    add_batch({"f-1": [file_item(n) for n in reversed(names)]})

    parts = source.list_parts(BATCH)

    assert [p.name for p in parts] == names
    assert all((p.size, p.file_id) == (100, "f-1") for p in parts)
    assert parts[0].url == f"{LINK_BASE}{EXPORT}/files/f-1?path={names[0]}"
    assert get_urls() == [
        f"{BASE}{EXPORT}/batches/b-1/files",
        f"{BASE}{EXPORT}/files/f-1",
        f"{LINK_BASE}{EXPORT}/files/f-1?start=100&limit=100",
        f"{LINK_BASE}{EXPORT}/files/f-1?start=200&limit=100",
    ]


@responses.activate
def test_list_parts_batch_listing_paged_every_file_followed(source: DataAccessSource) -> None:
    file_ids = [f"f-{i}" for i in range(5)]
    add_listing(f"{EXPORT}/batches/b-1/files", [dir_item(f) for f in file_ids], page_size=2)
    for f in file_ids:
        add_listing(f"{EXPORT}/files/{f}", [file_item(f"part-{f}.parquet", owner=f)])

    parts = source.list_parts(BATCH)

    assert [p.file_id for p in parts] == file_ids


@responses.activate
def test_list_parts_documented_bodies_directory_then_file(source: DataAccessSource) -> None:
    batch_body = aep_example("data-access__get-batch-files__customer-ai-old")
    file_body = aep_example("data-access__get-files__file")
    responses.get(f"{BASE}{EXPORT}/batches/b-1/files", json=batch_body["body"])
    file_id = batch_body["body"]["data"][0]["dataSetFileId"]
    responses.get(f"{BASE}{EXPORT}/files/{file_id}", json=file_body["body"])

    (part,) = source.list_parts(BATCH)

    assert (part.name, part.size, part.file_id) == ("{FILE_NAME}.parquet", 249058, file_id)
    assert part.url == file_body["body"]["data"][0]["_links"]["self"]["href"]


@responses.activate
def test_list_parts_directory_items_followed_in_turn(source: DataAccessSource) -> None:
    add_batch({"dir-1": [dir_item("f-2"), dir_item("f-3")]})
    add_listing(f"{EXPORT}/files/f-2", [file_item("a.parquet", owner="f-2")])
    add_listing(f"{EXPORT}/files/f-3", [file_item("b.parquet", owner="f-3")])

    parts = source.list_parts(BATCH)

    assert [(p.name, p.file_id) for p in parts] == [("a.parquet", "f-2"), ("b.parquet", "f-3")]


@responses.activate
def test_list_parts_markers_skipped(source: DataAccessSource) -> None:
    names = {
        "_SUCCESS": "0",
        "_committed_8231": "120",
        "_started_8231": "0",
        ".part-00000-c000.snappy.parquet.crc": "16",
        "part-00000-c000.snappy.parquet.crc": "16",
        ".hidden": "5",
        "notes.json": "0",
        "part-00000-c000.snappy.parquet": "900",
        "part-00001-c000.snappy.parquet": "0",
    }
    add_batch({"f-1": [file_item(n, length) for n, length in names.items()]})

    parts = source.list_parts(BATCH)

    assert [(p.name, p.size) for p in parts] == [
        ("part-00000-c000.snappy.parquet", 900),
        ("part-00001-c000.snappy.parquet", 0),
    ]


@pytest.mark.parametrize(
    ("name", "size", "reason"),
    [
        ("_SUCCESS", 0, "marker file"),
        ("x.crc", 4, "checksum file"),
        ("x.json", 0, "empty file"),
        ("x.csv", 10, "not a .parquet file"),
        ("x.parquet", 10, None),
    ],
    ids=["success-marker", "crc", "empty", "csv", "parquet"],
)
def test_skip_reason_by_name_and_size(name: str, size: int, reason: str | None) -> None:
    assert skip_reason(name, size) == reason


UNSAFE_NAMES = [
    pytest.param("../x.parquet", id="parent-traversal"),
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("", id="empty"),
    pytest.param("/etc/x.parquet", id="absolute"),
    pytest.param("sub/x.parquet", id="slash"),
    pytest.param("sub\\x.parquet", id="backslash"),
    pytest.param("..\\x.parquet", id="windows-traversal"),
    pytest.param("x\x00.parquet", id="nul"),
    pytest.param("x\n.parquet", id="newline"),
    pytest.param("x\x1b.parquet", id="escape"),
    pytest.param("x\x85.parquet", id="c1-control"),
    pytest.param("x\u202e.parquet", id="rtl-override"),
    pytest.param("C:x.parquet", id="drive-relative"),
    pytest.param("C:\\x.parquet", id="drive-absolute"),
    pytest.param("x.parquet:stream", id="ntfs-stream"),
    pytest.param(" x.parquet", id="leading-space"),
    pytest.param("x.parquet ", id="trailing-space"),
    pytest.param("x.parquet.", id="trailing-dot"),
    pytest.param("NUL.parquet", id="device-name"),
    pytest.param("com1", id="device-name-bare"),
    pytest.param("x" * 250 + ".parquet", id="too-long"),
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_check_file_name_unsafe_refused_naming_file(name: str) -> None:
    with pytest.raises(UnsafeFileNameError) as caught:
        check_file_name(name)

    assert repr(name)[1:-1][:40] in str(caught.value)


@pytest.mark.parametrize("name", [None, 5, b"x.parquet"], ids=["none", "int", "bytes"])
def test_check_file_name_not_a_string_refused(name: object) -> None:
    with pytest.raises(UnsafeFileNameError):
        check_file_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "part-00000-tid-7597930103898538622-a25f1890-efa9-40eb-a2cb-1b378e93d582-528-1-c000"
        ".snappy.parquet",
        "ünïcödé scores.parquet",
        "_SUCCESS",
        ".part-0.crc",
    ],
    ids=["spark", "unicode-space", "marker", "hidden-crc"],
)
def test_check_file_name_plain_accepted(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize("name", UNSAFE_NAMES[:10])
@responses.activate
def test_list_parts_unsafe_name_refused_before_any_fetch(
    source: DataAccessSource, name: str
) -> None:
    add_batch({"f-1": [file_item("good.parquet"), file_item(name)]})

    with pytest.raises(UnsafeFileNameError):
        source.list_parts(BATCH)

    assert not any("path=" in url for url in get_urls())


@pytest.mark.parametrize(
    ("first", "second"),
    [("a.parquet", "a.parquet"), ("A.parquet", "a.parquet")],
    ids=["same", "case-only"],
)
@responses.activate
def test_list_parts_duplicate_name_refused(
    source: DataAccessSource, first: str, second: str
) -> None:
    add_batch({"f-1": [file_item(first, owner="f-1")], "f-2": [file_item(second, owner="f-2")]})

    with pytest.raises(UnsafeFileNameError, match=f"two files named '{second}'"):
        source.list_parts(BATCH)


@pytest.mark.parametrize("loop_to", ["self", "first"], ids=["self", "back-to-first"])
@responses.activate
def test_list_parts_pagination_loop_stops_with_error(
    source: DataAccessSource, loop_to: str
) -> None:
    add_listing(f"{EXPORT}/batches/b-1/files", [dir_item("f-1")])
    page2 = f"{LINK_BASE}{EXPORT}/files/f-1?start=1"
    responses.get(
        f"{BASE}{EXPORT}/files/f-1",
        json={"data": [file_item("a.parquet")], "_links": {"next": {"href": page2}}},
    )
    back = page2 if loop_to == "self" else f"{BASE}{EXPORT}/files/f-1"
    responses.get(
        page2, json={"data": [file_item("b.parquet")], "_links": {"next": {"href": back}}}
    )

    with pytest.raises(ApiError, match="pagination loop"):
        source.list_parts(BATCH)

    assert len(get_urls()) == 3


@pytest.mark.parametrize("length", ["12kB", "", None, "-1", "1.5"], ids=str)
@responses.activate
def test_list_parts_length_not_a_number_is_clear_error(
    source: DataAccessSource, length: str | None
) -> None:
    add_batch({"f-1": [file_item("a.parquet", length=length)]})  # type: ignore[arg-type]

    with pytest.raises(ApiError, match="'a.parquet' has length"):
        source.list_parts(BATCH)


@responses.activate
def test_list_parts_missing_self_link_builds_download_url(source: DataAccessSource) -> None:
    add_batch({"f-1": [{"name": "a b.parquet", "length": 7}]})

    (part,) = source.list_parts(BATCH)

    assert part == RemotePart(
        name="a b.parquet",
        size=7,
        file_id="f-1",
        url=f"{BASE}{EXPORT}/files/f-1?path=a%20b.parquet",
    )


@responses.activate
def test_list_parts_unknown_item_shape_is_error(source: DataAccessSource) -> None:
    add_batch({"f-1": [{"id": "x", "kind": "mystery"}]})

    with pytest.raises(ApiError, match="neither name/length nor dataSetFileId"):
        source.list_parts(BATCH)


def remote_part() -> RemotePart:
    url = f"{LINK_BASE}{EXPORT}/files/f-1?path=a.parquet"
    return RemotePart(name="a.parquet", size=len(PAYLOAD), file_id="f-1", url=url)


def serve_file(honour_range: bool = True, shift: int = 0) -> None:
    """Serve PAYLOAD, answering a Range with 206 (from ``shift`` bytes off) or ignoring it."""

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        wanted = request.headers.get("Range")
        if wanted and honour_range:
            first = int(wanted.removeprefix("bytes=").rstrip("-")) + shift
            content_range = f"bytes {first}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
            return 206, {"Content-Range": content_range}, PAYLOAD[first:]
        return 200, {}, PAYLOAD

    responses.add_callback(responses.GET, remote_part().url, callback=answer)


@responses.activate
def test_fetch_part_whole_file_written_and_reported(source: DataAccessSource) -> None:
    serve_file()
    out = io.BytesIO()
    reported: list[int] = []

    began = source.fetch_part(remote_part(), out, on_bytes=reported.append)

    assert (began, out.getvalue()) == (0, PAYLOAD)
    assert sum(reported) == len(PAYLOAD) and len(reported) > 1
    assert "Range" not in responses.calls[-1].request.headers


@responses.activate
def test_fetch_part_resume_206_appends_rest(source: DataAccessSource) -> None:
    serve_file()
    out = io.BytesIO(PAYLOAD[:4000])
    out.seek(4000)

    began = source.fetch_part(remote_part(), out, start=4000)

    assert (began, out.getvalue()) == (4000, PAYLOAD)
    assert responses.calls[-1].request.headers["Range"] == "bytes=4000-"


@responses.activate
def test_fetch_part_range_ignored_200_rewrites_whole_file(
    source: DataAccessSource, caplog: pytest.LogCaptureFixture
) -> None:
    serve_file(honour_range=False)
    out = io.BytesIO(b"\xff" * 4000 + b"stale tail")
    out.seek(4000)

    with caplog.at_level(logging.WARNING, logger="cai_frames.data_access"):
        began = source.fetch_part(remote_part(), out, start=4000)

    assert (began, out.getvalue()) == (0, PAYLOAD)
    assert any("whole file" in r.getMessage() for r in caplog.records)


@responses.activate
def test_fetch_part_206_at_other_offset_is_download_error(source: DataAccessSource) -> None:
    serve_file(shift=10)

    with pytest.raises(DownloadError, match="bytes 4010-"):
        source.fetch_part(remote_part(), io.BytesIO(PAYLOAD[:4000]), start=4000)


@responses.activate
def test_fetch_part_body_cut_short_is_transport_error(source: DataAccessSource) -> None:
    headers = {"Content-Length": str(len(PAYLOAD))}
    responses.get(
        remote_part().url, body=PAYLOAD[:3000], headers=headers, auto_calculate_content_length=False
    )
    out = io.BytesIO()

    with pytest.raises(TransportError, match="after 3000 of 10240 bytes") as caught:
        source.fetch_part(remote_part(), out)

    assert isinstance(caught.value.__cause__, requests.RequestException)
    assert out.getvalue() == PAYLOAD[:3000]


@responses.activate
def test_resolve_batch_latest_or_given(source: DataAccessSource) -> None:
    catalog = f"{BASE}/data/foundation/catalog/batches"
    responses.get(catalog, json={"b-9": {"status": "success", "created": 9}})
    responses.get(f"{catalog}/b-3", json={"b-3": {"status": "failed", "created": 3}})

    assert source.resolve_batch("ds-1").batch_id == "b-9"
    with pytest.raises(NoBatchError, match="'failed'"):
        source.resolve_batch("ds-1", "b-3")


@responses.activate
def test_data_access_source_is_a_part_source(source: DataAccessSource) -> None:
    assert isinstance(source, PartSource)
