"""Access tokens for the platform: fetched from IMS on first use, renewed before expiry.

The OAuth Server-to-Server grant has no refresh token: a new token is simply asked for
again with the same client ID and secret. :class:`TokenProvider` keeps the current token
in memory, hands it to every request, and asks IMS for a new one a little before the old
one expires, or at once after the platform refused it (:meth:`TokenProvider.invalidate`).
Download threads share one provider; a lock makes sure only one of them talks to IMS at a
time while the others wait for its answer.

A ready token (``AEP_ACCESS_TOKEN``) is used as given. It cannot be renewed unless a
client secret is also configured, in which case a refused ready token is replaced by a
fetched one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from .errors import ApiError, AuthenticationError, TransportError
from .redaction import redact_url, scrub
from .settings import ENV_VARS, Settings

logger = logging.getLogger(__name__)

# IMS v3 says tokens last 24 h and must be renewed daily; a longer lifetime can only be a
# unit mix-up (the retired JWT exchange reported milliseconds), so it is capped.
MAX_LIFETIME_S = 86_400.0

# When IMS gives no usable ``expires_in``, renewing hourly costs one cheap request an hour
# and never hands out an expired token.
FALLBACK_LIFETIME_S = 3_600.0

# Renew this long before expiry, or after 90 % of the lifetime for short-lived tokens, so
# a request started just before expiry does not arrive with a dead token.
RENEW_MARGIN_S = 300.0
RENEW_MARGIN_FRACTION = 0.1

Clock = Callable[[], float]


class TokenProvider:
    """Hands out a valid bearer token, fetching or renewing it when needed.

    Thread-safe: any number of threads may call :meth:`token` and :meth:`invalidate`.

    Args:
        settings: Credentials and the IMS URL.
        session: The ``requests.Session`` used for the token request.
        clock: Seconds from a monotonic clock; tests pass a fake one.
        timeout: ``(connect, read)`` timeout of the token request, in seconds.

    Example:
        >>> tokens = TokenProvider(settings, requests.Session())  # doctest: +SKIP
        >>> headers = {"Authorization": f"Bearer {tokens.token()}"}  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        session: requests.Session,
        *,
        clock: Clock = time.monotonic,
        timeout: float | tuple[float, float] = (10, 60),
    ) -> None:
        self._settings = settings
        self._session = session
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._token: str | None = settings.access_token or None
        self._static = self._token is not None
        # A ready token's lifetime is unknown: it is kept until the platform refuses it.
        self._renew_at = float("inf")
        self.fetch_count = 0

    @property
    def can_renew(self) -> bool:
        """Whether a refused token can be replaced (a client secret is configured)."""
        return bool(self._settings.client_secret)

    def token(self) -> str:
        """Return a token that is valid now, fetching a new one from IMS if needed.

        Raises:
            AuthenticationError: IMS refused the credentials, or a ready token was
                refused and there is no client secret to fetch a new one.
            ApiError: IMS answered with a server error.
            TransportError: IMS could not be reached.
        """
        with self._lock:
            if self._token is not None and self._clock() < self._renew_at:
                return self._token
            if not self.can_renew:
                raise AuthenticationError(
                    "the access token in AEP_ACCESS_TOKEN was refused (it may have expired) "
                    "and no AEP_CLIENT_SECRET is set to fetch a new one. Set a fresh "
                    "AEP_ACCESS_TOKEN, or set AEP_CLIENT_SECRET."
                )
            self._token, lifetime = self._fetch()
            self._static = False
            self._renew_at = self._clock() + lifetime - renew_margin(lifetime)
            return self._token

    def invalidate(self, stale: str | None = None) -> None:
        """Forget the current token so that the next :meth:`token` call fetches a new one.

        Args:
            stale: The token the platform refused. When another thread has already
                replaced it, nothing is forgotten, so that several threads refused at
                once cause a single new fetch.
        """
        with self._lock:
            if stale is not None and stale != self._token:
                return
            logger.debug("access token invalidated; the next request fetches a new one")
            self._token = None
            self._renew_at = float("-inf")

    def _fetch(self) -> tuple[str, float]:
        """Ask IMS for a token; return it with its lifetime in seconds."""
        settings = self._settings
        url = redact_url(settings.ims_url)
        form = {
            "grant_type": "client_credentials",
            "client_id": settings.client_id or "",
            "client_secret": settings.client_secret or "",
            "scope": settings.scopes,
        }
        started = time.monotonic()
        try:
            response = self._session.post(settings.ims_url, data=form, timeout=self._timeout)
        except requests.exceptions.SSLError as exc:
            raise TransportError(
                f"POST {url} failed: the server did not speak TLS as expected "
                f"({self._scrub(str(exc))}). Check the scheme (https:// or http://) of "
                f"{ENV_VARS['ims_url']}: a plain-http server such as the emulator needs http://."
            ) from exc
        except requests.RequestException as exc:
            raise TransportError(
                f"POST {url} failed: {self._scrub(str(exc))}. Check the network and "
                f"{ENV_VARS['ims_url']}."
            ) from exc
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info("POST %s -> %d (%.0f ms)", url, response.status_code, elapsed_ms)
        self.fetch_count += 1
        body = self._read_body(response, url)
        token, lifetime = self._parse_grant(body, url)
        logger.info("fetched an access token from IMS, valid for %.0f s", lifetime)
        return token, lifetime

    def _read_body(self, response: requests.Response, url: str) -> Any:
        """Return the JSON body of a token response, raising for any refusal."""
        status = response.status_code
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        detail = self._ims_detail(body, response.text)
        if status in (400, 401, 403):
            raise AuthenticationError(
                f"IMS at {url} refused the credentials (HTTP {status}{detail}). Check "
                f"AEP_CLIENT_ID and AEP_CLIENT_SECRET, and that AEP_SCOPES "
                f"({self._settings.scopes}) are granted to that credential."
            )
        if status >= 400:
            raise ApiError(
                f"IMS at {url} answered HTTP {status}{detail} when asked for a token; "
                f"try again later.",
                status=status,
                url=url,
                server_message=detail.lstrip(": ") or None,
            )
        return body

    def _parse_grant(self, body: Any, url: str) -> tuple[str, float]:
        """Pick the token and its lifetime out of a successful grant."""
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            if isinstance(body, dict):
                got = f"keys {sorted(body)}"
            else:
                got = "a body that is not a JSON object"
            raise AuthenticationError(
                f"IMS at {url} answered without an access_token (got {got}). Check that "
                f"{ENV_VARS['ims_url']} is the IMS v3 token endpoint, such as "
                f"https://ims-na1.adobelogin.com/ims/token/v3."
            )
        return token, token_lifetime(body.get("expires_in"))

    def _ims_detail(self, body: Any, text: str) -> str:
        """IMS's own reason for an answer, as ``": reason"``, secrets removed."""
        if isinstance(body, dict):
            parts = [str(body[k]) for k in ("error", "error_description") if body.get(k)]
            reason = " - ".join(parts)
        else:
            reason = text.strip()[:200]
        return f": {self._scrub(reason)}" if reason else ""

    def _scrub(self, text: str) -> str:
        return scrub(text, (self._settings.client_secret, self._settings.access_token))

    def __repr__(self) -> str:
        state = "static" if self._static else ("held" if self._token else "none")
        return (
            f"TokenProvider(client_id={self._settings.client_id!r}, "
            f"ims_url={redact_url(self._settings.ims_url)!r}, token={state})"
        )


def token_lifetime(expires_in: Any) -> float:
    """Seconds a token lives, from the grant's ``expires_in`` (IMS v3: seconds).

    A missing, non-numeric or non-positive value falls back to
    :data:`FALLBACK_LIFETIME_S`; a value past 24 h is capped at :data:`MAX_LIFETIME_S`.
    """
    if isinstance(expires_in, bool):
        return FALLBACK_LIFETIME_S
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return FALLBACK_LIFETIME_S
    if not seconds > 0:
        return FALLBACK_LIFETIME_S
    return min(seconds, MAX_LIFETIME_S)


def renew_margin(lifetime: float) -> float:
    """How long before expiry a token of ``lifetime`` seconds is renewed."""
    return min(RENEW_MARGIN_S, RENEW_MARGIN_FRACTION * lifetime)
