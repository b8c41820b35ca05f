"""PlatformSession: headers, token refresh on 401, retries, error mapping, no secret leaks."""

from __future__ import annotations

import logging
import socket

import pytest
import requests
import responses

from cai_frames.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    TransportError,
)
from cai_frames.http import USER_AGENT, PlatformSession, build_retry
from cai_frames.settings import Settings

BASE = "https://platform.adobe.io"
IMS = "https://ims-na1.adobelogin.com/ims/token/v3"
SECRET = "s3cr3t-client-value"
BATCHES = f"{BASE}/data/foundation/catalog/batches"


def make_session(**overrides: str) -> PlatformSession:
    values = {"client_id": "cid", "client_secret": SECRET, "org_id": "ORG@AdobeOrg"}
    values.update(overrides)
    settings = Settings.from_env(environ={}, sandbox="dev", **values)
    return PlatformSession(settings, retry=build_retry(backoff_factor=0, backoff_jitter=0))


def add_tokens(*tokens: str) -> None:
    for token in tokens:
        responses.post(IMS, json={"access_token": token, "expires_in": 86399})


@responses.activate
def test_request_every_call_sends_platform_headers() -> None:
    add_tokens("tok-1")
    responses.get(BATCHES, json={})
    session = make_session()

    session.get_json("/data/foundation/catalog/batches")
    session.get_json("data/foundation/catalog/batches")

    platform_calls = [c for c in responses.calls if c.request.url.startswith(BASE)]
    assert len(platform_calls) == 2
    for call in platform_calls:
        headers = call.request.headers
        assert headers["Authorization"] == "Bearer tok-1"
        assert headers["x-api-key"] == "cid"
        assert headers["x-gw-ims-org-id"] == "ORG@AdobeOrg"
        assert headers["x-sandbox-name"] == "dev"
        assert headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("cai-frames/")


@responses.activate
def test_request_absolute_url_used_verbatim_with_port() -> None:
    add_tokens("tok-1")
    url = "https://platform.adobe.io:443/data/foundation/export/files/f-1?start=1&limit=1"
    responses.get(url, json={"data": []})

    make_session().get_json(url)

    assert responses.calls[-1].request.url == url


def test_url_for_other_host_refused_before_sending() -> None:
    session = make_session()

    with pytest.raises(ConfigurationError, match="AEP_PLATFORM_URL"):
        session.url_for("https://evil.example.com/data/foundation/export/files/x")


@responses.activate
def test_request_first_401_refreshes_token_and_repeats_once() -> None:
    add_tokens("tok-old", "tok-new")
    responses.get(BATCHES, status=401, json={"error_code": "401013", "message": "Oauth token"})
    responses.get(BATCHES, json={"ok": True})

    body = make_session().get_json(BATCHES)

    gets = [c for c in responses.calls if c.request.method == "GET"]
    assert body == {"ok": True}
    assert [c.request.headers["Authorization"] for c in gets] == [
        "Bearer tok-old",
        "Bearer tok-new",
    ]


@responses.activate
def test_request_second_401_is_authentication_error_naming_settings() -> None:
    add_tokens("tok-old", "tok-new")
    responses.get(BATCHES, status=401, json={"error_code": "401013", "message": "not valid"})

    with pytest.raises(AuthenticationError) as caught:
        make_session().get_json(BATCHES)

    message = str(caught.value)
    assert "AEP_CLIENT_ID" in message and "401013" in message
    assert sum(c.request.method == "GET" for c in responses.calls) == 2
    assert sum(c.request.method == "POST" for c in responses.calls) == 2


@responses.activate
def test_request_static_token_refused_names_access_token() -> None:
    responses.get(BATCHES, status=401, json={"error_code": "401013", "message": "not valid"})
    session = make_session(client_secret="", access_token="ready-token-value")

    with pytest.raises(AuthenticationError, match="AEP_ACCESS_TOKEN") as caught:
        session.get_json(BATCHES)

    assert "ready-token-value" not in str(caught.value)
    assert len(responses.calls) == 1


