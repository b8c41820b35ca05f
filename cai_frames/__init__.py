"""cai_frames: Adobe Experience Platform Customer AI scores as DataFrames and SQL.

One call gets the latest successful score batch of a dataset, caches its parquet parts
locally keyed by batch ID, and merges them into one tidy pandas DataFrame::

    import cai_frames
    scores = cai_frames.load_scores("5cd9146b31dae914b75f654f")

or a DuckDB view over the cached parts::

    con = cai_frames.scores_view("5cd9146b31dae914b75f654f")
    con.sql("SELECT propensity_type, avg(score) FROM scores GROUP BY 1")

The package also holds a local emulator of the platform APIs it uses
(:mod:`cai_frames.emulator`), for demos and tests that need no network.
"""

from __future__ import annotations

__version__ = "0.1.0"

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import download_scores, load_scores, scores_view
    from .audience import audience_view, load_audience
    from .audience_export import ExportResult, export_audience
    from .cache import Cache, CacheEntry
    from .client import Client
    from .compare import RunComparison, compare_runs
    from .errors import (
        ApiError,
        AuthenticationError,
        CacheError,
        CacheMissError,
        CaiFramesError,
        ConfigurationError,
        DownloadError,
        ExportJobCancelled,
        ExportJobError,
        ExportJobFailed,
        ExportJobTimeout,
        HistoryError,
        NoBatchError,
        NotFoundError,
        SegmentNotFoundError,
        TransportError,
        UnsafeFileNameError,
    )
    from .history import (
        backfill_runs,
        list_runs,
        load_score_history,
        scores_history_view,
    )
    from .settings import Settings

# Public names and the module each lives in. They are imported on first use, so that
# ``import cai_frames.emulator`` or the CLI's ``--help`` does not pay for pandas and DuckDB.
_EXPORTS = {
    "download_scores": "api",
    "load_scores": "api",
    "scores_view": "api",
    "Cache": "cache",
    "CacheEntry": "cache",
    "Client": "client",
    **{name: "audience" for name in ("audience_view", "load_audience")},
    "ExportResult": "audience_export",
    "export_audience": "audience_export",
    **{
        name: "history"
        for name in (
            "backfill_runs",
            "list_runs",
            "load_score_history",
            "scores_history_view",
        )
    },
    "RunComparison": "compare",
    "compare_runs": "compare",
    "Settings": "settings",
    **{
        name: "errors"
        for name in (
            "ApiError",
            "AuthenticationError",
            "CacheError",
            "CacheMissError",
            "CaiFramesError",
            "ConfigurationError",
            "ExportJobCancelled",
            "ExportJobError",
            "ExportJobFailed",
            "ExportJobTimeout",
            "SegmentNotFoundError",
            "DownloadError",
            "HistoryError",
            "NoBatchError",
            "NotFoundError",
            "TransportError",
            "UnsafeFileNameError",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cai_frames' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "ApiError",
    "AuthenticationError",
    "Cache",
    "CacheEntry",
    "CacheError",
    "CacheMissError",
    "CaiFramesError",
    "Client",
    "ConfigurationError",
    "DownloadError",
    "ExportJobCancelled",
    "ExportJobError",
    "ExportJobFailed",
    "ExportJobTimeout",
    "ExportResult",
    "HistoryError",
    "NoBatchError",
    "NotFoundError",
    "RunComparison",
    "SegmentNotFoundError",
    "Settings",
    "TransportError",
    "UnsafeFileNameError",
    "__version__",
    "audience_view",
    "backfill_runs",
    "compare_runs",
    "download_scores",
    "export_audience",
    "list_runs",
    "load_audience",
    "load_score_history",
    "load_scores",
    "scores_history_view",
    "scores_view",
]
