"""The HTTP session every platform call goes through: headers, token, retries, errors.

:class:`PlatformSession` wraps one ``requests.Session`` and adds, on every call, the four
headers the platform wants (``Authorization``, ``x-api-key``, ``x-gw-ims-org-id``,
``x-sandbox-name``). Transient answers (429 and 5xx, honouring ``Retry-After``) and
dropped connections are retried inside urllib3 with capped exponential backoff and
jitter; a 401 makes the session fetch a new token and repeat the request once. Whatever
is still an error after that becomes one of :mod:`cai_frames.errors`, with a URL that
went through :func:`cai_frames.redaction.redact_url` and without any secret.

Logging: one INFO line per request (method, URL, status, time), a WARNING per retry,
and DEBUG for headers, which pass through :func:`cai_frames.redaction.redact_headers`.
The WARNING per retry is ours (:class:`LoggingRetry`, with a redacted URL): urllib3's
own ``Retrying (...) after connection broken`` warning for the same retry is dropped by
a filter on its ``urllib3.connectionpool`` logger, and only for our retry policy.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Collection, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .auth import TokenProvider
from .errors import ApiError, AuthenticationError, ConfigurationError, NotFoundError, TransportError
from .redaction import redact_headers, redact_url, scrub
from .settings import ENV_VARS, Settings

if TYPE_CHECKING:
    from typing_extensions import Self
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

logger = logging.getLogger(__name__)


def _package_version() -> str:
    try:
        return importlib.metadata.version("cai-frames")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"cai-frames/{_package_version()}"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_METHODS = frozenset({"GET", "HEAD"})
DEFAULT_POOL_SIZE = 16
DEFAULT_TIMEOUT = (10.0, 60.0)

# Gateway error codes whose fix is a specific setting (see the platform troubleshooting
# guide); the hint is appended to the error message.
GATEWAY_HINTS = {
    "403000": "check AEP_CLIENT_ID, which is sent as x-api-key",
    "403003": "check AEP_CLIENT_ID, which is sent as x-api-key",
    "400003": "check AEP_ORG_ID, which is sent as x-gw-ims-org-id",
    "403025": "check AEP_ORG_ID and that the credential's project includes the "
    "Experience Platform API",
    "403027": "check AEP_ORG_ID and that the credential's project includes the "
    "Experience Platform API",
}
FORBIDDEN_HINT = (
    "check that the credential's product profile grants access to sandbox "
    "AEP_SANDBOX_NAME and to the dataset"
)


class LoggingRetry(Retry):
    """urllib3's :class:`~urllib3.util.retry.Retry` that logs each retry at WARNING.

    urllib3 warns about a retry after a dropped connection itself; that warning is
    dropped (:class:`_OwnRetryFilter`) so each retry is logged once.
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        if response is not None and response.status:
            cause = f"HTTP {response.status}"
        else:
            cause = type(error).__name__ if error else "an unknown error"
        left = new.total if isinstance(new.total, int) else "unlimited"
        logger.warning(
            "retrying %s %s after %s (retry %d, %s left)",
            method,
            redact_url(url or ""),
            cause,
            len(new.history),
            left,
        )
        return new


