"""Settings: read from the environment when built, arguments win, secrets stay hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from cai_frames.errors import ConfigurationError
from cai_frames.settings import DEFAULT_PLATFORM_URL, Settings

ENV = {
    "AEP_CLIENT_ID": "env-client",
    "AEP_CLIENT_SECRET": "env-secret-value",
    "AEP_ORG_ID": "ENVORG@AdobeOrg",
    "AEP_SANDBOX_NAME": "dev",
}


def test_from_env_reads_environment_at_build_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEP_CLIENT_ID", "first")
    first = Settings.from_env()
    monkeypatch.setenv("AEP_CLIENT_ID", "second")
    second = Settings.from_env()

    assert (first.client_id, second.client_id) == ("first", "second")


def test_from_env_defaults_when_unset() -> None:
    settings = Settings.from_env(environ={})

    assert settings.sandbox == "prod"
    assert settings.platform_url == DEFAULT_PLATFORM_URL
    assert settings.ims_url == "https://ims-na1.adobelogin.com/ims/token/v3"


def test_from_env_overrides_win_over_environment() -> None:
    settings = Settings.from_env(environ=ENV, client_id="arg-client", sandbox=None)

    assert settings.client_id == "arg-client"
    assert settings.sandbox == "dev"


def test_from_env_cache_dir_from_variable_is_a_path(tmp_path: Path) -> None:
    settings = Settings.from_env(environ={"CAI_FRAMES_CACHE_DIR": str(tmp_path)})

    assert settings.cache_dir == tmp_path


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("AEP_CLIENT_ID", "AEP_CLIENT_ID"),
        ("AEP_CLIENT_SECRET", "AEP_CLIENT_SECRET"),
        ("AEP_ORG_ID", "AEP_ORG_ID"),
    ],
    ids=["client-id", "client-secret", "org-id"],
)
def test_require_credentials_missing_variable_is_named(missing: str, variable: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}

    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env(environ=env).require_credentials()


def test_require_credentials_access_token_replaces_secret() -> None:
    env = {k: v for k, v in ENV.items() if k != "AEP_CLIENT_SECRET"}

    Settings.from_env(environ=env, access_token="ready-token").require_credentials()


def test_require_credentials_uppercase_sandbox_refused() -> None:
    with pytest.raises(ConfigurationError, match="AEP_SANDBOX_NAME"):
        Settings.from_env(environ=ENV, sandbox="Prod").require_credentials()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://localhost:9", "http://[::1]:80"],
    ids=["ipv4-loopback", "localhost", "ipv6-loopback"],
)
def test_validate_urls_http_on_loopback_accepted(url: str) -> None:
    assert Settings.from_env(environ={}, platform_url=url).platform_url == url


@pytest.mark.parametrize(
    ("field", "variable"),
    [("platform_url", "AEP_PLATFORM_URL"), ("ims_url", "AEP_IMS_URL")],
    ids=["platform", "ims"],
)
def test_validate_urls_http_off_loopback_refused(field: str, variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env(environ={}, **{field: "http://platform.adobe.io"})


def test_validate_urls_not_a_url_refused() -> None:
    with pytest.raises(ConfigurationError, match="AEP_PLATFORM_URL"):
        Settings.from_env(environ={"AEP_PLATFORM_URL": "platform.adobe.io"})


def test_from_env_unknown_override_refused() -> None:
    with pytest.raises(ConfigurationError, match="client_idd"):
        Settings.from_env(environ={}, client_idd="x")


def test_repr_hides_secret_and_token() -> None:
    settings = Settings.from_env(environ=ENV, access_token="ready-token-value")

    text = repr(settings)

    assert "env-secret-value" not in text
    assert "ready-token-value" not in text
    assert "env-client" in text
