"""Profiles and segments behind the emulator's audience exports, and their truth.

The profile population is the newest successful run of one score dataset: every profile
it scores is a Real-Time Customer Profile here, with the same ``identityMap`` (so its
primary ECID is the ``profile_id`` the scores load with), the same Customer AI struct,
and attributes derived from the profile number alone::

    identityMap        the score record's, unchanged
    person             struct<name: struct<firstName, lastName>>
    personalEmail      struct<address>                       p<number>@example.com
    homeAddress        struct<city, countryCode, postalCode>
    _<tenant>          struct<CustomerAI: ...>               the score record's
    segmentMembership  map<namespace, map<segmentId, struct<status, lastQualificationTime>>>

Segments are rules over those values, so membership is deterministic and its truth is
known without reading parquet back (see :func:`audience_truth`):

- ``High churn risk`` (``High conversion propensity`` for a conversion instance): the
  first instance's score is above 74;
- ``Email subscribers``: the profile has an ``Email`` identity;
- ``Lapsed VIP``: nobody, an audience with no members.

Undocumented, and what the emulator does: an export always carries ``identityMap``
(whatever ``fields`` says), so members can be told apart; a ``fields`` path that names
nothing is ignored.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cai_frames.emulator.generator import PartValues, part_row_counts, part_values, run_profiles
from cai_frames.emulator.spec import DatasetSpec
from cai_frames.emulator.writer import UTC_MICROS, PartVariant, physical_table

HIGH_SCORE = 74
NAMESPACE = "ups"
FIRST_NAMES = ("Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST_NAMES = ("Alvarez", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Hansen")
CITIES = (("Berlin", "DE", "10115"), ("Lyon", "FR", "69001"), ("Austin", "US", "73301"))
MEMBERSHIP_TYPE = pa.map_(
    pa.string(),
    pa.map_(
        pa.string(),
        pa.struct([("status", pa.string()), ("lastQualificationTime", UTC_MICROS)]),
    ),
)
IDENTITY_COLUMN = "identityMap"


@dataclass(frozen=True)
class SegmentSpec:
    """One segment definition the emulator evaluates.

    Attributes:
        segment_id: The segment ID an export job's filter names.
        name: The segment's display name.
        rule: ``"high_score"``, ``"email"`` or ``"nobody"`` (see the module docstring).
    """

    segment_id: str
    name: str
    rule: str


def default_segments(spec: DatasetSpec) -> tuple[SegmentSpec, ...]:
    """The segments defined over the profiles of ``spec``, with IDs derived from its seed."""
    high = "High conversion propensity" if "conv" in spec.instances[0] else "High churn risk"
    named = ((high, "high_score"), ("Email subscribers", "email"), ("Lapsed VIP", "nobody"))
    return tuple(
        SegmentSpec(_uuid(f"{spec.dataset_id}:{name}"), name, rule) for name, rule in named
    )


def _uuid(key: str) -> str:
    text = f"{random.Random(f'segment:{key}').getrandbits(128):032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-a{text[17:20]}-{text[20:]}"


@dataclass(frozen=True)
class MemberPart:
    """The members found in one part of the population: the part's values and rows."""

    values: PartValues
    profiles: np.ndarray
    rows: np.ndarray


class Population:
    """The profiles of one score run, the segments over them, and their export records.

    Args:
        spec: The score dataset whose run the profiles come from.
        run: The run index.
        segments: The segments defined over the profiles.
    """

    def __init__(self, spec: DatasetSpec, run: int, segments: tuple[SegmentSpec, ...]) -> None:
        self.spec = spec
        self.run = run
        self.segments = {s.segment_id: s for s in segments}

    def members(self, segment_id: str) -> Iterator[MemberPart]:
        """Yield, part by part, the rows of the profiles in the segment.

        Raises:
            KeyError: No such segment.
        """
        segment = self.segments[segment_id]
        for index, values in enumerate(self._parts()):
            profiles = self._profiles(index)
            rows = np.flatnonzero(self._mask(segment, values))
            yield MemberPart(values, profiles, rows)

    def records(self, segment_id: str, fields: str | None, qualified_ms: int) -> pa.Table:
        """The segment's profile records, projected to ``fields`` (comma-separated paths)."""
        tables = [self._record_table(p, qualified_ms) for p in self.members(segment_id)]
        return project(pa.concat_tables(tables), fields)

    def _parts(self) -> Iterator[PartValues]:
        for index in range(self.spec.parts):
            yield part_values(self.spec, self.run, index)

    def _profiles(self, index: int) -> np.ndarray:
        counts = part_row_counts(self.spec, self.run)
        start = sum(counts[:index])
        return run_profiles(self.spec, self.run, start, start + counts[index])

    def _mask(self, segment: SegmentSpec, values: PartValues) -> np.ndarray:
        if segment.rule == "high_score":
            first = values.instances[0]
            return np.asarray(first.present & (first.score > HIGH_SCORE))
        if segment.rule == "email":
            identities = values.identity_map
            email = pc.equal(identities.keys, "Email").to_numpy(zero_copy_only=False)
            seen = np.concatenate([[0], np.cumsum(email)])
            offsets = identities.offsets.to_numpy()
            return np.asarray(seen[offsets[1:]] > seen[offsets[:-1]])
        return np.zeros(values.rows, dtype=bool)

    def _record_table(self, part: MemberPart, qualified_ms: int) -> pa.Table:
        rows = pa.array(part.rows, pa.int64())
        scores = physical_table(self.spec, part.values, PartVariant())
        profiles = part.profiles[part.rows]
        columns = {
            IDENTITY_COLUMN: part.values.identity_map.take(rows),
            "person": _person(profiles),
            "personalEmail": pa.StructArray.from_arrays([_emails(profiles)], ["address"]),
            "homeAddress": _address(profiles),
            self.spec.tenant: scores.column(self.spec.tenant).combine_chunks().take(rows),
            "segmentMembership": self._membership(part, qualified_ms),
        }
        return pa.table(columns)

    def _membership(self, part: MemberPart, qualified_ms: int) -> pa.Array:
        inside = {sid: self._mask(s, part.values)[part.rows] for sid, s in self.segments.items()}
        when = pd.Timestamp(qualified_ms, unit="ms", tz="UTC").to_pydatetime()
        values = []
        for row in range(len(part.rows)):
            mine = [
                (sid, {"status": "realized", "lastQualificationTime": when})
                for sid, flags in inside.items()
                if flags[row]
            ]
            values.append([(NAMESPACE, mine)])
        return pa.array(values, MEMBERSHIP_TYPE)


