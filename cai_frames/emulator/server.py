"""The :class:`Emulator`: generated data, the WSGI app and a threaded server on loopback."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from cai_frames.emulator.app import EmulatorApp, RecordedRequest, RequestLog
from cai_frames.emulator.audience import SegmentSpec, audience_truth
from cai_frames.emulator.faults import Faults
from cai_frames.emulator.gateway import Credentials, Gateway
from cai_frames.emulator.network import NetworkShape
from cai_frames.emulator.segmentation import ExportJobs, build_exports
from cai_frames.emulator.spec import DatasetSpec, default_specs
from cai_frames.emulator.state import Batch, Dataset, PlatformState
from cai_frames.emulator.truth import truth_frame, truth_table

logger = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "emulator-client"
#: Not a secret: the emulator's fixed default, so demos need no configuration.
DEFAULT_CLIENT_SECRET = "emulator-secret-not-for-production"
DEFAULT_ORG_ID = "EMULATOR0000000000000000@AdobeOrg"
IMS_PATH = "/ims/token/v3"


def _seeded(spec: DatasetSpec, seed: int) -> DatasetSpec:
    """``spec`` with the emulator's seed when it names none itself."""
    return spec if spec.seed is not None else dataclasses.replace(spec, seed=seed)


def _check_address(host: str, port: int) -> None:
    """Refuse an address off loopback (the credentials are fixed) or a port out of range.

    Raises:
        ValueError: ``host`` is not a loopback address, or ``port`` not in 0-65535.
    """
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"the emulator only serves loopback addresses (its credentials are fixed and "
            f"public), got host {host!r}; use 127.0.0.1, ::1 or localhost"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535 (0: any free one), got {port!r}")


