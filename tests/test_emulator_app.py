"""The emulator's routes over loopback: auth, catalog filters, paging, bytes and ranges."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
import requests
from _emulator import platform_headers, token_form

from cai_frames import load_scores
from cai_frames.emulator import DatasetSpec, Emulator, default_specs

BATCHES = "/data/foundation/catalog/batches"
EXPORT = "/data/foundation/export"
MARKER_PREFIXES = ("_SUCCESS", "_committed_", "_started_", ".")
DIRECTORY = DatasetSpec(name="Customer AI Scores - Many Parts", rows=390, parts=130)
PER_FILE = DatasetSpec(
    name="Customer AI Scores - File Per Part", rows=210, parts=105, file_layout="per_file"
)
NO_MARKERS = DatasetSpec(name="Customer AI Scores - Bare", rows=50, parts=2, markers=False)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator([*default_specs().values(), DIRECTORY, PER_FILE, NO_MARKERS]) as running:
        yield running


@pytest.fixture(scope="module")
def session(emu: Emulator) -> requests.Session:
    http = requests.Session()
    http.headers.update(platform_headers(emu))
    return http


def get_json(session: requests.Session, url: str) -> Any:
    response = session.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def walk(session: requests.Session, url: str) -> list[dict[str, Any]]:
    """Every item of a Data Access listing, following ``_links.next`` verbatim."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        page = get_json(session, next_url)
        items.extend(page["data"])
        next_url = page.get("_links", {}).get("next", {}).get("href")
    return items


def batch_files_url(emu: Emulator, dataset_id: str) -> str:
    return f"{emu.platform_url}{EXPORT}/batches/{emu.latest_batch_id(dataset_id)}/files"


def all_entries(emu: Emulator, session: requests.Session, dataset_id: str) -> list[dict[str, Any]]:
    """Every name/length item behind every dataSetFileId of the newest batch."""
    files = walk(session, batch_files_url(emu, dataset_id))
    return [e for f in files for e in walk(session, f["_links"]["self"]["href"])]


def test_token_query_string_credentials_accepted(emu: Emulator) -> None:
    response = requests.post(emu.ims_url, params=token_form(emu), timeout=10)
    assert response.status_code == 200
    assert response.json()["expires_in"] == 86399


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [("client_secret", "wrong", 401), ("client_id", "wrong", 400), ("grant_type", "password", 400)],
    ids=["bad-secret", "bad-client", "bad-grant"],
)
def test_token_bad_credentials_refused(emu: Emulator, field: str, value: str, status: int) -> None:
    form = token_form(emu, **{field: value})
    response = requests.post(emu.ims_url, data=form, timeout=10)
    assert response.status_code == status
    assert set(response.json()) == {"error", "error_description"}
    assert emu.env()["AEP_CLIENT_SECRET"] not in response.text


def test_gateway_missing_sandbox_header_refused(emu: Emulator, session: requests.Session) -> None:
    headers = {k: v for k, v in session.headers.items() if k != "x-sandbox-name"}
    response = requests.get(emu.platform_url + BATCHES, headers=headers, timeout=10)
    assert (response.status_code, response.json()["error_code"]) == (400, "400003")


def test_gateway_other_sandbox_sees_nothing(emu: Emulator, session: requests.Session) -> None:
    headers = {**session.headers, "x-sandbox-name": "dev"}
    listing = requests.get(emu.platform_url + BATCHES, headers=headers, timeout=10)
    dataset_id = emu.dataset_id("churn")
    url = f"{emu.platform_url}/data/foundation/catalog/dataSets/{dataset_id}"
    assert listing.json() == {}
    assert requests.get(url, headers=headers, timeout=10).status_code == 404


def test_gateway_expired_token_refused() -> None:
    with Emulator([NO_MARKERS]) as emu:
        headers = platform_headers(emu)
        before = requests.get(emu.platform_url + BATCHES, headers=headers, timeout=10)
        emu.gateway.expire_tokens()
        after = requests.get(emu.platform_url + BATCHES, headers=headers, timeout=10)
    assert before.status_code == 200
    assert (after.status_code, after.json()["error_code"]) == (401, "401013")


def test_catalog_desc_created_newest_first(emu: Emulator, session: requests.Session) -> None:
    dataset_id = emu.dataset_id("churn")
    url = f"{emu.platform_url}{BATCHES}?&dataSet={dataset_id}&orderBy=desc:created"
    records = get_json(session, url)
    created = [r["created"] for r in records.values()]
    assert list(records) == [b["_key"] for b in emu.batches(dataset_id)]
    assert created == sorted(created, reverse=True) and len(created) == 3


def test_catalog_status_filter_skips_failed_newest(
    emu: Emulator, session: requests.Session
) -> None:
    dataset_id = emu.dataset_id("legacy")
    query = f"dataSet={dataset_id}&status=success&orderBy=desc:created&limit=1"
    records = get_json(session, f"{emu.platform_url}{BATCHES}?{query}")
    (record,) = records.values()
    related = [o["id"] for o in record["relatedObjects"] if o["type"] == "batch"]
    assert related == [emu.latest_batch_id(dataset_id)]
    assert emu.batches(dataset_id)[0]["status"] == "failed"