class _OwnRetryFilter(logging.Filter):
    """Drops urllib3's warning about a retry that :class:`LoggingRetry` logged already."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (
            str(record.msg).startswith("Retrying (") and args and isinstance(args[0], LoggingRetry)
        )


logging.getLogger("urllib3.connectionpool").addFilter(_OwnRetryFilter())


def build_retry(
    *,
    total: int = 5,
    backoff_factor: float = 0.5,
    backoff_jitter: float = 0.5,
    backoff_max: float = 30.0,
    retry_after_max: int = 60,
    allowed_methods: Collection[str] = RETRY_METHODS,
) -> Retry:
    """The retry policy: transient statuses and dropped connections, backoff with jitter.

    The caps on the backoff and on a server's ``Retry-After`` bound the time a request
    can spend retrying (about ``total * max(backoff_max, retry_after_max)``).

    Args:
        total: Retries after the first attempt.
        backoff_factor: Base of the exponential backoff, in seconds.
        backoff_jitter: Up to this many random seconds added to each backoff.
        backoff_max: Longest backoff, in seconds.
        retry_after_max: Longest ``Retry-After`` wait honoured, in seconds.
        allowed_methods: Methods that may be repeated; add ``POST`` only for a route
            whose POST is safe to repeat.
    """
    return LoggingRetry(
        total=total,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_jitter,
        backoff_max=backoff_max,
        retry_after_max=retry_after_max,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset(m.upper() for m in allowed_methods),
        respect_retry_after_header=True,
        raise_on_status=False,
    )


class PlatformSession:
    """Sends authenticated requests to the platform and turns failures into errors.

    Args:
        settings: Credentials and endpoints.
        tokens: Where tokens come from; default a :class:`~cai_frames.auth.TokenProvider`
            over this session.
        retry: Retry policy for platform calls; default :func:`build_retry` with
            ``retry_methods``. Token requests to IMS follow the same policy, with POST
            allowed.
        retry_methods: Methods retried by the default policy.
        pool_size: Connections kept per host; at least the download concurrency.
        timeout: Default ``(connect, read)`` timeout in seconds.
        session: The ``requests.Session`` to wrap; default a new one.

    Example:
        >>> with PlatformSession(Settings.from_env()) as session:  # doctest: +SKIP
        ...     batches = session.get_json("/data/foundation/catalog/batches")
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tokens: TokenProvider | None = None,
        retry: Retry | None = None,
        retry_methods: Collection[str] = RETRY_METHODS,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.requests = session if session is not None else requests.Session()
        self.requests.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(
            max_retries=retry or build_retry(allowed_methods=retry_methods),
            pool_connections=pool_size,
            pool_maxsize=pool_size,
        )
        self.requests.mount("https://", adapter)
        self.requests.mount("http://", adapter)
        # A token grant is safe to repeat, so the IMS endpoint alone retries POST.
        ims_retry = (
            retry.new(allowed_methods=frozenset({"POST"}))
            if retry is not None
            else build_retry(allowed_methods={"POST"})
        )
        ims_adapter = HTTPAdapter(max_retries=ims_retry)
        self.requests.mount(settings.ims_url, ims_adapter)
        self.tokens = tokens or TokenProvider(settings, self.requests, timeout=timeout)
        self._origin = _origin(settings.platform_base)

    def url_for(self, url: str) -> str:
        """Return the absolute URL for a platform path, or ``url`` itself if absolute.

        Absolute URLs (such as ``_links`` hrefs) are used verbatim, ``:443`` included,
        but only on the platform's own host, because the token goes with them.

        Raises:
            ConfigurationError: ``url`` points at another host than ``AEP_PLATFORM_URL``.
        """
        if urlsplit(url).scheme:
            if _origin(url) != self._origin:
                raise ConfigurationError(
                    f"the platform linked to {redact_url(url)}, outside "
                    f"{ENV_VARS['platform_url']} ({self.settings.platform_base}); the token "
                    f"is only sent to that host. If the platform really serves from there, "
                    f"set {ENV_VARS['platform_url']} to it."
                )
            return url
        return f"{self.settings.platform_base}/{url.lstrip('/')}"

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
    ) -> requests.Response:
        """Send one request, refreshing the token once on 401.

        Args:
            method: HTTP method.
            url: A platform path (joined to ``AEP_PLATFORM_URL``) or an absolute URL.
            params: Query parameters.
            headers: Extra headers, such as ``Range``.
            json: A JSON body (sent with ``Content-Type: application/json``).
            stream: Leave the body unread; the caller iterates and closes the response.
            timeout: ``(connect, read)`` timeout; default the session's.

        Returns:
            The response, with a status below 400.

        Raises:
            NotFoundError: The platform answered 404.
            ApiError: The platform answered another error status, retries spent.
            AuthenticationError: The token was refused, and a new one too.
            TransportError: No answer (connection refused, reset, timed out).
        """
        full = self.url_for(url)
        call = _Call(method.upper(), full, params, headers, json, stream, timeout or self.timeout)
        token = self.tokens.token()
        response = self._send(call, token)
        if response.status_code == 401:
            response = self._resend_with_new_token(call, token, response)
        if response.status_code >= 400:
            raise self._error(call, response)
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        """``request("GET", url, ...)``."""
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> requests.Response:
        """``request("HEAD", url, ...)``."""
        return self.request("HEAD", url, **kwargs)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``url`` and return its JSON body.

        Raises:
            ApiError: The body is not JSON (also every error :meth:`request` raises).
        """
        response = self.request("GET", url, params=params)
        try:
            return response.json()
        except ValueError:
            sent = response.request.headers.get("Authorization", "")
            snippet = scrub(self._scrub(response.text[:80]), [sent.removeprefix("Bearer ")])
            redacted = redact_url(response.url or self.url_for(url))
            raise ApiError(
                f"GET {redacted} answered {response.status_code} with a body that is not "
                f"JSON (Content-Type {response.headers.get('Content-Type')!r}, starting "
                f"{snippet!r}); check that {ENV_VARS['platform_url']} is the platform "
                f"gateway.",
                status=response.status_code,
                url=redacted,
            ) from None

    def _send(self, call: _Call, token: str) -> requests.Response:
        """One round trip (urllib3 retries included), logged and with errors wrapped."""
        call.tokens.append(token)
        headers = self._headers(token, call.headers)
        redacted = redact_url(call.url)
        logger.debug("%s %s headers=%s", call.method, redacted, redact_headers(headers))
        started = time.monotonic()
        try:
            response = self.requests.request(
                call.method,
                call.url,
                params=call.params,
                headers=headers,
                json=call.json,
                stream=call.stream,
                timeout=call.timeout,
            )
        except requests.exceptions.SSLError as exc:
            raise TransportError(
                f"{call.method} {redacted} failed: the server did not speak TLS as expected "
                f"({self._scrub(str(exc), call)}). Check the scheme (https:// or http://) of "
                f"{ENV_VARS['platform_url']} and {ENV_VARS['ims_url']}: a plain-http server "
                f"such as the emulator needs http://."
            ) from exc
        except requests.RequestException as exc:
            raise TransportError(
                f"{call.method} {redacted} got no answer: {type(exc).__name__}: "
                f"{self._scrub(str(exc), call)}. Check the network and "
                f"{ENV_VARS['platform_url']}; retries were already made."
            ) from exc
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info(
            "%s %s -> %d (%.0f ms%s)",
            call.method,
            redact_url(response.url or call.url),
            response.status_code,
            elapsed_ms,
            _attempts_note(response),
        )
        logger.debug("response headers=%s", redact_headers(dict(response.headers)))
        return response

    def _resend_with_new_token(
        self, call: _Call, token: str, refused: requests.Response
    ) -> requests.Response:
        """Handle a 401: fetch a new token once and repeat; refuse a second 401."""
        code, message = _server_detail(refused)
        refused.close()
        reason = self._scrub(_reason(code, message), call)
        self.tokens.invalidate(token)
        if not self.tokens.can_renew:
            raise AuthenticationError(
                f"the platform refused the token in AEP_ACCESS_TOKEN for {call.method} "
                f"{redact_url(call.url)} ({reason}). Set a fresh AEP_ACCESS_TOKEN, or set "
                f"AEP_CLIENT_SECRET so tokens are fetched and renewed."
            )
        logger.warning(
            "%s %s -> 401 (%s); fetching a new token", call.method, redact_url(call.url), reason
        )
        response = self._send(call, self.tokens.token())
        if response.status_code != 401:
            return response
        code, message = _server_detail(response)
        response.close()
        raise AuthenticationError(
            f"the platform refused a freshly fetched token for {call.method} "
            f"{redact_url(call.url)} ({self._scrub(_reason(code, message), call)}). Check "
            f"AEP_CLIENT_ID and AEP_ORG_ID (the credential must belong to that org) and "
            f"that the credential's project includes the Experience Platform API."
        )

    def _error(self, call: _Call, response: requests.Response) -> ApiError:
        """The error for a final error status, with the server's own reason."""
        code, message = _server_detail(response)
        response.close()
        status = response.status_code
        url = redact_url(response.url or call.url)
        message = self._scrub(message, call) if message else None
        text = f"{call.method} {url} answered {status} {response.reason or ''}".rstrip()
        if code or message:
            text += f": {_reason(code, message)}"
        text += _attempts_note(response, prefix=" ")
        hint = GATEWAY_HINTS.get(code or "") or _status_hint(status)
        if hint:
            text += f"; {hint}"
        error_type = NotFoundError if status == 404 else ApiError
        return error_type(text, status=status, url=url, error_code=code, server_message=message)

    def platform_headers(self, token: str) -> dict[str, str]:
        """The four headers every platform call carries, for ``token``."""
        settings = self.settings
        return {
            "Authorization": f"Bearer {token}",
            "x-api-key": settings.client_id or "",
            "x-gw-ims-org-id": settings.org_id or "",
            "x-sandbox-name": settings.sandbox,
        }

    def _headers(self, token: str, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**self.platform_headers(token), **(extra or {})}

    def _scrub(self, text: str, call: _Call | None = None) -> str:
        """``text`` without the client secret or any token, in case a server echoed one."""
        tokens = call.tokens if call is not None else []
        return scrub(text, (self.settings.client_secret, self.settings.access_token, *tokens))

    def close(self) -> None:
        """Close the pooled connections."""
        self.requests.close()

    def __enter__(self) -> PlatformSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"PlatformSession(platform_url={redact_url(s.platform_base)!r}, "
            f"org_id={s.org_id!r}, sandbox={s.sandbox!r})"
        )


