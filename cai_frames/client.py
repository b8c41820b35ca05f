"""The entry point to the platform: settings, an authenticated session, catalog, source.

A :class:`Client` reads its settings when it is built (arguments win over the
environment), checks that they can authenticate, and wires the pieces together::

    Client
    ├── settings   Settings            from the environment and the arguments
    ├── session    PlatformSession     token, headers, retries, errors
    ├── catalog    Catalog             which batch to load
    └── source     DataAccessSource    which parts a batch holds, and their bytes

No request is made until something is asked for; the first one fetches the token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from urllib3.util.retry import Retry

from .catalog import Catalog
from .data_access import DataAccessSource
from .http import DEFAULT_POOL_SIZE, PlatformSession
from .redaction import redact_url
from .settings import Settings


class Client:
    """A connection to one sandbox of Adobe Experience Platform.

    Every argument left ``None`` is read from its environment variable (see
    :mod:`cai_frames.settings`); ``settings`` replaces the environment entirely, with
    the other arguments still applied on top.

    Args:
        client_id: OAuth Server-to-Server client ID (``AEP_CLIENT_ID``).
        client_secret: Its secret (``AEP_CLIENT_SECRET``).
        org_id: IMS organisation (``AEP_ORG_ID``).
        sandbox: Sandbox name (``AEP_SANDBOX_NAME``).
        scopes: Comma-separated scopes (``AEP_SCOPES``).
        access_token: A ready token (``AEP_ACCESS_TOKEN``).
        platform_url: Gateway base URL (``AEP_PLATFORM_URL``).
        ims_url: IMS token endpoint (``AEP_IMS_URL``).
        cache_dir: Cache folder (``CAI_FRAMES_CACHE_DIR``).
        settings: Ready settings to start from instead of the environment.
        concurrency: Parts downloaded at once; the connection pool is sized for it.
        timeout: ``(connect, read)`` timeout of each request, in seconds.
        retry: The retry policy of every request; default
            :func:`cai_frames.http.build_retry` (five retries, capped backoff with
            jitter, ``Retry-After`` honoured up to a minute).

    Raises:
        ConfigurationError: A needed setting is missing or malformed; the message names
            the environment variable.

    Example:
        >>> with Client(sandbox="prod") as client:  # doctest: +SKIP
        ...     batch = client.catalog.latest_batch("5cd9146b31dae914b75f654f")
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        org_id: str | None = None,
        sandbox: str | None = None,
        scopes: str | None = None,
        access_token: str | None = None,
        platform_url: str | None = None,
        ims_url: str | None = None,
        cache_dir: str | Path | None = None,
        settings: Settings | None = None,
        concurrency: int = 8,
        timeout: float | tuple[float, float] = (10, 60),
        retry: Retry | None = None,
    ) -> None:
        overrides: dict[str, Any] = {
            "client_id": client_id,
            "client_secret": client_secret,
            "org_id": org_id,
            "sandbox": sandbox,
            "scopes": scopes,
            "access_token": access_token,
            "platform_url": platform_url,
            "ims_url": ims_url,
            "cache_dir": Path(cache_dir).expanduser() if cache_dir is not None else None,
        }
        if settings is None:
            settings = Settings.from_env(**overrides)
        else:
            settings = settings.with_overrides(**overrides)
        settings.require_credentials()
        self.settings = settings
        self.concurrency = concurrency
        self.session = PlatformSession(
            settings, pool_size=max(DEFAULT_POOL_SIZE, concurrency), timeout=timeout, retry=retry
        )
        self.catalog = Catalog(self.session)
        self.source = DataAccessSource(self.session, catalog=self.catalog)

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"Client(platform_url={redact_url(s.platform_base)!r}, org_id={s.org_id!r}, "
            f"sandbox={s.sandbox!r}, client_id={s.client_id!r})"
        )


@contextmanager
def client_scope(client: Client | None, *, cache_dir: str | Path | None = None) -> Iterator[Client]:
    """Yield ``client``, or a client built from the environment and closed afterwards.

    Lets every public function take an optional ``client`` without leaking the
    connections of one it built itself.
    """
    if client is not None:
        yield client
        return
    built = Client(cache_dir=cache_dir)
    try:
        yield built
    finally:
        built.close()