@responses.activate
def test_request_404_is_not_found_with_gateway_message() -> None:
    add_tokens("tok-1")
    url = f"{BASE}/data/foundation/catalog/dataSets/nope"
    responses.get(url, status=404, json={"error_code": "404001", "message": "Dataset missing"})

    with pytest.raises(NotFoundError) as caught:
        make_session().get_json(url)

    error = caught.value
    assert (error.status, error.error_code, error.server_message) == (
        404,
        "404001",
        "Dataset missing",
    )
    assert error.url == url
    assert "Dataset missing" in str(error)


@responses.activate
def test_request_problem_shape_body_read_into_message() -> None:
    add_tokens("tok-1")
    problem = {"type": "/t", "status": 400, "title": "BadRequestError", "detail": "bad limit"}
    responses.get(BATCHES, status=400, json=problem)

    with pytest.raises(ApiError) as caught:
        make_session().get_json(BATCHES)

    assert caught.value.server_message == "BadRequestError: bad limit"
    assert caught.value.error_code is None
    assert not isinstance(caught.value, NotFoundError)


@responses.activate
def test_request_invalid_api_key_hints_client_id() -> None:
    add_tokens("tok-1")
    responses.get(
        BATCHES, status=403, json={"error_code": "403003", "message": "Api Key is invalid"}
    )

    with pytest.raises(ApiError, match="Api Key is invalid.*AEP_CLIENT_ID"):
        make_session().get_json(BATCHES)


@responses.activate
def test_request_503_retried_then_success(caplog: pytest.LogCaptureFixture) -> None:
    add_tokens("tok-1")
    responses.get(BATCHES, status=503)
    responses.get(BATCHES, json={"ok": True})

    with caplog.at_level(logging.WARNING, logger="cai_frames.http"):
        body = make_session().get_json(BATCHES)

    assert body == {"ok": True}
    assert sum(c.request.method == "GET" for c in responses.calls) == 2
    assert any("retrying GET" in r.getMessage() and "503" in r.getMessage() for r in caplog.records)


@responses.activate
def test_request_429_with_retry_after_zero_retried() -> None:
    add_tokens("tok-1")
    responses.get(BATCHES, status=429, headers={"Retry-After": "0"})
    responses.get(BATCHES, json={"ok": True})

    assert make_session().get_json(BATCHES) == {"ok": True}
    assert sum(c.request.method == "GET" for c in responses.calls) == 2


@responses.activate
def test_request_5xx_every_time_gives_up_with_api_error() -> None:
    add_tokens("tok-1")
    responses.get(BATCHES, status=502)

    with pytest.raises(ApiError) as caught:
        make_session().get_json(BATCHES)

    assert caught.value.status == 502
    # build_retry's default: 5 retries after the first attempt.
    assert sum(c.request.method == "GET" for c in responses.calls) == 6


@responses.activate
def test_request_post_not_retried_unless_allowed() -> None:
    add_tokens("tok-1", "tok-2")
    url = f"{BASE}/data/core/ups/export/jobs"
    responses.post(url, status=503)
    responses.post(url, json={"id": 1})
    plain = make_session()
    with pytest.raises(ApiError):
        plain.request("POST", url, json={})
    settings = plain.settings
    allowing = PlatformSession(
        settings, retry=build_retry(backoff_factor=0, allowed_methods={"GET", "POST"})
    )

    response = allowing.request("POST", url, json={})

    assert response.json() == {"id": 1}


@responses.activate
def test_request_connection_error_is_transport_error_from_cause() -> None:
    add_tokens("tok-1")
    dropped = requests.ConnectionError("connection reset by peer")
    responses.get(BATCHES, body=dropped)

    with pytest.raises(TransportError) as caught:
        make_session().get_json(BATCHES)

    assert caught.value.__cause__ is dropped
    assert BATCHES in str(caught.value)


