"""TokenProvider: fetched once, renewed before expiry, one fetch at a time, no secret shown."""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qsl

import pytest
import requests
import responses

from cai_frames.auth import MAX_LIFETIME_S, TokenProvider, renew_margin, token_lifetime
from cai_frames.errors import ApiError, AuthenticationError, TransportError
from cai_frames.settings import Settings

IMS = "https://ims-na1.adobelogin.com/ims/token/v3"
SECRET = "s3cr3t-client-value"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_settings(**overrides: str) -> Settings:
    values = {"client_id": "cid", "client_secret": SECRET, "org_id": "ORG@AdobeOrg"}
    values.update(overrides)
    return Settings.from_env(environ={}, **values)


def grant(token: str, expires_in: object = 86399) -> dict[str, object]:
    return {"access_token": token, "token_type": "bearer", "expires_in": expires_in}


@responses.activate
def test_token_first_use_fetches_once_and_reuses() -> None:
    responses.post(IMS, json=grant("tok-1"))
    tokens = TokenProvider(make_settings(scopes="openid,AdobeID"), requests.Session())

    got = [tokens.token() for _ in range(3)]

    assert got == ["tok-1"] * 3
    assert len(responses.calls) == 1
    form = dict(parse_qsl(str(responses.calls[0].request.body)))
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": SECRET,
        "scope": "openid,AdobeID",
    }


@responses.activate
def test_token_near_expiry_is_renewed_before_it_expires() -> None:
    responses.post(IMS, json=grant("tok-1", 3600))
    responses.post(IMS, json=grant("tok-2", 3600))
    clock = FakeClock()
    tokens = TokenProvider(make_settings(), requests.Session(), clock=clock)
    tokens.token()

    # 3600 s lifetime: renewed 300 s (the smaller margin) before expiry.
    clock.now += 3299
    before = tokens.token()
    clock.now += 1
    after = tokens.token()

    assert (before, after) == ("tok-1", "tok-2")
    assert tokens.fetch_count == 2


@responses.activate
def test_token_short_lifetime_renewed_at_ninety_percent() -> None:
    responses.post(IMS, json=grant("tok-1", 100))
    responses.post(IMS, json=grant("tok-2", 100))
    clock = FakeClock()
    tokens = TokenProvider(make_settings(), requests.Session(), clock=clock)
    tokens.token()

    clock.now += 89.9
    assert tokens.token() == "tok-1"
    clock.now += 0.1
    assert tokens.token() == "tok-2"


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (86399, 86399.0),
        ("3600", 3600.0),
        (86399992, MAX_LIFETIME_S),
        (None, 3600.0),
        ("soon", 3600.0),
        (0, 3600.0),
        (-5, 3600.0),
        (True, 3600.0),
    ],
    ids=["seconds", "string", "ms-capped", "missing", "text", "zero", "negative", "bool"],
)
def test_token_lifetime_expires_in_read_as_seconds(expires_in: object, lifetime: float) -> None:
    assert token_lifetime(expires_in) == lifetime


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [(86399, 300.0), (3000, 300.0), (600, 60.0)],
    ids=["day", "edge", "short"],
)
def test_renew_margin_smaller_of_five_minutes_and_tenth(lifetime: float, margin: float) -> None:
    assert renew_margin(lifetime) == pytest.approx(margin)


