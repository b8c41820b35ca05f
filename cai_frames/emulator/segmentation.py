"""Audience exports: dataset creation and the Profile export-job API, as the emulator serves them.

Routes (mixed into :class:`cai_frames.emulator.app.EmulatorApp`)::

    POST   /data/foundation/catalog/dataSets      201, ["@/dataSets/{id}"], Location
    POST   /data/core/ups/export/jobs             200, the NEW job, X-Location
    GET    /data/core/ups/export/jobs             records, page, link.next (<ms>_<id> cursor)
    GET    /data/core/ups/export/jobs/{id}        the job; each GET moves it along
    DELETE /data/core/ups/export/jobs/{id}        marks it for cancelling

A job answers ``NEW`` for :attr:`ExportJobs.new_polls` GETs, ``PROCESSING`` for
:attr:`ExportJobs.processing_polls` more, then ends. On ``SUCCEEDED`` its batch (the
segment's members, projected to ``fields``, see :mod:`cai_frames.emulator.audience`) is
written as Spark-style parts and served by the Data Access routes under the batch ID the
job named from ``NEW`` on. Switches: :meth:`ExportJobs.fail` and :meth:`ExportJobs.cancel`
(per segment or per job), :attr:`ExportJobs.reference_case` (``dataSets`` or the segment
guides' ``datasets`` in the creation body) and :attr:`ExportJobs.cancel_status`.

Undocumented, and what the emulator does:

- **Unknown segment**: ``POST /export/jobs`` answers 404 with a ``{type, status, title,
  detail}`` body naming the segment; no job is made. A client must tell the user, and
  should say that a dataset it created for the export is left empty.
- **Cancelled jobs**: the export-job status enum has no cancelled state; after a DELETE
  the job answers ``CANCELLING`` once, then ``CANCELLED`` (the segment-job words).
- **DELETE**: the Segmentation guide shows 204 with a body, which HTTP cannot carry; the
  emulator answers 200 with that body (the spec's code), or 204 without one when
  :attr:`ExportJobs.cancel_status` is 204, as the Profile guide shows. A DELETE of an
  ended job answers 200 with ``status: false``.
- **Export batches in the Catalog**: not listed; only Data Access serves them, so a
  client must take the batch from the job.
- **Job list**: newest first, 100 records a page by default; ``status`` other than NEW,
  SUCCEEDED or FAILED is refused with 400.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from cai_frames.emulator.audience import Population, default_segments
from cai_frames.emulator.spec import DatasetSpec, RunIdentity
from cai_frames.emulator.state import Batch, Dataset, FileEntry, PlatformState, ServedFile
from cai_frames.emulator.writer import write_markers, write_part

CATALOG = "/data/foundation/catalog"
JOBS = "/data/core/ups/export/jobs"
PROFILE_UNION = "https://ns.adobe.com/xdm/context/profile__union"
PART_ROWS = 2500
LIST_STATUSES = ("NEW", "SUCCEEDED", "FAILED")
FIRST_JOB_ID = 11037
DEFAULT_ERRORS = (
    {
        "code": "0090000009",
        "msg": "Error writing profiles to output path",
        "callStack": "com.adobe.aep.unifiedprofile.common.logging.Logger",
    },
    {"code": "unknown", "msg": "Job aborted.", "callStack": "org.apache.spark.SparkException"},
)

SEGMENTATION_RULES = [
    Rule(f"{CATALOG}/dataSets", methods=["POST"], endpoint="create_dataset", strict_slashes=False),
    Rule(JOBS, methods=["GET", "POST"], endpoint="export_jobs", strict_slashes=False),
    Rule(f"{JOBS}/<int:job_id>", methods=["GET", "DELETE"], endpoint="export_job"),
]


@dataclass(frozen=True)
class TargetDataset(Dataset):
    """A dataset created through the Catalog API, on the Profile union schema."""

    created: int = 0

    def record(self, org_id: str) -> dict[str, Any]:
        """The catalog's dataset record."""
        spec, created = self.spec, self.created
        record: dict[str, Any] = {
            "name": spec.name,
            "imsOrg": org_id,
            "tags": {},
            "version": "1.0.0",
            "created": created,
            "updated": created,
            "createdClient": "cai-frames",
            "viewId": self.view_id,
            "files": f"@/dataSetFiles?dataSetId={spec.dataset_id}",
            "schema": "@/xdms/context/profile__union",
            "schemaRef": {"id": PROFILE_UNION, "contentType": _XED},
        }
        if self.batches:
            record["lastBatchId"] = self.batches[-1].batch_id
            record["lastBatchStatus"] = "success"
        return record


_XED = "application/vnd.adobe.xed+json;version=1"