def test_catalog_new_layout_key_is_id_and_replays_previous(
    emu: Emulator, session: requests.Session
) -> None:
    newest, previous = emu.batches(emu.dataset_id("churn"))[:2]
    assert newest["_key"] == newest["id"] == newest["externalId"]
    assert newest["replay"]["predecessors"] == [previous["_key"]]
    assert [o["type"] for o in newest["relatedObjects"]] == ["dataSet"]


def test_catalog_failed_only_dataset_has_no_success(
    emu: Emulator, session: requests.Session
) -> None:
    dataset_id = emu.dataset_id("failed")
    url = f"{emu.platform_url}{BATCHES}?dataSet={dataset_id}&status=success"
    assert get_json(session, url) == {}
    assert {b["status"] for b in emu.batches(dataset_id)} == {"failed", "processing"}


@pytest.mark.parametrize("limit", ["0", "101", "x"])
def test_catalog_invalid_limit_names_range(
    emu: Emulator, session: requests.Session, limit: str
) -> None:
    response = session.get(f"{emu.platform_url}{BATCHES}?limit={limit}", timeout=10)
    assert response.status_code == 400
    assert "between 1 and 100" in response.json()["detail"]


def test_catalog_limit_and_start_page_by_offset(emu: Emulator, session: requests.Session) -> None:
    url = f"{emu.platform_url}{BATCHES}?orderBy=asc:created"
    everything = list(get_json(session, url + "&limit=100"))
    pages = [list(get_json(session, f"{url}&limit=2&start={s}")) for s in range(0, 40, 2)]
    assert [key for page in pages for key in page] == everything
    assert len(list(get_json(session, url))) == min(20, len(everything))


def test_catalog_created_after_is_exclusive(emu: Emulator, session: requests.Session) -> None:
    dataset_id = emu.dataset_id("churn")
    oldest = emu.batches(dataset_id)[-1]
    url = f"{emu.platform_url}{BATCHES}?dataSet={dataset_id}&createdAfter={oldest['created']}"
    assert oldest["_key"] not in get_json(session, url)
    assert len(get_json(session, url)) == 2


def test_data_access_old_layout_catalog_key_not_found(
    emu: Emulator, session: requests.Session
) -> None:
    newest_success = [b for b in emu.batches(emu.dataset_id("legacy")) if b["status"] == "success"]
    catalog_key = newest_success[0]["_key"]
    response = session.get(f"{emu.platform_url}{EXPORT}/batches/{catalog_key}/files", timeout=10)
    assert response.status_code == 404


def test_data_access_directory_paging_yields_every_file_once(
    emu: Emulator, session: requests.Session
) -> None:
    entries = all_entries(emu, session, DIRECTORY.dataset_id)
    names = [e["name"] for e in entries]
    expected = sorted(p.name for p in emu.parts(DIRECTORY.dataset_id))
    assert len(names) == len(set(names))
    assert sorted(n for n in names if n.startswith("part-")) == expected
    assert len(expected) == 130


def test_data_access_directory_pages_hold_100_items(
    emu: Emulator, session: requests.Session
) -> None:
    (item,) = walk(session, batch_files_url(emu, DIRECTORY.dataset_id))
    first = get_json(session, item["_links"]["self"]["href"])
    assert len(first["data"]) == 100 and first["_page"]["count"] == 100
    assert first["_links"]["next"]["href"].startswith(emu.platform_url)


def test_data_access_per_file_batch_listing_pages_by_offset(
    emu: Emulator, session: requests.Session
) -> None:
    files = walk(session, batch_files_url(emu, PER_FILE.dataset_id))
    entries = all_entries(emu, session, PER_FILE.dataset_id)
    parts = [e["name"] for e in entries if e["name"].endswith(".parquet")]
    assert len(files) == len(entries) == 105 + 105 + 3
    assert sorted(parts) == sorted(p.name for p in emu.parts(PER_FILE.dataset_id))
    assert len({f["dataSetFileId"] for f in files}) == len(files)


def test_data_access_markers_listed_beside_parts(emu: Emulator, session: requests.Session) -> None:
    entries = {e["name"]: e for e in all_entries(emu, session, emu.dataset_id("churn"))}
    markers = [n for n in entries if n.startswith(MARKER_PREFIXES)]
    crc = [n for n in markers if n.endswith(".crc")]
    assert entries["_SUCCESS"]["length"] == "0"
    assert any(n.startswith("_committed_") for n in markers)
    assert any(n.startswith("_started_") for n in markers)
    assert len(crc) == 12 and all(int(entries[n]["length"]) > 0 for n in crc)


def test_data_access_markers_off_lists_parts_only(emu: Emulator, session: requests.Session) -> None:
    names = [e["name"] for e in all_entries(emu, session, NO_MARKERS.dataset_id)]
    assert names == sorted(p.name for p in emu.parts(NO_MARKERS.dataset_id))


