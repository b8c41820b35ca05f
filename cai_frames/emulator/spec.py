"""What the emulator serves: dataset specs, their runs, and the platform IDs of each run.

A :class:`DatasetSpec` describes one Customer AI output dataset: how many rows each
scoring run writes, in how many parts, for which instances, in which catalog layout.
Everything the platform would show about a run (catalog key, data batch ID, Spark
transaction id, file IDs, times) is derived here from the spec and its seed alone, so
the same spec always yields the same IDs, and a data folder written once can be reused.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

Layout = Literal["old", "new"]
FileLayout = Literal["directory", "per_file"]
TimestampEncoding = Literal["micros", "int96"]

#: Statuses a run may have. Only ``success`` runs carry data.
RUN_STATUSES = ("success", "failed", "failure", "processing", "queued", "aborted")

#: Creation time of every dataset's first run (2026-01-05T02:00:00Z), fixed so that
#: IDs and timestamps do not depend on the day the emulator starts.
FIRST_RUN_MS = 1_767_578_400_000
WEEK_MS = 7 * 24 * 3600 * 1000

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class DatasetSpec:
    """One Customer AI score dataset and the scoring runs it holds.

    Attributes:
        dataset_id: Catalog ID of the dataset; derived from ``name`` and ``seed`` when
            empty.
        name: Dataset name, as Customer AI names its output datasets.
        rows: Profile records each successful run writes.
        parts: Parquet parts each successful run writes (row counts vary part to part).
        instances: Customer AI instance names, one struct each under ``CustomerAI``.
        tenant: Name of the tenant struct column, with its leading underscore.
        layout: ``"new"``: the catalog key is the data batch ID. ``"old"``: a 24-hex
            catalog key whose ``relatedObjects`` name a different data batch ID.
        runs: Scoring runs, a week apart, oldest first.
        status: One status for every run, or one per run, oldest first.
        markers: Write ``_SUCCESS``, ``_started_*``, ``_committed_*`` and ``.crc`` files.
        timestamp: ``"micros"`` for TIMESTAMP_MICROS, ``"int96"`` for Spark's legacy INT96.
        seed: Seed of the data and IDs; ``None`` takes the emulator's seed.
        drift: Vary the physical schema from part to part (see the writer).
        schema_drift: The same switch under a second name; either turns it on, and
            both read back the same.
        file_layout: ``"directory"``: one dataSetFileId lists every file of the run.
            ``"per_file"``: one dataSetFileId per file.
        published: Runs the catalog shows from the start, oldest first; ``None`` shows
            all of them. The others appear one at a time with
            :meth:`~cai_frames.emulator.Emulator.advance`, as weekly scoring would.
        delete_replaced: Model the platform deleting what a replacement replaced: once a
            successful run is published, every earlier successful run has status
            ``deleted`` in the catalog and Data Access answers 404 for its files. Off by
            default, so that every run stays downloadable.
    """

    dataset_id: str = ""
    name: str = "Customer AI Scores - Churn"
    rows: int = 5000
    parts: int = 8
    instances: tuple[str, ...] = ("churn",)
    tenant: str = "_acmecorp"
    layout: Layout = "new"
    runs: int = 1
    status: str | tuple[str, ...] = "success"
    markers: bool = True
    timestamp: TimestampEncoding = "micros"
    seed: int | None = None
    drift: bool = False
    file_layout: FileLayout = "directory"
    schema_drift: bool = False
    published: int | None = None
    delete_replaced: bool = False

    def __post_init__(self) -> None:
        """Check the spec and fill in a derived dataset ID."""
        self._check()
        drift = self.drift or self.schema_drift
        object.__setattr__(self, "drift", drift)
        object.__setattr__(self, "schema_drift", drift)
        if not self.dataset_id:
            digest = random.Random(f"dataset:{self.name}:{self.seed}").getrandbits(96)
            object.__setattr__(self, "dataset_id", f"{digest:024x}")

    def _check(self) -> None:
        if self.rows < 1 or self.parts < 1 or self.rows < self.parts:
            raise ValueError(
                f"DatasetSpec needs rows >= parts >= 1, got rows={self.rows}, "
                f"parts={self.parts}; lower parts or raise rows"
            )
        if self.runs < 1:
            raise ValueError(f"DatasetSpec needs runs >= 1, got {self.runs}")
        if self.published is not None and not 1 <= self.published <= self.runs:
            raise ValueError(
                f"DatasetSpec needs 1 <= published <= runs ({self.runs}), got {self.published}"
            )
        if not self.instances or len(set(self.instances)) != len(self.instances):
            raise ValueError(f"DatasetSpec needs distinct instance names, got {self.instances}")
        if not self.tenant.startswith("_"):
            raise ValueError(f"tenant must start with '_', got {self.tenant!r}; try '_acmecorp'")
        statuses = self.run_statuses()
        if len(statuses) != self.runs or any(s not in RUN_STATUSES for s in statuses):
            raise ValueError(
                f"status must be one of {RUN_STATUSES} or a tuple of {self.runs} of them, "
                f"got {self.status!r}"
            )

    def run_statuses(self) -> tuple[str, ...]:
        """Return the status of each run, oldest first."""
        if isinstance(self.status, str):
            return (self.status,) * self.runs
        return tuple(self.status)

    @property
    def data_seed(self) -> int:
        """The seed mixed with the dataset ID, so datasets with one seed still differ."""
        return ((self.seed or 0) << 32) ^ zlib.crc32(self.dataset_id.encode())

    @property
    def published_runs(self) -> int:
        """Runs the catalog shows from the start."""
        return self.runs if self.published is None else self.published

    def fingerprint(self) -> dict[str, Any]:
        """Return the fields that decide the generated bytes, for reuse checks."""
        fields = asdict(self)
        # When runs are shown changes what is served, never the bytes of a run.
        del fields["published"], fields["delete_replaced"]
        fields["instances"] = list(self.instances)
        fields["status"] = list(self.run_statuses())
        return fields


@dataclass(frozen=True)
class RunIdentity:
    """The platform's names for one run of a dataset.

    Attributes:
        run: Run index, 0 for the oldest.
        catalog_id: The catalog's key for the batch.
        batch_id: The data batch ID that Data Access serves.
        transaction_id: Spark's 19-digit ``tid`` in part names and marker names.
        job_uuid: The UUID Spark puts in every part name of the run.
        first_task: Task number of part 0; part ``i`` carries ``first_task + i``.
        file_id_base: UUID that dataSetFileIds of the run start with.
        created: Catalog creation time, epoch ms.
    """

    run: int
    catalog_id: str
    batch_id: str
    transaction_id: str
    job_uuid: str
    first_task: int
    file_id_base: str
    created: int

    def part_name(self, index: int) -> str:
        """Return the Spark file name of part ``index``."""
        task = self.first_task + index
        return (
            f"part-{index:05d}-tid-{self.transaction_id}-{self.job_uuid}-{task}-1-c000"
            ".snappy.parquet"
        )

    def file_id(self, index: int = 0) -> str:
        """Return the dataSetFileId of the ``index``-th file item (the directory is 0)."""
        return f"{self.file_id_base}-{index + 1}"


def run_identity(spec: DatasetSpec, run: int) -> RunIdentity:
    """Derive every platform ID of run ``run`` of ``spec``."""
    rnd = random.Random(f"run:{spec.data_seed}:{spec.dataset_id}:{run}")
    created = FIRST_RUN_MS + run * WEEK_MS + rnd.randrange(0, 900_000)
    ulid = _ulid(created, rnd)
    if spec.layout == "new":
        catalog_id = batch_id = ulid
    else:
        catalog_id = f"{rnd.getrandbits(96):024x}"
        batch_id = _uuid_v1_like(rnd)
    return RunIdentity(
        run=run,
        catalog_id=catalog_id,
        batch_id=batch_id,
        transaction_id=str(rnd.randrange(10**18, 9 * 10**18)),
        job_uuid=_uuid4_like(rnd),
        first_task=rnd.randrange(100, 900),
        file_id_base=_uuid4_like(rnd),
        created=created,
    )


def _ulid(ms: int, rnd: random.Random) -> str:
    """A 26-character ULID: 48 bits of time then 80 random bits, Crockford base32."""
    value = (ms << 80) | rnd.getrandbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _uuid4_like(rnd: random.Random) -> str:
    text = f"{rnd.getrandbits(128):032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-a{text[17:20]}-{text[20:]}"


def _uuid_v1_like(rnd: random.Random) -> str:
    """A time-based-looking UUID, as the older score batches carry in relatedObjects."""
    text = f"{rnd.getrandbits(128):032x}"
    return f"{text[:8]}-{text[8:12]}-11ea-{text[16:20]}-{text[20:]}"


def default_specs() -> dict[str, DatasetSpec]:
    """Return the demo datasets, keyed by a short name.

    ``churn`` is a new-layout dataset with three weekly runs; ``legacy`` uses the older
    layout whose newest run failed; ``multi`` holds two instances; ``failed`` has no
    successful batch at all.
    """
    return {
        "churn": DatasetSpec(
            dataset_id="6a1f3c2e9b7d4e0a5c8b2f41",
            name="Customer AI Scores - Churn",
            rows=20_000,
            parts=12,
            runs=3,
            instances=("churn_q3",),
        ),
        "legacy": DatasetSpec(
            dataset_id="5cd9146b31dae914b75f654f",
            name="Customer AI Scores - Legacy Churn",
            rows=4000,
            parts=4,
            runs=3,
            layout="old",
            status=("success", "success", "failed"),
            timestamp="int96",
        ),
        "multi": DatasetSpec(
            dataset_id="6a1f3c2e9b7d4e0a5c8b2f43",
            name="Customer AI Scores - Propensity",
            rows=6000,
            parts=6,
            runs=2,
            instances=("churn", "conversion"),
            tenant="_globexinc",
        ),
        "failed": DatasetSpec(
            dataset_id="6a1f3c2e9b7d4e0a5c8b2f44",
            name="Customer AI Scores - Not Ready",
            rows=100,
            parts=1,
            runs=2,
            status=("failed", "processing"),
        ),
    }
