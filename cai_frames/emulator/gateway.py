"""The identity side of the emulator: IMS token issue and the gateway's header checks.

Tokens are random strings kept in memory with their expiry; nothing about them is
logged. The checks run in the order a request meets them at Adobe's gateway as far as
the troubleshooting guide lets one tell: the token, the API key, the organization, then
the sandbox. The bodies are the guide's own, codes as strings.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: (status, body) of each gateway refusal, as the troubleshooting guide prints them.
TOKEN_MISSING = (403, {"error_code": "403010", "message": "Oauth token is missing."})
TOKEN_INVALID = (401, {"error_code": "401013", "message": "Oauth token is not valid"})
API_KEY_MISSING = (403, {"error_code": "403000", "message": "Api Key is required"})
API_KEY_INVALID = (403, {"error_code": "403003", "message": "Api Key is invalid"})
HEADER_MISSING = (400, {"error_code": "400003", "message": "Missing header"})
ORG_INVALID = (403, {"error_code": "403025", "message": "Profile is not valid"})

Refusal = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Credentials:
    """What the emulator accepts: one OAuth server-to-server credential in one org."""

    client_id: str
    client_secret: str
    org_id: str
    sandbox: str


class Gateway:
    """Issues access tokens and checks the four platform headers of every call."""

    def __init__(
        self,
        credentials: Credentials,
        token_ttl: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Accept ``credentials``; tokens live ``token_ttl`` seconds by ``clock``."""
        self.credentials = credentials
        self.token_ttl = token_ttl
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._issued: list[str] = []
        self._lock = threading.Lock()

    def issue_token(self, fields: Mapping[str, str]) -> Refusal:
        """Answer an IMS v3 token request made with the form (or query) ``fields``."""
        for name in ("grant_type", "client_id", "client_secret", "scope"):
            if not fields.get(name):
                return 400, _ims_error("invalid_request", f"missing {name} parameter")
        if fields["grant_type"] != "client_credentials":
            return 400, _ims_error("unsupported_grant_type", "unsupported grant_type parameter")
        if not secrets.compare_digest(fields["client_id"], self.credentials.client_id):
            return 400, _ims_error("invalid_client", "invalid client_id parameter")
        if not secrets.compare_digest(fields["client_secret"], self.credentials.client_secret):
            return 401, _ims_error("invalid_client", "invalid client_secret parameter")
        token = "eyJ" + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = self._clock() + self.token_ttl
            self._issued.append(token)
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl}

    def expire_tokens(self) -> None:
        """Make every issued token invalid, as if a day had passed."""
        with self._lock:
            self._tokens.clear()

    def issued_tokens(self) -> list[str]:
        """Every token issued, expired ones included, oldest first."""
        with self._lock:
            return list(self._issued)

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and self._clock() < expiry

    def check(self, header: Callable[[str], str | None]) -> Refusal | None:
        """Return the gateway's refusal of a platform call, or ``None`` to let it through.

        Args:
            header: Looks a request header up by name (case-insensitively), like
                ``request.headers.get``.
        """
        authorization = header("Authorization")
        if not authorization:
            return TOKEN_MISSING
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not self._token_valid(token.strip()):
            return TOKEN_INVALID
        api_key = header("x-api-key")
        if not api_key:
            return API_KEY_MISSING
        if api_key != self.credentials.client_id:
            return API_KEY_INVALID
        org = header("x-gw-ims-org-id")
        if not org:
            return HEADER_MISSING
        if org != self.credentials.org_id:
            return ORG_INVALID
        if not header("x-sandbox-name"):
            return HEADER_MISSING
        return None


def _ims_error(error: str, description: str) -> dict[str, Any]:
    return {"error": error, "error_description": description}