@responses.activate
def test_get_json_body_not_json_is_api_error() -> None:
    add_tokens("tok-1")
    responses.get(BATCHES, body="<html>maintenance</html>", content_type="text/html")

    with pytest.raises(ApiError, match="not JSON"):
        make_session().get_json(BATCHES)


@responses.activate
def test_request_stream_returns_unread_response() -> None:
    add_tokens("tok-1")
    url = f"{BASE}/data/foundation/export/files/f-1?path=a.parquet"
    responses.get(url, body=b"PAR1" * 1000)

    response = make_session().get(url, stream=True)

    assert b"".join(response.iter_content(chunk_size=100)) == b"PAR1" * 1000


@responses.activate
def test_request_logs_one_info_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    add_tokens("tok-1")
    responses.get(BATCHES, json={})

    with caplog.at_level(logging.INFO, logger="cai_frames.http"):
        make_session().get_json(BATCHES, params={"dataSet": "ds-1"})

    lines = [r.getMessage() for r in caplog.records if r.name == "cai_frames.http"]
    assert len(lines) == 1
    assert lines[0].startswith(f"GET {BATCHES}?dataSet=ds-1 -> 200 (")


@responses.activate
def test_full_flow_secrets_never_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    token_old, token_new = "tok-OLD-9f8e7d", "tok-NEW-1a2b3c"
    add_tokens(token_old, token_new)
    responses.get(BATCHES, status=401, json={"error_code": "401013", "message": token_old})
    responses.get(BATCHES, status=503)
    responses.get(BATCHES, json={})
    missing = f"{BASE}/data/foundation/catalog/dataSets/x"
    responses.get(missing, status=404, json={"error_code": "404", "message": f"echo {SECRET}"})
    session = make_session()
    errors: list[str] = []

    with caplog.at_level(logging.DEBUG):
        session.get_json(BATCHES)
        try:
            session.get_json(missing)
        except NotFoundError as exc:
            errors.append(str(exc))
        errors.append(repr(session) + repr(session.tokens))

    texts = errors + [r.getMessage() for r in caplog.records]
    texts += [str(arg) for r in caplog.records for arg in (r.args or ())]
    assert len(caplog.records) > 5
    for text in texts:
        for secret in (token_old, token_new, SECRET, "Bearer "):
            assert secret not in text, (secret, text)


@responses.activate
def test_request_ssl_error_mapped_to_transport_error_naming_the_scheme_settings() -> None:
    add_tokens("tok-1")
    responses.get(BATCHES, body=requests.exceptions.SSLError("[SSL: UNEXPECTED_EOF_WHILE_READING]"))

    with pytest.raises(TransportError) as raised:
        make_session().get_json(BATCHES)

    assert str(raised.value) == (
        f"GET {BATCHES} failed: the server did not speak TLS as expected "
        "([SSL: UNEXPECTED_EOF_WHILE_READING]). Check the scheme (https:// or http://) of "
        "AEP_PLATFORM_URL and AEP_IMS_URL: a plain-http server such as the emulator needs "
        "http://."
    )
    assert isinstance(raised.value.__cause__, requests.exceptions.SSLError)


def test_request_connection_refused_each_retry_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A port nothing listens on: bound, then released.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings.from_env(
        environ={}, access_token="tok-1", platform_url=f"http://127.0.0.1:{port}"
    )
    session = PlatformSession(
        settings, retry=build_retry(total=2, backoff_factor=0, backoff_jitter=0)
    )

    with caplog.at_level(logging.WARNING), pytest.raises(TransportError):
        session.get_json("/data/foundation/catalog/batches")

    warnings = [(r.name, r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING]
    assert [name for name, _ in warnings] == ["cai_frames.http", "cai_frames.http"]
    assert [message.split(" (")[1] for _, message in warnings] == [
        "retry 1, 1 left)",
        "retry 2, 0 left)",
    ]
