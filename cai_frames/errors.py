"""Every error cai_frames raises, in one tree.

::

    CaiFramesError
    ├── ConfigurationError (ValueError)      a setting is missing or malformed
    ├── AuthenticationError                  IMS refused the credentials, or the token was refused
    ├── ApiError                             the platform answered with an error status
    │   └── NotFoundError (LookupError)      the dataset, batch or file does not exist
    ├── TransportError (ConnectionError)     the request never got an answer (wraps requests)
    │   └── IncompleteBodyError              the connection broke while a body was streaming
    ├── NoBatchError (LookupError)           the dataset has no successful batch to load
    ├── UnsafeFileNameError (ValueError)     the server named a file that is not a plain name
    ├── DownloadError                        a part could not be fetched completely
    ├── PartReadError (OSError)              a part on disk is not readable parquet
    ├── SchemaError (ValueError)             the data does not have the shape asked for
    ├── ExportJobError                       an audience export job delivered no batch
    │   ├── ExportJobFailed                  the job ended FAILED (its errors are quoted)
    │   ├── ExportJobCancelled               the job was cancelled
    │   ├── ExportJobTimeout (TimeoutError)  the job did not end in time; resume with job_id
    │   └── SegmentNotFoundError (LookupError)   the platform knows no such segment
    ├── HistoryError (ValueError)            the runs asked for cannot be compared or pruned
    └── CacheError (OSError)                 the local cache cannot give what was asked
        └── CacheMissError (FileNotFoundError)   offline, and nothing complete is cached

Messages say what happened, the value involved and how to fix it. None of them ever
holds a token, a client secret or an Authorization header: URLs pass through
:func:`cai_frames.redaction.redact_url` before they are put in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CaiFramesError(Exception):
    """Root of every error raised by cai_frames."""


class ConfigurationError(CaiFramesError, ValueError):
    """A setting is missing or malformed; the message names the setting."""


class AuthenticationError(CaiFramesError):
    """IMS refused the credentials, or the platform refused the token twice."""


class ApiError(CaiFramesError):
    """The platform answered a request with an error status.

    Attributes:
        status: The HTTP status code.
        url: The request URL, with secrets removed.
        error_code: The gateway's ``error_code`` when the body carried one.
        server_message: The server's own message, when the body carried one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        url: str,
        error_code: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.error_code = error_code
        self.server_message = server_message


class NotFoundError(ApiError, LookupError):
    """The platform answered 404 for a dataset, batch or file."""


class TransportError(CaiFramesError, ConnectionError):
    """The request got no usable answer: connection refused, reset or timed out."""


class IncompleteBodyError(TransportError):
    """The connection broke while a part's body was streaming; the bytes received are kept,
    so the download resumes from there."""


class NoBatchError(CaiFramesError, LookupError):
    """The dataset has no successful batch (none yet, or only failed or processing ones)."""


class UnsafeFileNameError(CaiFramesError, ValueError):
    """A server-given file name is not a plain file name and is never used as a path."""


class DownloadError(CaiFramesError):
    """A part could not be fetched completely (wrong size, or not readable as parquet)."""


class PartReadError(CaiFramesError, OSError):
    """A part on disk is not readable parquet; the message names the file."""


class SchemaError(CaiFramesError, ValueError):
    """The data does not hold what was asked: no Customer AI scores, clashing column types
    across parts, an unknown column name, or a parquet feature that cannot be decoded."""


class ExportJobError(CaiFramesError):
    """An audience export job did not deliver a batch.

    Attributes:
        job_id: The export job's ID, or ``None`` when no job was started.
        status: The job's last status as the platform reported it, if any.
        job: The job record last read (empty when there is none).
        errors: The job's ``errors`` entries (``code``, ``msg``, ``callStack``).
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: int | str | None = None,
        status: str | None = None,
        job: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.job: Mapping[str, Any] = job or {}
        errors = self.job.get("errors")
        self.errors: list[Any] = list(errors) if isinstance(errors, list) else []


class ExportJobFailed(ExportJobError):
    """The export job ended ``FAILED``; the message quotes each error's code and msg."""


class ExportJobCancelled(ExportJobError):
    """The export job was cancelled (here or elsewhere) before it delivered its batch."""


class ExportJobTimeout(ExportJobError, TimeoutError):
    """The export job had not ended when the wait ran out; pass its ``job_id`` to resume."""


class SegmentNotFoundError(ExportJobError, LookupError):
    """The platform refused the export job because it knows no such segment."""


class HistoryError(CaiFramesError, ValueError):
    """The score history cannot do what was asked: fewer than two runs to compare, an
    instance to name among several, or a prune that would drop every run."""


class CacheError(CaiFramesError, OSError):
    """The local cache cannot give what was asked."""


class CacheMissError(CacheError, FileNotFoundError):
    """Offline mode was asked for, and no complete cache entry matches."""
