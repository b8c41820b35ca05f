"""Plain-HTTP access to the emulator, for the tests that check the emulator itself.

Those tests talk to it with bare ``requests``, as any other client would, so that a bug
in the cai_frames client cannot hide one in the emulator.
"""

from __future__ import annotations

from typing import Any

import requests

from cai_frames.emulator import Emulator


def token_form(emu: Emulator, scope: str = "openid", **changes: Any) -> dict[str, Any]:
    """The IMS client_credentials form for the emulator's credentials, with ``changes``."""
    env = emu.env()
    form = {
        "grant_type": "client_credentials",
        "client_id": env["AEP_CLIENT_ID"],
        "client_secret": env["AEP_CLIENT_SECRET"],
        "scope": scope,
    }
    return {**form, **changes}


def fetch_token(emu: Emulator, scope: str = "openid") -> str:
    """A fresh access token from the emulator's IMS endpoint."""
    response = requests.post(emu.ims_url, data=token_form(emu, scope), timeout=10)
    response.raise_for_status()
    value: str = response.json()["access_token"]
    return value


def platform_headers(emu: Emulator, token: str | None = None) -> dict[str, str]:
    """The four headers every platform call carries, with a fresh token unless given one."""
    env = emu.env()
    return {
        "Authorization": f"Bearer {token if token is not None else fetch_token(emu)}",
        "x-api-key": env["AEP_CLIENT_ID"],
        "x-gw-ims-org-id": env["AEP_ORG_ID"],
        "x-sandbox-name": env["AEP_SANDBOX_NAME"],
    }
