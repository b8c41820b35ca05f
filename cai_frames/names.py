"""Checks that keep server-given names from ever acting as paths.

Dataset IDs, batch IDs and file names all come from the platform and become folder and
file names in the cache. They are opaque strings (the platform's own examples hold IDs
that are not valid hex), so their format is never validated; what is refused is anything
that could step outside the folder it is meant for.
"""

from __future__ import annotations

import re

from .errors import ConfigurationError, UnsafeFileNameError

# Control characters (NUL included), both slashes, and a Windows drive or stream colon.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\:]")
_MAX_NAME_BYTES = 255


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a single, plain path component."""
    return (
        bool(name)
        and name not in (".", "..")
        and not _FORBIDDEN.search(name)
        and name == name.strip()
        and len(name.encode("utf-8", "surrogatepass")) <= _MAX_NAME_BYTES
    )


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain file name, else refuse it.

    Raises:
        UnsafeFileNameError: ``name`` holds a slash, a backslash, a NUL or another
            control character, a colon, surrounding spaces, or is empty, ``.`` or ``..``.
    """
    if not isinstance(name, str) or not is_plain_name(name):
        raise UnsafeFileNameError(
            f"refusing server file name {name!r}: it is not a plain file name, so it is "
            "never used as a path. Nothing was written for it; report the batch to the "
            "dataset's owner."
        )
    return name


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it can be a cache folder name, else raise a clear error.

    Args:
        value: A dataset ID, batch ID or sandbox name.
        what: What the value is, for the message (``"dataset ID"``).

    Raises:
        ConfigurationError: ``value`` is empty or could act as a path.
    """
    if not isinstance(value, str) or not is_plain_name(value):
        raise ConfigurationError(
            f"{what} {value!r} cannot be used: it must be a non-empty name without "
            "slashes, colons or control characters. Copy the ID from the platform again."
        )
    return value
