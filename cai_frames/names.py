"""Checks that keep server-given names from ever acting as paths.

Dataset IDs, batch IDs and file names all come from the platform and become folder and
file names in the cache. They are opaque strings (the platform's own examples hold IDs
that are not valid hex), so their format is never validated; what is refused is anything
that could step outside the folder it is meant for.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import ConfigurationError, UnsafeFileNameError

# Control characters (NUL included), both slashes, and a Windows drive or stream colon.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\:]")
_MAX_NAME_BYTES = 255

# Names Windows gives to devices whatever the extension, so they can never be files.
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(10)}
)


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a single, plain path component."""
    return (
        bool(name)
        and name not in (".", "..")
        and not _FORBIDDEN.search(name)
        and name == name.strip()
        and len(name.encode("utf-8", "surrogatepass")) <= _MAX_NAME_BYTES
    )


def check_file_name(name: object) -> str:
    """Return ``name`` if it is a plain file name, safe to join to a cache folder.

    A plain name is one path component (no slash, backslash, NUL or other control
    character, no ``:``, no surrounding spaces, not empty, ``.`` or ``..``, at most
    255 bytes) that also lands the same way on every file system: no invisible
    format character, no trailing dot (Windows drops it, so ``a.parquet.`` would
    overwrite ``a.parquet``), no Windows device name (``CON``, ``NUL.parquet``, ...).

    Raises:
        UnsafeFileNameError: ``name`` is not a string or not a plain file name; the
            message shows it.
    """
    if not isinstance(name, str):
        raise UnsafeFileNameError(
            f"the platform listed a file whose name is {name!r}, not a string; refusing "
            f"to download the batch."
        )
    problem = _name_problem(name)
    if problem:
        raise UnsafeFileNameError(
            f"refusing server file name {name!r}: it {problem}, so it is not a plain file "
            "name and is never used as a path. Nothing was written for it; report the "
            "batch to the dataset's owner."
        )
    return name


def _name_problem(name: str) -> str | None:
    """What keeps ``name`` from being a plain, portable file name, or ``None``."""
    if not is_plain_name(name):
        return "holds a separator, a control character or a colon, or is empty or too long"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        return "contains a control or invisible format character"
    if name.endswith("."):
        return "ends with a dot"
    if name.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        return "is a reserved device name"
    return None


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