@responses.activate
def test_token_concurrent_first_use_fetches_once() -> None:
    def slow_grant(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        time.sleep(0.05)  # long enough for every thread to be waiting on the lock
        return 200, {}, '{"access_token": "tok-shared", "expires_in": 86399}'

    responses.add_callback(responses.POST, IMS, callback=slow_grant)
    tokens = TokenProvider(make_settings(), requests.Session())
    barrier = threading.Barrier(8)
    got: list[str] = []

    def worker() -> None:
        barrier.wait()
        got.append(tokens.token())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert got == ["tok-shared"] * 8
    assert len(responses.calls) == 1


@responses.activate
def test_invalidate_forces_new_fetch() -> None:
    responses.post(IMS, json=grant("tok-1"))
    responses.post(IMS, json=grant("tok-2"))
    tokens = TokenProvider(make_settings(), requests.Session())
    first = tokens.token()

    tokens.invalidate(first)

    assert tokens.token() == "tok-2"


@responses.activate
def test_invalidate_already_replaced_token_keeps_new_one() -> None:
    responses.post(IMS, json=grant("tok-1"))
    responses.post(IMS, json=grant("tok-2"))
    tokens = TokenProvider(make_settings(), requests.Session())
    stale = tokens.token()
    tokens.invalidate(stale)
    fresh = tokens.token()

    # A second thread reporting the same refused token must not discard the fresh one.
    tokens.invalidate(stale)

    assert tokens.token() == fresh == "tok-2"
    assert len(responses.calls) == 2


@responses.activate
def test_token_refused_credentials_names_settings_without_secret() -> None:
    body = {"error": "invalid_client", "error_description": f"bad client_secret {SECRET}"}
    responses.post(IMS, status=400, json=body)
    tokens = TokenProvider(make_settings(), requests.Session())

    with pytest.raises(AuthenticationError) as caught:
        tokens.token()

    message = str(caught.value)
    assert "AEP_CLIENT_ID" in message and "AEP_CLIENT_SECRET" in message
    assert "invalid_client" in message
    assert SECRET not in message


@responses.activate
def test_token_answer_without_access_token_is_clear_error() -> None:
    responses.post(IMS, json={"token_type": "bearer", "expires_in": 86399})
    tokens = TokenProvider(make_settings(), requests.Session())

    with pytest.raises(AuthenticationError, match="without an access_token.*AEP_IMS_URL"):
        tokens.token()


@responses.activate
def test_token_answer_not_json_is_clear_error() -> None:
    responses.post(IMS, body="<html>login</html>", content_type="text/html")
    tokens = TokenProvider(make_settings(), requests.Session())

    with pytest.raises(AuthenticationError, match="not a JSON object"):
        tokens.token()


@responses.activate
def test_token_ims_server_error_is_api_error() -> None:
    responses.post(IMS, status=503, body="busy")
    tokens = TokenProvider(make_settings(), requests.Session())

    with pytest.raises(ApiError) as caught:
        tokens.token()

    assert caught.value.status == 503


@responses.activate
def test_token_ims_unreachable_is_transport_error() -> None:
    refused = requests.ConnectionError("connection refused")
    responses.post(IMS, body=refused)
    tokens = TokenProvider(make_settings(), requests.Session())

    with pytest.raises(TransportError) as caught:
        tokens.token()

    assert caught.value.__cause__ is refused


@responses.activate
def test_token_ims_tls_mismatch_names_the_scheme_setting() -> None:
    mismatch = requests.exceptions.SSLError("UNEXPECTED_EOF_WHILE_READING")
    responses.post(IMS, body=mismatch)
    tokens = TokenProvider(make_settings(), requests.Session())

    with pytest.raises(TransportError, match="did not speak TLS") as caught:
        tokens.token()

    assert "scheme (https:// or http://) of AEP_IMS_URL" in str(caught.value)
    assert caught.value.__cause__ is mismatch


@responses.activate
def test_token_static_used_as_is_without_ims() -> None:
    settings = make_settings(access_token="ready-token", client_secret="")
    tokens = TokenProvider(settings, requests.Session())

    assert tokens.token() == "ready-token"
    assert not tokens.can_renew
    assert len(responses.calls) == 0


def test_token_static_refused_without_secret_names_access_token() -> None:
    settings = Settings.from_env(
        environ={}, client_id="cid", org_id="ORG@AdobeOrg", access_token="ready-token"
    )
    tokens = TokenProvider(settings, requests.Session())
    tokens.invalidate("ready-token")

    with pytest.raises(AuthenticationError, match="AEP_ACCESS_TOKEN") as caught:
        tokens.token()

    assert "ready-token" not in str(caught.value)


@responses.activate
def test_token_static_refused_with_secret_fetches_new_one() -> None:
    responses.post(IMS, json=grant("tok-fetched"))
    tokens = TokenProvider(make_settings(access_token="ready-token"), requests.Session())
    assert tokens.token() == "ready-token"

    tokens.invalidate("ready-token")

    assert tokens.token() == "tok-fetched"


@responses.activate
def test_repr_never_shows_token_or_secret() -> None:
    responses.post(IMS, json=grant("tok-hidden"))
    tokens = TokenProvider(make_settings(), requests.Session())
    tokens.token()

    text = repr(tokens)

    assert "tok-hidden" not in text and SECRET not in text
    assert "cid" in text