def _pick(profiles: np.ndarray, salt: int, size: int) -> np.ndarray:
    mixed = (profiles + np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)
    return np.asarray((mixed >> np.uint64(40)) % np.uint64(size), dtype=np.int64)


def _person(profiles: np.ndarray) -> pa.StructArray:
    first = pa.array(FIRST_NAMES).take(pa.array(_pick(profiles, 1, len(FIRST_NAMES))))
    last = pa.array(LAST_NAMES).take(pa.array(_pick(profiles, 2, len(LAST_NAMES))))
    name = pa.StructArray.from_arrays([first, last], ["firstName", "lastName"])
    return pa.StructArray.from_arrays([name], ["name"])


def _emails(profiles: np.ndarray) -> pa.Array:
    numbers = pa.array(profiles.astype(np.int64)).cast(pa.string())
    return pc.binary_join_element_wise("p", numbers, "@example.com", "")


def _address(profiles: np.ndarray) -> pa.StructArray:
    picked = pa.array(_pick(profiles, 3, len(CITIES)))
    columns = [pa.array([c[i] for c in CITIES]).take(picked) for i in range(3)]
    return pa.StructArray.from_arrays(columns, ["city", "countryCode", "postalCode"])


def project(table: pa.Table, fields: str | None) -> pa.Table:
    """Keep ``identityMap`` and the columns and struct fields the dot paths name."""
    if not fields:
        return table
    tree = _field_tree(fields)
    kept = {IDENTITY_COLUMN: table.column(IDENTITY_COLUMN)}
    for name in table.column_names:
        if name in tree and name != IDENTITY_COLUMN:
            column = table.column(name).combine_chunks()
            kept[name] = column if tree[name] is True else _prune(column, tree[name])
    return pa.table({k: v for k, v in kept.items() if v is not None})


def _field_tree(fields: str) -> dict[str, Any]:
    """Dot paths as a tree of names; a leaf (``True``) keeps everything beneath it."""
    tree: dict[str, Any] = {}
    for path in fields.split(","):
        steps = [s for s in path.strip().split(".") if s]
        node = tree
        for step in steps[:-1]:
            if node.get(step) is True:
                break
            node = node.setdefault(step, {})
        else:
            if steps:
                node[steps[-1]] = True
    return tree


def _prune(array: pa.Array, tree: dict[str, Any]) -> pa.Array | None:
    """The struct ``array`` cut down to the fields in ``tree``; ``None`` if none match."""
    if not pa.types.is_struct(array.type):
        return None
    children, names = [], []
    for index, child in enumerate(array.type):
        if child.name not in tree:
            continue
        value = array.field(index)
        value = value if tree[child.name] is True else _prune(value, tree[child.name])
        if value is not None:
            children.append(value)
            names.append(child.name)
    if not children:
        return None
    return pa.StructArray.from_arrays(children, names, mask=array.is_null())


