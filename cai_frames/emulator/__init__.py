"""A local emulator of the AEP APIs behind Customer AI score downloads.

It serves the IMS token endpoint and the Catalog and Data Access endpoints with the
documented shapes and quirks, over real HTTP on loopback, with generated Customer AI
score parts whose true values it knows. The modules follow the flow of a request:

- :mod:`~cai_frames.emulator.spec`: what is served (datasets, runs, platform IDs);
- :mod:`~cai_frames.emulator.generator`: the score values, deterministic per part;
- :mod:`~cai_frames.emulator.writer`: Spark-style parquet parts and marker files;
- :mod:`~cai_frames.emulator.truth`: the tidy rows each batch should load as;
- :mod:`~cai_frames.emulator.state`: datasets, batches and files as the platform lists them;
- :mod:`~cai_frames.emulator.gateway`: tokens and the gateway's header checks;
- :mod:`~cai_frames.emulator.app`: the werkzeug routes;
- :mod:`~cai_frames.emulator.server`: :class:`Emulator`, the threaded server.

Example:
    >>> from cai_frames.emulator import Emulator
    >>> with Emulator() as emu:  # doctest: +SKIP
    ...     print(emu.platform_url, emu.dataset_ids)
"""

from cai_frames.emulator.app import RecordedRequest
from cai_frames.emulator.server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_ORG_ID,
    Emulator,
)
from cai_frames.emulator.spec import DatasetSpec, RunIdentity, default_specs, run_identity
from cai_frames.emulator.truth import truth_frame, truth_table
from cai_frames.emulator.writer import GeneratedBatch, generate_batch

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_ORG_ID",
    "DatasetSpec",
    "Emulator",
    "GeneratedBatch",
    "RecordedRequest",
    "RunIdentity",
    "default_specs",
    "generate_batch",
    "run_identity",
    "truth_frame",
    "truth_table",
]