@dataclass
class ExportJob:
    """One export job and where it has got to."""

    id: int
    request: dict[str, Any]
    segment_id: str
    dataset_id: str
    batch_id: str
    created: int
    request_id: str
    polls: int = 0
    cancelling: bool = False
    ended: str | None = None
    ended_at: int = 0
    exported: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


class ExportJobs:
    """The export jobs and created datasets of one emulator, with their switches.

    Args:
        state: The platform state the export batches are added to.
        folder: Where export batches are written.
        population: The profiles and segments exports draw from; ``None`` when no score
            dataset has a successful run (every segment is then unknown).
        org_id: The org the records name.
    """

    def __init__(
        self,
        state: PlatformState,
        folder: Path,
        population: Population | None,
        org_id: str,
    ) -> None:
        self.state = state
        self.folder = folder
        self.population = population
        self.org_id = org_id
        self.new_polls = 1
        self.processing_polls = 1
        self.reference_case = "dataSets"
        self.cancel_status = 200
        self._failures: dict[str | int, list[dict[str, Any]]] = {}
        self._cancels: set[str | int] = set()
        self._jobs: dict[int, ExportJob] = {}
        self._ids = itertools.count(FIRST_JOB_ID)
        self._lock = threading.Lock()

    def fail(
        self,
        *,
        segment_id: str | None = None,
        job_id: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        """Make jobs of ``segment_id`` (or job ``job_id``) end ``FAILED`` with ``errors``."""
        self._failures[_key(segment_id, job_id)] = list(errors or DEFAULT_ERRORS)

    def cancel(self, *, segment_id: str | None = None, job_id: int | None = None) -> None:
        """Make jobs of ``segment_id`` (or job ``job_id``) end ``CANCELLED``, as if a user
        cancelled them elsewhere."""
        self._cancels.add(_key(segment_id, job_id))

    def jobs(self) -> list[dict[str, Any]]:
        """Every job's record, oldest first, without moving any along."""
        with self._lock:
            return [self._record(job) for job in self._jobs.values()]

    def create_dataset(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        """``POST /dataSets``: a new empty dataset on the schema the body names."""
        if not isinstance(body, dict) or not isinstance(body.get("schemaRef"), dict):
            return 400, _problem(400, "the dataset needs a schemaRef {id, contentType}"), {}
        rnd = random.Random(f"dataset:{len(self.state.datasets)}:{body.get('name')}")
        dataset_id = f"{rnd.getrandbits(96):024x}"
        spec = DatasetSpec(dataset_id=dataset_id, name=str(body.get("name") or ""), rows=1, parts=1)
        view_id = f"{rnd.getrandbits(96):024x}"
        created = int(time.time() * 1000)
        self.state.datasets[dataset_id] = TargetDataset(spec, view_id, (), created)
        location = f"{CATALOG}/dataSets/{dataset_id}"
        return 201, [f"@/{self.reference_case}/{dataset_id}"], {"Location": location}

    def create_job(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        """``POST /export/jobs``: a NEW job, or 400/404 for a body it cannot run."""
        problem = _check_job(body)
        if problem:
            return 400, _problem(400, problem), {}
        segment_id = str(body["filter"]["segments"][0]["segmentId"])
        if self.population is None or segment_id not in self.population.segments:
            detail = f"Segment definition {segment_id} not found in namespace ups"
            return 404, _problem(404, detail), {}
        dataset_id = str(body["destination"]["datasetId"])
        if dataset_id not in self.state.datasets:
            return 404, _problem(404, f"dataSet {dataset_id} not found"), {}
        with self._lock:
            job_id = next(self._ids)
            rnd = random.Random(f"job:{job_id}:{dataset_id}")
            job = ExportJob(
                job_id,
                body,
                segment_id,
                dataset_id,
                f"{rnd.getrandbits(128):032x}",
                int(time.time() * 1000),
                f"{rnd.getrandbits(128):032x}"[:32],
            )
            self._jobs[job_id] = job
            record = self._record(job)
        return 200, record, {"X-Location": f"{JOBS}/{job_id}"}

    def get_job(self, job_id: int) -> tuple[int, Any]:
        """``GET /export/jobs/{id}``: the job, one step further along."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return 404, _problem(404, f"export job {job_id} not found")
            job.polls += 1
            if job.ended is None and job.polls > self.new_polls + self.processing_polls:
                self._end(job)
            return 200, self._record(job)

    def delete_job(self, job_id: int) -> tuple[int, Any]:
        """``DELETE /export/jobs/{id}``: mark a running job for cancelling."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return 404, _problem(404, f"export job {job_id} not found")
            if job.ended is not None:
                message = f"Export job {job_id} has already ended with status {job.ended}"
                return 200, {"status": False, "message": message}
            job.cancelling = True
        body = {"status": True, "message": "Export job has been marked for cancelling"}
        return self.cancel_status, body if self.cancel_status != 204 else None

    def list_jobs(self, limit: int, offset: str, status: str | None) -> tuple[int, Any]:
        """``GET /export/jobs``: newest first, after the ``<ms>_<id>`` cursor ``offset``."""
        if status is not None and status not in LIST_STATUSES:
            return 400, _problem(400, f"status must be one of {', '.join(LIST_STATUSES)}")
        after = _cursor(offset)
        if offset and after is None:
            return 400, _problem(400, f"offset must look like <ms>_<id>, got {offset!r}")
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: (j.created, j.id), reverse=True)
            records = [(j, self._record(j)) for j in jobs]
        if status is not None:
            records = [(j, r) for j, r in records if r["status"] == status]
        if after is not None:
            records = [(j, r) for j, r in records if (j.created, j.id) < after]
        page = records[:limit]
        first = f"{page[0][0].created}_{page[0][0].id}" if page else offset
        body: dict[str, Any] = {
            "records": [r for _, r in page],
            "page": {
                "sortField": "createdTime",
                "sort": "desc",
                "pageOffset": first,
                "pageSize": len(page),
            },
            "link": {},
        }
        if len(records) > limit:
            last = page[-1][0]
            body["link"]["next"] = f"/export/jobs/?limit={limit}&offset={last.created}_{last.id}"
        return 200, body

    def _status(self, job: ExportJob) -> str:
        if job.ended is not None:
            return job.ended
        if job.cancelling:
            return "CANCELLING"
        return "NEW" if job.polls <= self.new_polls else "PROCESSING"

    def _end(self, job: ExportJob) -> None:
        """Finish a job: cancelled, failed, or succeeded with its batch written."""
        job.ended_at = int(time.time() * 1000)
        keys = (job.segment_id, job.id)
        if job.cancelling or any(k in self._cancels for k in keys):
            job.ended = "CANCELLED"
            return
        failure = next((self._failures[k] for k in keys if k in self._failures), None)
        if failure is not None:
            job.ended, job.errors = "FAILED", failure
            return
        job.exported = self._write_batch(job)
        job.ended = "SUCCEEDED"

    def _write_batch(self, job: ExportJob) -> int:
        """Write the job's batch and serve it through Data Access; return its rows."""
        assert self.population is not None
        fields = job.request.get("fields") or None
        table = self.population.records(job.segment_id, fields, job.created)
        identity = _identity(job)
        directory = self.folder / str(job.id)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in range(max(1, -(-table.num_rows // PART_ROWS))):
            path = directory / identity.part_name(index)
            write_part(self.population.spec, table.slice(index * PART_ROWS, PART_ROWS), path)
            paths.append(path)
        files = sorted([*paths, *write_markers(identity, paths)], key=lambda p: p.name)
        entries = tuple(FileEntry(p.name, p, p.stat().st_size) for p in files)
        served = ServedFile(identity.file_id(0), entries, job.ended_at)
        target = self.state.datasets[job.dataset_id]
        batch = Batch(target.spec, identity, "success", (served,), None)
        self.state.files[served.file_id] = served
        self.state.data_batches[job.batch_id] = batch
        self.state.datasets[job.dataset_id] = replace(target, batches=(*target.batches, batch))
        return int(table.num_rows)

    def _record(self, job: ExportJob) -> dict[str, Any]:
        """The job as the API shows it."""
        status, body = self._status(job), job.request
        segments = [
            {"segmentNs": "ups", "status": ["realized", "existing"], **s}
            for s in body["filter"]["segments"]
        ]
        record: dict[str, Any] = {
            "id": job.id,
            "jobType": "BATCH",
            "destination": {
                "datasetId": job.dataset_id,
                "segmentPerBatch": False,
                "batchId": job.batch_id,
            },
            "schema": {"name": body.get("schema", {}).get("name", "_xdm.context.profile")},
            "imsOrgId": self.org_id,
            "status": status,
            "filter": {**body["filter"], "segments": segments},
            "mergePolicy": body.get("mergePolicy")
            or {"id": "timestampOrdered-none-mp", "version": 1},
            "profileInstanceId": "ups",
            "metrics": _metrics(job),
            "computeGatewayJobId": {"exportJob": "" if status == "NEW" else _uuid(job, 1)},
            "creationTime": job.created,
            "updateTime": job.ended_at or job.created + job.polls,
            "requestId": job.request_id,
        }
        for name in ("fields", "additionalFields"):
            if name in body:
                record[name] = body[name]
        if job.ended == "SUCCEEDED":
            record["computeGatewayJobId"]["pushJob"] = _uuid(job, 2)
        if job.errors:
            record["errors"] = job.errors
        return record


def _metrics(job: ExportJob) -> dict[str, Any]:
    start = job.created
    if job.ended is None:
        return {"totalTime": {"startTimeInMs": start}}
    end = job.ended_at
    span = {"startTimeInMs": start, "endTimeInMs": end, "totalTimeInMs": end - start}
    metrics: dict[str, Any] = {"totalTime": span, "profileExportTime": dict(span)}
    if job.ended == "SUCCEEDED":
        metrics["aCPDatasetWriteTime"] = dict(span)
        metrics["totalExportedProfileCounter"] = job.exported
        metrics["exportedProfileByNamespaceCounter"] = {"ECID": job.exported}
    return metrics


def _identity(job: ExportJob) -> RunIdentity:
    rnd = random.Random(f"export:{job.id}:{job.batch_id}")
    text = f"{rnd.getrandbits(128):032x}"
    return RunIdentity(
        run=0,
        catalog_id=job.batch_id,
        batch_id=job.batch_id,
        transaction_id=str(rnd.randrange(10**18, 9 * 10**18)),
        job_uuid=f"{text[:8]}-{text[8:12]}-4{text[13:16]}-a{text[17:20]}-{text[20:]}",
        first_task=rnd.randrange(100, 900),
        file_id_base=_uuid(job, 3),
        created=job.created,
    )


def _uuid(job: ExportJob, salt: int) -> str:
    text = f"{random.Random(f'job:{job.id}:{salt}').getrandbits(128):032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-a{text[17:20]}-{text[20:]}"


def _key(segment_id: str | None, job_id: int | None) -> str | int:
    if (segment_id is None) == (job_id is None):
        raise ValueError("pass exactly one of segment_id= and job_id=")
    return segment_id if segment_id is not None else int(job_id or 0)


def _check_job(body: Any) -> str | None:
    """What a job body lacks, as the platform would say it, or ``None``."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    segments = (body.get("filter") or {}).get("segments")
    if not isinstance(segments, list) or not segments or "segmentId" not in segments[0]:
        return "filter.segments[].segmentId is required"
    if not (body.get("destination") or {}).get("datasetId"):
        return "destination.datasetId is required"
    if not (body.get("schema") or {}).get("name"):
        return "schema.name is required"
    return None


def _cursor(offset: str) -> tuple[int, int] | None:
    ms, _, job_id = offset.partition("_")
    return (int(ms), int(job_id)) if ms.isdigit() and job_id.isdigit() else None


def _problem(status: int, detail: str) -> dict[str, Any]:
    title = "NotFound" if status == 404 else "BadRequestError"
    return {
        "type": f"https://ns.adobe.com/aep/errors/emulator-{status}",
        "status": status,
        "title": title,
        "detail": detail,
    }


def _respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    text = "" if body is None else json.dumps(body)
    return Response(text, status=status, mimetype="application/json", headers=headers)


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.get_data(as_text=True) or "null")
    except ValueError:
        return None


class SegmentationRoutes:
    """The export routes; :attr:`exports` is set by the emulator before serving."""

    exports: ExportJobs | None = None

    def _jobs(self) -> ExportJobs:
        if self.exports is None:
            raise RuntimeError("the app serves no export jobs: set app.exports first")
        return self.exports

    def on_create_dataset(self, request: Request) -> Response:
        """``POST /catalog/dataSets``."""
        return _respond(*self._jobs().create_dataset(_json_body(request)))

    def on_export_jobs(self, request: Request) -> Response:
        """``POST /export/jobs`` starts a job; ``GET`` lists them."""
        if request.method == "POST":
            return _respond(*self._jobs().create_job(_json_body(request)))
        raw_limit = request.args.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            return _respond(400, _problem(400, f"limit must be 1 to 100, got {raw_limit!r}"))
        args = request.args
        return _respond(
            *self._jobs().list_jobs(int(raw_limit), args.get("offset", ""), args.get("status"))
        )

    def on_export_job(self, request: Request, job_id: int) -> Response:
        """``GET`` or ``DELETE /export/jobs/{id}``."""
        if request.method == "DELETE":
            return _respond(*self._jobs().delete_job(job_id))
        return _respond(*self._jobs().get_job(job_id))


def build_exports(state: PlatformState, folder: Path, org_id: str) -> ExportJobs:
    """Export jobs over the profiles of the first dataset with a successful run.

    The population is that dataset's newest successful run when the state is built.
    """
    population = None
    for dataset in list(state.datasets.values()):
        done = [b for b in dataset.batches if b.status == "success"]
        if done:
            spec = dataset.spec
            population = Population(spec, done[-1].identity.run, default_segments(spec))
            break
    return ExportJobs(state, folder, population, org_id)