def test_data_access_lengths_are_strings_of_file_sizes(
    emu: Emulator, session: requests.Session
) -> None:
    dataset_id = emu.dataset_id("multi")
    sizes = {p.name: p.stat().st_size for p in emu.parts(dataset_id)}
    entries = [e for e in all_entries(emu, session, dataset_id) if e["name"] in sizes]
    assert {e["name"]: e["length"] for e in entries} == {n: str(s) for n, s in sizes.items()}


def first_part(emu: Emulator, session: requests.Session) -> tuple[str, bytes]:
    """The href and the bytes on disk of the churn dataset's first part."""
    dataset_id = emu.dataset_id("churn")
    path = emu.parts(dataset_id)[0]
    entries = all_entries(emu, session, dataset_id)
    href = next(e["_links"]["self"]["href"] for e in entries if e["name"] == path.name)
    return href, path.read_bytes()


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [("bytes=0-99", 0, 100), ("bytes=1000-", 1000, None), ("bytes=17-17", 17, 18)],
    ids=["closed", "open", "one-byte"],
)
def test_file_range_returns_slice(
    emu: Emulator, session: requests.Session, header: str, start: int, stop: int | None
) -> None:
    href, data = first_part(emu, session)
    response = session.get(href, headers={"Range": header}, timeout=10)
    expected = data[start:stop]
    last = start + len(expected) - 1
    assert response.status_code == 206
    assert response.content == expected
    assert response.headers["Content-Range"] == f"bytes {start}-{last}/{len(data)}"
    assert response.headers["Content-Length"] == str(len(expected))


def test_file_get_returns_whole_parquet(emu: Emulator, session: requests.Session) -> None:
    href, data = first_part(emu, session)
    response = session.get(href, timeout=10)
    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Type"] == "application/parquet"


def test_file_head_with_path_headers_only(emu: Emulator, session: requests.Session) -> None:
    href, data = first_part(emu, session)
    response = session.head(href, timeout=10)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Accept-Ranges"] == "bytes"


def test_file_head_without_path_refused(emu: Emulator, session: requests.Session) -> None:
    href, _ = first_part(emu, session)
    assert session.head(href.partition("?")[0], timeout=10).status_code == 400


def test_file_unknown_path_not_found(emu: Emulator, session: requests.Session) -> None:
    href, _ = first_part(emu, session)
    assert session.get(href.partition("?")[0] + "?path=nope.parquet", timeout=10).status_code == 404


def test_requests_recorded_with_status(emu: Emulator, session: requests.Session) -> None:
    emu.reset_requests()
    session.get(f"{emu.platform_url}{BATCHES}?limit=0", timeout=10)
    session.get(f"{emu.platform_url}{BATCHES}?limit=1", timeout=10)
    assert [(r.method, r.path, r.status) for r in emu.requests] == [
        ("GET", f"{BATCHES}?limit=0", 400),
        ("GET", f"{BATCHES}?limit=1", 200),
    ]


def test_served_part_reads_with_pyarrow(
    emu: Emulator, session: requests.Session, tmp_path: Any
) -> None:
    href, _ = first_part(emu, session)
    target = tmp_path / "part.parquet"
    target.write_bytes(session.get(href, timeout=10).content)
    assert pq.read_metadata(target).num_rows == len(
        pq.read_table(emu.parts(emu.dataset_id("churn"))[0])
    )


def test_emulator_serve_forever_returns_after_stop() -> None:
    emu = Emulator([NO_MARKERS]).start()
    stopper = threading.Timer(0.3, emu.stop)
    stopper.start()
    emu.serve_forever()
    stopper.join()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.platform_url


@pytest.mark.parametrize(
    "payload",
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), b"GARBAGE\r\n\r\n"],
    ids=["tls-hello", "garbage"],
)
def test_emulator_unparsable_request_answered_400_quietly(
    emu: Emulator, session: requests.Session, capfd: pytest.CaptureFixture[str], payload: bytes
) -> None:
    host, port = emu.platform_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(payload)
        raw.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: raw.recv(4096), b""))

    assert b"Error code: 400" in answer
    assert capfd.readouterr().err == ""
    assert session.get(f"{emu.platform_url}{BATCHES}?limit=1", timeout=10).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_emulator_non_loopback_host_refused(host: str) -> None:
    fixed = "the emulator only serves loopback addresses (its credentials are fixed and public)"
    message = f"{fixed}, got host {host!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        Emulator([NO_MARKERS], host=host)


@pytest.mark.parametrize("port", [-1, 65536, 99999])
def test_emulator_port_out_of_range_refused(port: int) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"from 0 to 65535 (0: any free one), got {port}")
    ):
        Emulator([NO_MARKERS], port=port)


def test_emulator_ipv6_loopback_url_bracketed_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        emu = Emulator([NO_MARKERS], host="::1").start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        port = urlsplit(emu.platform_url).port
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        frame = load_scores(NO_MARKERS.dataset_id, progress=False)

        assert emu.platform_url == f"http://[::1]:{port}"
        assert emu.ims_url == f"http://[::1]:{port}/ims/token/v3"
        assert sorted(frame["profile_id"]) == sorted(emu.truth(NO_MARKERS.dataset_id)["profile_id"])
    finally:
        emu.stop()
