"""One place that keeps secrets out of logs, error messages and reprs.

Logs and errors both pass URLs and header maps through these helpers, so a token
or a client secret cannot reach either by a path nobody thought of.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"

# Header names whose values are secrets; compared in lower case.
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie"})

# Query or form fields whose values are secrets; compared in lower case.
SECRET_FIELDS = frozenset(
    {"client_secret", "access_token", "token", "jwt_token", "code", "password", "signature"}
)


def redact_url(url: str) -> str:
    """Return ``url`` with user info and secret query values replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if k.lower() in SECRET_FIELDS else v) for k, v in pairs], safe="/:,"
        )
    else:
        query = ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``headers`` with secret values replaced by ``***``."""
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Return ``text`` with every occurrence of each non-empty secret replaced by ``***``.

    A last line of defence for text that came from elsewhere, such as a server's error
    body that echoes a request back.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
