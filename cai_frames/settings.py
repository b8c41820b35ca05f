"""Settings: credentials, endpoints and the cache folder.

Settings are read from the environment when a client is built, never at import, so a
test or a notebook can change a variable and build a new client.

=========================  =============================================================
variable                   meaning
=========================  =============================================================
``AEP_CLIENT_ID``          OAuth Server-to-Server client ID (also sent as ``x-api-key``)
``AEP_CLIENT_SECRET``      its client secret
``AEP_ORG_ID``             IMS organisation, ``...@AdobeOrg``
``AEP_SANDBOX_NAME``       sandbox, default ``prod``
``AEP_SCOPES``             comma-separated scopes, default the AEP scope set
``AEP_ACCESS_TOKEN``       a ready token; then no client secret is needed
``AEP_PLATFORM_URL``       gateway base URL, default ``https://platform.adobe.io``
``AEP_IMS_URL``            IMS token endpoint URL, default the v3 endpoint
``CAI_FRAMES_CACHE_DIR``   cache folder, default the user cache folder
``CAI_FRAMES_OFFLINE``     ``1`` to load from the cache without any network call
=========================  =============================================================
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .errors import ConfigurationError

DEFAULT_PLATFORM_URL = "https://platform.adobe.io"
DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com/ims/token/v3"
DEFAULT_SANDBOX = "prod"
DEFAULT_SCOPES = "openid,session,AdobeID,read_organizations,additional_info.projectedProductContext"

# Environment variable for each settings field.
ENV_VARS = {
    "client_id": "AEP_CLIENT_ID",
    "client_secret": "AEP_CLIENT_SECRET",
    "org_id": "AEP_ORG_ID",
    "sandbox": "AEP_SANDBOX_NAME",
    "scopes": "AEP_SCOPES",
    "access_token": "AEP_ACCESS_TOKEN",
    "platform_url": "AEP_PLATFORM_URL",
    "ims_url": "AEP_IMS_URL",
    "cache_dir": "CAI_FRAMES_CACHE_DIR",
}

OFFLINE_ENV = "CAI_FRAMES_OFFLINE"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def default_cache_dir() -> Path:
    """The per-user cache folder cai_frames uses when none is set."""
    return Path(platformdirs.user_cache_dir("cai_frames", appauthor=False))


def offline_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``CAI_FRAMES_OFFLINE`` asks for offline loading."""
    env = os.environ if environ is None else environ
    return env.get(OFFLINE_ENV, "").strip().lower() in _TRUE_WORDS


@dataclass(frozen=True)
class Settings:
    """Everything a client needs to reach the platform and the cache.

    Build one with :meth:`from_env`; arguments given there win over the environment.
    The repr never shows the client secret or the access token.
    """

    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    org_id: str | None = None
    sandbox: str = DEFAULT_SANDBOX
    scopes: str = DEFAULT_SCOPES
    access_token: str | None = field(default=None, repr=False)
    platform_url: str = DEFAULT_PLATFORM_URL
    ims_url: str = DEFAULT_IMS_URL
    cache_dir: Path = field(default_factory=default_cache_dir)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``), then apply overrides.

        Overrides that are ``None`` are ignored, so callers can pass optional arguments
        straight through.

        Raises:
            ConfigurationError: An override names no setting, or a value is malformed.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if raw:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "cache_dir" in values:
            values["cache_dir"] = Path(values["cache_dir"]).expanduser()
        settings = cls(**values)
        settings.validate_urls()
        return settings

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the non-``None`` overrides applied and validated."""
        copy = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        copy.validate_urls()
        return copy

    @property
    def platform_base(self) -> str:
        """The platform URL without a trailing slash."""
        return self.platform_url.rstrip("/")

    def validate_urls(self) -> None:
        """Check both endpoint URLs.

        Plain ``http://`` is accepted only for a loopback host (the emulator), so a
        typo cannot send a token in clear text across a network.

        Raises:
            ConfigurationError: A URL is malformed or insecure; the message names the
                variable to fix.
        """
        for name in ("platform_url", "ims_url"):
            url = getattr(self, name)
            var = ENV_VARS[name]
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ConfigurationError(
                    f"{var} must be an absolute http(s) URL such as "
                    f"{DEFAULT_PLATFORM_URL if name == 'platform_url' else DEFAULT_IMS_URL}; "
                    f"got {url!r}"
                )
            if parts.scheme == "http" and not _is_loopback(parts.hostname):
                raise ConfigurationError(
                    f"{var} uses plain http:// for {parts.hostname!r}; only loopback hosts "
                    f"(the local emulator) may use http. Use https://{parts.netloc} instead."
                )

    def require_credentials(self) -> None:
        """Check that the settings can authenticate.

        Raises:
            ConfigurationError: A needed setting is missing; the message names the
                variable (and the matching ``Client`` argument).
        """
        needed = ["client_id", "org_id"]
        if not self.access_token:
            needed.append("client_secret")
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            names = ", ".join(f"{ENV_VARS[n]} (or Client({n}=...))" for n in missing)
            raise ConfigurationError(
                f"missing setting: {names}. Set the environment variable, or pass "
                f"AEP_ACCESS_TOKEN instead of the client secret to use a ready token."
            )
        if not self.sandbox or self.sandbox != self.sandbox.lower():
            raise ConfigurationError(
                f"{ENV_VARS['sandbox']} must be the all-lowercase sandbox name such as "
                f"'prod'; got {self.sandbox!r}"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
