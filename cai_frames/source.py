"""Where parquet parts come from, kept apart from the cache and the loader.

A :class:`PartSource` knows three things: which batch of a dataset to take, which
parts that batch holds, and how to copy one part's bytes into a file. The downloader
(:mod:`cai_frames.download`) drives any source into the cache, and the loader only
ever reads the cache, so a new source (a dataset export to cloud storage, say) feeds
the same cache and the same loader without changing either.

Today's source is :class:`cai_frames.data_access.DataAccessSource`, the Catalog and
Data Access APIs over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, runtime_checkable


@dataclass(frozen=True)
class BatchInfo:
    """One batch of a dataset, as the catalog describes it.

    Attributes:
        dataset_id: The dataset the batch belongs to.
        batch_id: The data batch ID: the one Data Access serves and the cache key.
        catalog_id: The catalog's key for the batch; equal to ``batch_id`` in the newer
            layout, different in the older one that names the data batch in
            ``relatedObjects``.
        status: The catalog status, such as ``success``.
        created: Creation time in epoch milliseconds.
        record_count: Rows the producer reported, when it reported any.
        metadata: The catalog record as returned, kept in the cache manifest.
    """

    dataset_id: str
    batch_id: str
    catalog_id: str
    status: str
    created: int
    record_count: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class RemotePart:
    """One parquet part of a batch, as the source lists it.

    Attributes:
        name: The server's file name, already checked to be a plain file name.
        size: Size in bytes, as listed.
        file_id: The source's ID of the file or directory holding the part
            (``dataSetFileId`` for Data Access).
        url: Where the source fetches the bytes from.
    """

    name: str
    size: int
    file_id: str
    url: str


@runtime_checkable
class PartSource(Protocol):
    """What the downloader needs from a place that holds score batches."""

    def resolve_batch(self, dataset_id: str, batch_id: str | None = None) -> BatchInfo:
        """Return the latest successful batch of ``dataset_id``, or the given one.

        Raises:
            NoBatchError: The dataset has no successful batch.
            NotFoundError: The dataset or the given batch does not exist.
        """
        ...

    def list_parts(self, batch: BatchInfo) -> Iterable[RemotePart]:
        """Yield every parquet part of ``batch``, marker files left out.

        Raises:
            UnsafeFileNameError: A listed name is not a plain file name.
        """
        ...

    def fetch_part(
        self,
        part: RemotePart,
        out: BinaryIO,
        *,
        start: int = 0,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Write the bytes of ``part`` from offset ``start`` on to ``out``.

        Args:
            part: The part to fetch.
            out: A binary file, seekable, positioned at ``start``.
            start: The first byte wanted. A source that cannot start there rewinds
                and truncates ``out`` itself and writes the whole part.
            on_bytes: Called with the size of each chunk as it is written.

        Returns:
            The offset the written bytes began at (``start``, or 0 when the source
            could not resume).
        """
        ...