class _Call:
    """What is needed to send one request again after a token refresh."""

    __slots__ = ("method", "url", "params", "headers", "json", "stream", "timeout", "tokens")

    def __init__(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        json: Any,
        stream: bool,
        timeout: float | tuple[float, float],
    ) -> None:
        self.method = method
        self.url = url
        self.params = params
        self.headers = headers
        self.json = json
        self.stream = stream
        self.timeout = timeout
        # Every token sent for this call, so that an echo of one in an answer is removed.
        self.tokens: list[str] = []


def _server_detail(response: requests.Response) -> tuple[str | None, str | None]:
    """The ``(error_code, message)`` a platform error body carries, if any.

    Knows the gateway shape ``{"error_code", "message"}`` and the problem shape
    ``{"type", "status", "title", "detail"}``; any other body gives its first 200
    characters as the message. A body cut off by the network gives no detail.
    """
    try:
        body = response.json()
    except requests.RequestException:
        return None, None
    except ValueError:
        text = response.text.strip()[:200]
        return None, text or None
    if isinstance(body, dict):
        if "error_code" in body or "message" in body:
            code = body.get("error_code")
            return (str(code) if code is not None else None), _str_or_none(body.get("message"))
        if "title" in body or "detail" in body:
            parts = [str(body[k]) for k in ("title", "detail") if body.get(k)]
            return None, ": ".join(parts) or None
    return None, str(body)[:200]


def _status_hint(status: int) -> str:
    if status == 403:
        return FORBIDDEN_HINT
    if status in RETRY_STATUSES:
        return "the platform is busy or failing; try again later"
    return ""


def _reason(code: str | None, message: str | None) -> str:
    return " ".join(p for p in (code, message) if p) or "no reason given"


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _attempts_note(response: requests.Response, prefix: str = ", ") -> str:
    """``", after N attempts"`` when urllib3 retried the request, else ``""``."""
    retries = getattr(response.raw, "retries", None)
    history = getattr(retries, "history", ())
    if not history:
        return ""
    return f"{prefix}after {len(history) + 1} attempts"


def _origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` with the scheme's default port filled in."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default