class _QuietHandler(WSGIRequestHandler):
    """Request handler that logs through this module at DEBUG instead of printing."""

    protocol_version = "HTTP/1.1"

    def log(self, type: str, message: str, *args: Any) -> None:
        logger.debug(message, *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # A request line that could not be parsed (a TLS hello, garbage) is answered 400
        # before ``path`` is set, and werkzeug's attribute lookup raises for it.
        path = getattr(self, "path", None)
        if path is None:
            logger.debug("unparsable request %r -> %s", getattr(self, "requestline", ""), code)
            return
        logger.debug("served %s -> %s", path.split("?")[0], code)


class Emulator:
    """A local stand-in for the AEP APIs that Customer AI score downloads use.

    Serves IMS token issue, Catalog batches and datasets, and Data Access listings and
    file bytes over real HTTP on loopback, with generated Customer AI data whose true
    values it knows.

    Example:
        >>> with Emulator() as emu:  # doctest: +SKIP
        ...     os.environ.update(emu.env())
        ...     frame = load_scores(emu.dataset_id("churn"))
    """

    def __init__(
        self,
        datasets: list[DatasetSpec] | None = None,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        org_id: str = DEFAULT_ORG_ID,
        sandbox: str = "prod",
        token_ttl: int = 86399,
        data_dir: Path | str | None = None,
        faults: Faults | None = None,
        latency: float = 0.0,
        bandwidth: float | None = None,
    ) -> None:
        """Describe the emulator; nothing is generated or bound until :meth:`start`.

        Args:
            datasets: Datasets to serve; ``None`` serves the demo set of
                :func:`~cai_frames.emulator.spec.default_specs`.
            seed: Seed for every spec whose own ``seed`` is ``None``.
            host: Loopback address to bind (``127.0.0.1``, ``::1``, ``localhost``).
            port: Port to bind, 0 to 65535; 0 picks a free one.
            client_id: The accepted client ID (also the expected ``x-api-key``).
            client_secret: The accepted client secret.
            org_id: The accepted ``x-gw-ims-org-id``.
            sandbox: The sandbox that holds the data.
            token_ttl: Lifetime of issued tokens, seconds (IMS says 86399).
            data_dir: Folder for generated data, kept and reused across runs; ``None``
                uses a temporary folder removed on :meth:`stop`.
            faults: Fault switches to start with (see :mod:`cai_frames.emulator.faults`);
                change them at any time through :attr:`faults`.
            latency: Seconds before the first byte of every response, like a distant
                server (see :mod:`cai_frames.emulator.network`).
            bandwidth: Bytes per second each connection is paced to; ``None`` for no cap.

        Raises:
            ValueError: ``host`` is not a loopback address, ``port`` is out of range,
                ``latency`` is negative or ``bandwidth`` is not positive.
        """
        defaults = default_specs()
        specs = list(defaults.values()) if datasets is None else list(datasets)
        self._specs = [_seeded(spec, seed) for spec in specs]
        served = {spec.dataset_id for spec in specs}
        self._keys = {spec.name: spec.dataset_id for spec in specs}
        self._keys.update((k, s.dataset_id) for k, s in defaults.items() if s.dataset_id in served)
        self._keys.update((dataset_id, dataset_id) for dataset_id in served)
        _check_address(host, port)
        self._host, self._port = host, port
        credentials = Credentials(client_id, client_secret, org_id, sandbox)
        self.gateway = Gateway(credentials, token_ttl)
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._temp_dir: Path | None = None
        self._log = RequestLog()
        self._faults = faults or Faults()
        self._network = NetworkShape(latency, bandwidth)
        self._app: EmulatorApp | None = None
        self._state: PlatformState | None = None
        self._exports: ExportJobs | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Emulator:
        """Generate the data, bind the port and serve in a background thread."""
        server = self._bind()
        # A short poll interval lets stop() return promptly, which keeps test teardown fast.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="cai-frames-emulator", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called or the thread is interrupted.

        Starts serving in this thread when the emulator is not running yet; when it is
        (inside ``with``), waits for the background server instead, so Ctrl-C works.
        """
        thread = self._thread
        if thread is not None:
            while thread.is_alive():
                thread.join(0.2)
            return
        server = self._bind()
        try:
            server.serve_forever(0.05)
        finally:
            self._close()

    def _bind(self) -> BaseWSGIServer:
        if self._server is not None:
            raise RuntimeError("the emulator is already running; stop() it before starting again")
        if self._data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="cai-frames-emulator-"))
        root = self._data_dir or self._temp_dir
        assert root is not None
        self._state = PlatformState(self._specs, root)
        app = EmulatorApp(self._state, self.gateway, self._log)
        app.faults = self._faults
        app.network = self._network
        self._app = app
        self._exports = build_exports(
            self._state, root / "_exports", self.gateway.credentials.org_id
        )
        app.exports = self._exports
        self._server = make_server(
            self._host, self._port, app, threaded=True, request_handler=_QuietHandler
        )
        logger.info("emulator serving %d datasets at %s", len(self._specs), self.platform_url)
        return self._server

    def stop(self) -> None:
        """Stop serving and remove the temporary data folder (a ``data_dir`` is kept)."""
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._close()

    def _close(self) -> None:
        if self._server is not None:
            self._server.server_close()
        self._server, self._thread = None, None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    @property
    def platform_url(self) -> str:
        """Base URL of the platform APIs, like ``https://platform.adobe.io``."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; use it as a context manager")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._server.port}"

    @property
    def ims_url(self) -> str:
        """The IMS v3 token endpoint."""
        return f"{self.platform_url}{IMS_PATH}"

    def env(self) -> dict[str, str]:
        """Environment variables that point cai_frames at this emulator."""
        credentials = self.gateway.credentials
        return {
            "AEP_PLATFORM_URL": self.platform_url,
            "AEP_IMS_URL": self.ims_url,
            "AEP_CLIENT_ID": credentials.client_id,
            "AEP_CLIENT_SECRET": credentials.client_secret,
            "AEP_ORG_ID": credentials.org_id,
            "AEP_SANDBOX_NAME": credentials.sandbox,
        }

    @property
    def specs(self) -> list[DatasetSpec]:
        """The served dataset specs, seeds filled in."""
        return list(self._specs)

    @property
    def dataset_ids(self) -> list[str]:
        """IDs of the served datasets, in spec order."""
        return [spec.dataset_id for spec in self._specs]

    def dataset_id(self, key: str) -> str:
        """Return a served dataset's ID by its name, or its demo short name.

        The demo datasets answer to ``churn``, ``legacy``, ``multi`` and ``failed``
        whenever they are served; every dataset answers to its ``name`` and its ID.

        Raises:
            KeyError: No dataset is known by ``key``.
        """
        if key not in self._keys:
            raise KeyError(f"no dataset called {key!r}; known: {sorted(self._keys)}")
        return self._keys[key]

    def spec(self, dataset_id: str) -> DatasetSpec:
        """Return the spec of a served dataset."""
        return self._dataset(dataset_id).spec

    def batches(self, dataset_id: str) -> list[dict[str, Any]]:
        """The dataset's catalog records, newest first, each with its key as ``_key``.

        ``_key`` is the catalog key (not part of the platform record); the data batch
        ID is the key in the new layout and ``relatedObjects[type=batch].id`` in the old.
        """
        org = self.gateway.credentials.org_id
        batches = reversed(self._dataset(dataset_id).batches)
        return [{"_key": b.catalog_id, **b.record(org)} for b in batches]

    def batch_ids(self, dataset_id: str) -> list[str]:
        """Data batch IDs (the ones Data Access serves) of the dataset, newest first."""
        return [b.batch_id for b in reversed(self._dataset(dataset_id).batches)]

    def latest_batch_id(self, dataset_id: str) -> str | None:
        """Data batch ID of the newest successful batch, or ``None`` when there is none."""
        done = [b for b in self._dataset(dataset_id).batches if b.status == "success"]
        return done[-1].batch_id if done else None

    def advance(self, dataset_id: str) -> str:
        """Publish the dataset's next scoring run, a week after the one before.

        The new batch names the previous one in ``replay.predecessors`` (newer layout);
        with the spec's ``delete_replaced`` the earlier successful runs are deleted.

        Returns:
            The new run's data batch ID.

        Raises:
            KeyError: The dataset is not served.
            ValueError: Every run of the spec is published already.
        """
        self._dataset(dataset_id)
        return self._require_state().publish(dataset_id).batch_id

    def parts(self, dataset_id: str, batch_id: str | None = None) -> list[Path]:
        """Local paths of a batch's parquet parts, in file-name order."""
        batch = self._batch(dataset_id, batch_id)
        names = [e for f in batch.files for e in f.entries if e.name.endswith(".parquet")]
        return sorted((e.path for e in names), key=lambda p: p.name)

    def truth(self, dataset_id: str, batch_id: str | None = None) -> pd.DataFrame:
        """The tidy rows the batch should load as (see :mod:`cai_frames.emulator.truth`).

        A deleted (replaced) batch keeps the truth of what it held.

        Args:
            dataset_id: A served dataset.
            batch_id: Data batch ID or catalog key; ``None`` takes the newest successful.

        Raises:
            KeyError: Unknown dataset or batch.
            ValueError: The batch did not succeed, so it holds no data.
        """
        batch = self._batch(dataset_id, batch_id)
        return truth_frame(batch.spec, batch.identity.run)

    def truth_table(self, dataset_id: str, batch_id: str | None = None) -> pa.Table:
        """Like :meth:`truth`, as an arrow table with the tidy arrow types."""
        batch = self._batch(dataset_id, batch_id)
        return truth_table(batch.spec, batch.identity.run)

    @property
    def exports(self) -> ExportJobs:
        """The export jobs and their switches (see :mod:`cai_frames.emulator.segmentation`)."""
        if self._exports is None:
            raise RuntimeError("the emulator has not started; use it as a context manager")
        return self._exports

    def segments(self) -> list[SegmentSpec]:
        """The segments audience exports can name, over the first scored dataset's profiles."""
        population = self.exports.population
        return [] if population is None else list(population.segments.values())

    def audience_truth(
        self, segment_id: str, fields: list[str] | str | None = None
    ) -> pd.DataFrame:
        """The tidy rows an export of ``segment_id`` with ``fields`` should load as.

        ``fields`` is a list or one comma-separated string, as ``export_audience`` takes
        it. See :func:`cai_frames.emulator.audience.audience_truth` for the columns (the
        tidy audience's, ``segmentMembership`` aside); rows in no set order.

        Raises:
            KeyError: No such segment.
        """
        population = self.exports.population
        if population is None or segment_id not in population.segments:
            raise KeyError(
                f"no segment {segment_id!r}; known: {[s.segment_id for s in self.segments()]}"
            )
        return audience_truth(population, segment_id, fields)

    @property
    def network(self) -> NetworkShape:
        """The latency and bandwidth every response is shaped to."""
        return self._network

    @property
    def faults(self) -> Faults:
        """The fault switches in force; assign a new :class:`Faults` to change them."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults | None) -> None:
        self._faults = faults or Faults()
        if self._app is not None:
            self._app.faults = self._faults

    def issued_tokens(self) -> list[str]:
        """Every access token issued so far, for tests that check none of them leaks."""
        return self.gateway.issued_tokens()

    @property
    def requests(self) -> list[RecordedRequest]:
        """``(method, path_with_query, status)`` of every request served, in order."""
        return self._log.snapshot()

    def reset_requests(self) -> None:
        """Forget the requests served so far."""
        self._log.clear()

    def _dataset(self, dataset_id: str) -> Dataset:
        state = self._require_state()
        if dataset_id not in state.datasets:
            raise KeyError(f"dataset {dataset_id!r} is not served; known: {self.dataset_ids}")
        return state.datasets[dataset_id]

    def _batch(self, dataset_id: str, batch_id: str | None) -> Batch:
        batches = self._dataset(dataset_id).batches
        if batch_id is None:
            done = [b for b in batches if b.status == "success"]
            if not done:
                raise ValueError(f"dataset {dataset_id} has no successful batch")
            return done[-1]
        found = [b for b in batches if batch_id in (b.batch_id, b.catalog_id)]
        if not found:
            raise KeyError(f"batch {batch_id!r} is not in dataset {dataset_id}")
        if found[0].status not in ("success", "deleted"):
            raise ValueError(f"batch {batch_id} has status {found[0].status!r} and no data")
        return found[0]

    def _require_state(self) -> PlatformState:
        if self._state is None:
            raise RuntimeError("the emulator has not started; use it as a context manager")
        return self._state
