"""Client: settings from the environment with arguments winning, wired pieces, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import responses

from cai_frames.catalog import Catalog
from cai_frames.client import Client
from cai_frames.data_access import DataAccessSource
from cai_frames.errors import ConfigurationError
from cai_frames.http import PlatformSession
from cai_frames.settings import Settings

SECRET = "client-secret-value"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEP_CLIENT_ID", "env-client")
    monkeypatch.setenv("AEP_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("AEP_ORG_ID", "ENVORG@AdobeOrg")


@pytest.mark.usefixtures("credentials")
def test_client_environment_read_and_arguments_win(tmp_path: Path) -> None:
    client = Client(sandbox="dev", cache_dir=tmp_path / "c")

    assert client.settings.client_id == "env-client"
    assert (client.settings.sandbox, client.settings.cache_dir) == ("dev", tmp_path / "c")


@pytest.mark.usefixtures("credentials")
def test_client_wires_session_catalog_and_source() -> None:
    with Client() as client:
        assert isinstance(client.session, PlatformSession)
        assert isinstance(client.catalog, Catalog)
        assert isinstance(client.source, DataAccessSource)
        assert client.source.catalog is client.catalog
        assert client.catalog.session is client.session


@pytest.mark.parametrize(
    ("unset", "variable"),
    [("AEP_CLIENT_ID", "AEP_CLIENT_ID"), ("AEP_ORG_ID", "AEP_ORG_ID")],
    ids=["client-id", "org-id"],
)
@pytest.mark.usefixtures("credentials")
def test_client_missing_setting_names_variable(
    monkeypatch: pytest.MonkeyPatch, unset: str, variable: str
) -> None:
    monkeypatch.delenv(unset)

    with pytest.raises(ConfigurationError, match=variable):
        Client()


def test_client_no_environment_names_every_missing_variable() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Client()

    message = str(caught.value)
    assert all(v in message for v in ("AEP_CLIENT_ID", "AEP_CLIENT_SECRET", "AEP_ORG_ID"))


def test_client_access_token_needs_no_secret() -> None:
    client = Client(client_id="cid", org_id="O@AdobeOrg", access_token="ready-token")

    assert client.session.tokens.token() == "ready-token"


def test_client_settings_object_used_with_overrides() -> None:
    base = Settings.from_env(environ={}, client_id="cid", client_secret=SECRET, org_id="O")

    client = Client(settings=base, sandbox="stage")

    assert (client.settings.client_id, client.settings.sandbox) == ("cid", "stage")


@pytest.mark.usefixtures("credentials")
def test_client_plain_http_off_loopback_refused() -> None:
    with pytest.raises(ConfigurationError, match="AEP_PLATFORM_URL"):
        Client(platform_url="http://platform.adobe.io")


@pytest.mark.usefixtures("credentials")
def test_client_concurrency_sizes_connection_pool() -> None:
    client = Client(concurrency=32)

    adapter = client.session.requests.get_adapter("https://platform.adobe.io/x")

    assert adapter._pool_maxsize == 32  # type: ignore[attr-defined]


@responses.activate
@pytest.mark.usefixtures("credentials")
def test_client_repr_hides_secret_and_token() -> None:
    responses.post(
        "https://ims-na1.adobelogin.com/ims/token/v3",
        json={"access_token": "tok-value", "expires_in": 86399},
    )
    client = Client()
    client.session.tokens.token()

    text = repr(client) + repr(client.session) + repr(client.settings)

    assert SECRET not in text and "tok-value" not in text
    assert "env-client" in text