def audience_truth(
    population: Population, segment_id: str, fields: Sequence[str] | str | None
) -> pd.DataFrame:
    """The tidy rows an export of the segment should load as, from the generated values.

    One row per member (per member and instance, when several instances are exported):
    ``profile_id`` and ``profile_namespace`` from the primary ECID; one column per
    exported attribute leaf named by its dot path (``person.name.firstName``,
    ``person.name.lastName``, ``personalEmail.address``, ``homeAddress.city``,
    ``homeAddress.countryCode``, ``homeAddress.postalCode``); and, when the Customer AI
    struct is exported, ``instance`` (several instances only), ``score``,
    ``probability``, ``percentile``, ``propensity_type``, ``score_date`` and
    ``influential_factors`` (lists of dicts), null for a member without scores.
    ``segmentMembership`` is not in the truth: its qualification time is the job's.
    Row order is not promised; sort before comparing.

    Args:
        population: The profiles and segments.
        segment_id: The segment.
        fields: The exported dot paths, as a list or one comma-separated string (as
            :func:`cai_frames.audience_export.export_audience` takes them); ``None``
            for every field.
    """
    if fields is not None and not isinstance(fields, str):
        fields = ",".join(fields)
    members = list(population.members(segment_id))
    exported = population.records(segment_id, fields, 0).schema
    frames = [_attribute_truth(population, p, exported) for p in members]
    frame = pd.concat(frames, ignore_index=True)
    scores = _score_truth(population, members, exported)
    return frame if scores is None else _with_scores(frame, scores, population)


def _attribute_truth(population: Population, part: MemberPart, exported: pa.Schema) -> pd.DataFrame:
    profiles = part.profiles[part.rows]
    columns: dict[str, Any] = {
        "profile_id": part.values.primary_ids.take(pa.array(part.rows, pa.int64())).to_pylist(),
        "profile_namespace": ["ECID"] * len(part.rows),
    }
    first, last = _person(profiles).field(0).flatten()
    city, country, postal = _address(profiles).flatten()
    leaves = {
        "person.name.firstName": first,
        "person.name.lastName": last,
        "personalEmail.address": _emails(profiles),
        "homeAddress.city": city,
        "homeAddress.countryCode": country,
        "homeAddress.postalCode": postal,
    }
    for name, values in leaves.items():
        if _has_path(exported, name):
            columns[name] = values.to_pylist()
    return pd.DataFrame(columns)


def _has_path(schema: pa.Schema, dotted: str) -> bool:
    steps = dotted.split(".")
    if steps[0] not in schema.names:
        return False
    kind = schema.field(steps[0]).type
    for step in steps[1:]:
        if not pa.types.is_struct(kind) or kind.get_field_index(step) < 0:
            return False
        kind = kind.field(step).type
    return True


def _score_truth(
    population: Population, members: list[MemberPart], exported: pa.Schema
) -> list[pd.DataFrame] | None:
    """Per instance, the score columns of every member (``None``: no scores exported)."""
    tenant = population.spec.tenant
    if not _has_path(exported, f"{tenant}.CustomerAI"):
        return None
    frames = []
    for position, name in enumerate(population.spec.instances):
        if not _has_path(exported, f"{tenant}.CustomerAI.{name}"):
            continue
        parts = []
        for part in members:
            inst = part.values.instances[position]
            rows = part.rows
            present = inst.present[rows]
            parts.append(
                pd.DataFrame(
                    {
                        "instance": name,
                        "present": present,
                        "score": pd.Series(inst.score[rows], dtype="Int64").where(present),
                        "probability": np.where(present, inst.probability[rows], np.nan),
                        "percentile": pd.Series(inst.percentile[rows], dtype="Int64").where(
                            present
                        ),
                        "propensity_type": pd.Series(
                            inst.propensity_type, index=range(len(rows))
                        ).where(present),
                        "score_date": pd.Series(
                            pd.Timestamp(inst.score_date_us, unit="us", tz="UTC"),
                            index=range(len(rows)),
                        ).where(present),
                        "influential_factors": _factor_lists(inst.factors, rows, present),
                    }
                )
            )
        frames.append(pd.concat(parts, ignore_index=True))
    return frames


def _factor_lists(factors: pa.ListArray, rows: np.ndarray, present: np.ndarray) -> list[Any]:
    """Each member's influential factors as a list of dicts, ``None`` without scores."""
    values = factors.take(pa.array(rows, pa.int64())).to_pylist()
    return [v if p else None for v, p in zip(values, present, strict=True)]


def _with_scores(
    frame: pd.DataFrame, scores: list[pd.DataFrame], population: Population
) -> pd.DataFrame:
    """Attach the score columns: one row per member, or per present instance with several."""
    several = len(population.spec.instances) > 1
    if not several:
        return pd.concat([frame, scores[0].drop(columns=["instance", "present"])], axis=1)
    rows = [pd.concat([frame, s], axis=1) for s in scores]
    stacked = pd.concat(rows, ignore_index=True)
    present = stacked[stacked["present"]]
    alone = frame[~np.logical_or.reduce([s["present"].to_numpy() for s in scores])]
    alone = alone.assign(instance=None)
    result: pd.DataFrame = pd.concat([present, alone], ignore_index=True)
    return result.drop(columns=["present"])
