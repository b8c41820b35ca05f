"""Deterministic Customer AI score values, one part at a time.

Every value is a pure function of ``(seed, profile, run, instance)``, computed with a
counter-based hash (splitmix64) over numpy arrays. Nothing is drawn from a stateful
random stream, so a part can be generated on its own, the writer and the truth see
exactly the same values, and a run of 46 million rows never has to be in memory at once.

How a run is made:

- Run ``r`` scores ``rows`` profiles: profile numbers ``r * turnover`` onwards, so each
  week about 5 % of the profiles leave and as many arrive (:func:`run_profiles`). Row
  ``j`` of the run holds a profile picked by an affine permutation, so parts are not
  sorted by profile.
- Each profile has a stable latent propensity per instance; each run adds a little
  noise to it, so scores drift slowly from run to run.
- ``percentile`` is the profile's quantile of that latent in the run's population
  (1..100), ``probability`` a Beta-like (Kumaraswamy) transform of the same quantile,
  ``score`` is ``round(100 * probability)``. All three therefore rank profiles alike.
- A record carries each instance with probability 0.8, and always at least one.
- Influential factors: 2 to 5 distinct codes per record, values as strings, importance
  ``high`` more often for high scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cai_frames.emulator.spec import WEEK_MS, DatasetSpec, run_identity

U64 = np.uint64
_MASK = (1 << 64) - 1
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)


class Factor(NamedTuple):
    """An influential-factor code and how its values look."""

    code: str
    kind: str
    scale: float
    labels: tuple[str, ...] = ()


#: Ints are drawn in ``range(scale)``, floats in ``[0, scale)`` with two decimals,
#: categories from ``labels``.
FACTORS = (
    Factor("days_since_last_purchase", "int", 400),
    Factor("number_of_purchases_90d", "int", 40),
    Factor("days_since_last_login", "int", 200),
    Factor("email_open_rate", "float", 1.0),
    Factor("support_tickets_30d", "int", 9),
    Factor("average_order_value", "float", 500.0),
    Factor("loyalty_tier", "category", 4, ("bronze", "silver", "gold", "platinum")),
    Factor("country", "category", 6, ("US", "DE", "FR", "GB", "JP", "BR")),
    Factor("device_type", "category", 3, ("mobile", "desktop", "tablet")),
    Factor("subscription_months", "int", 61),
    Factor("cart_abandonments_30d", "int", 11),
)
_LABELS = [label for factor in FACTORS for label in factor.labels]
_FIRST_LABEL = np.cumsum([0] + [len(f.labels) for f in FACTORS])[:-1]
IMPORTANCE = ("low", "medium", "high")
SLOTS = ("Email", "ECID", "CRMID")
AUTH_STATES = ("authenticated", "ambiguous", "authenticated")
INSTANCE_SHARE = 0.8


def _mix_int(*values: int) -> int:
    """splitmix64 over Python ints: a stream key from seeds and indices."""
    z = 0x9E3779B97F4A7C15
    for value in values:
        z = (z ^ (value & _MASK)) + 0x9E3779B97F4A7C15 & _MASK
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK
        z ^= z >> 31
    return z


def _mix(x: np.ndarray, key: int) -> np.ndarray:
    """splitmix64 of each uint64 in ``x`` under stream ``key`` (array ops wrap silently)."""
    z = (x ^ U64(key)) + U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def _uniform(x: np.ndarray, key: int) -> np.ndarray:
    """Uniform floats in (0, 1), one per element of ``x``, for stream ``key``."""
    bits = _mix(x, key) >> U64(11)
    return (bits.astype(np.float64) + 0.5) * 2.0**-53


def _normal(x: np.ndarray, key: int) -> np.ndarray:
    """Standard normal values by Box-Muller over two hashed uniform streams."""
    u1, u2 = _uniform(x, _mix_int(key, 1)), _uniform(x, _mix_int(key, 2))
    normal: np.ndarray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return normal


def _fixed_strings(chars: np.ndarray) -> pa.StringArray:
    """A string array from an ``(n, width)`` uint8 matrix of ASCII codes, no Python loop."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars).tobytes()
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def _hex_strings(words: list[np.ndarray]) -> pa.StringArray:
    """Lower-case hex of each row's uint64 words, 16 characters a word."""
    raw = np.stack([w.astype(">u8") for w in words], axis=1).view(np.uint8)
    raw = raw.reshape(len(words[0]), 8 * len(words))
    chars = np.empty((raw.shape[0], raw.shape[1] * 2), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    return _fixed_strings(chars)


def _decimal_strings(words: list[np.ndarray], width: int) -> pa.StringArray:
    """``width`` decimal digits per row, one from each byte of the row's uint64 words."""
    raw = np.stack(words, axis=1).view(np.uint8).reshape(len(words[0]), 8 * len(words))
    return _fixed_strings(_DIGITS[raw[:, :width] % 10])


@dataclass(frozen=True)
class InstanceValues:
    """One instance's scores for the records of a part (values under nulls are junk)."""

    name: str
    present: np.ndarray
    score: np.ndarray
    probability: np.ndarray
    percentile: np.ndarray
    propensity_type: str
    score_date_us: int
    factors: pa.ListArray


@dataclass(frozen=True)
class PartValues:
    """Every generated value of one part, in file row order."""

    index: int
    record_ids: pa.StringArray
    identity_map: pa.MapArray
    primary_ids: pa.StringArray
    timestamp_us: np.ndarray
    instances: tuple[InstanceValues, ...]

    @property
    def rows(self) -> int:
        """Records in the part."""
        return len(self.record_ids)


def part_row_counts(spec: DatasetSpec, run: int) -> list[int]:
    """Rows of each part of a run: uneven, each at least one, summing to ``spec.rows``."""
    weights = 0.45 + _uniform(np.arange(spec.parts, dtype=U64), _mix_int(spec.data_seed, run, 7))
    spare = spec.rows - spec.parts
    shares = weights / weights.sum() * spare
    counts = np.floor(shares).astype(np.int64)
    leftover = spare - int(counts.sum())
    counts[np.argsort(counts - shares, kind="stable")[:leftover]] += 1
    return [int(c) + 1 for c in counts]


def turnover(spec: DatasetSpec) -> int:
    """Profiles that leave (and arrive) between two consecutive runs."""
    return max(1, spec.rows // 20)


def run_profiles(spec: DatasetSpec, run: int, start: int, stop: int) -> np.ndarray:
    """Profile numbers of rows ``start..stop`` of run ``run``, as uint64."""
    stride = max(1, int(spec.rows * 0.6180339887)) | 1
    while gcd(stride, spec.rows) != 1:
        stride += 2
    rows = np.arange(start, stop, dtype=np.int64)
    shuffled = (rows * stride + _mix_int(spec.data_seed, run) % spec.rows) % spec.rows
    return (shuffled + run * turnover(spec)).astype(U64)


def propensity_type(instance: str) -> str:
    """The propensity type an instance name suggests: ``CONVERSION`` or ``CHURN``."""
    return "CONVERSION" if "conv" in instance.lower() else "CHURN"


def part_values(spec: DatasetSpec, run: int, index: int) -> PartValues:
    """Generate every value of part ``index`` of run ``run``."""
    counts = part_row_counts(spec, run)
    start = sum(counts[:index])
    profiles = run_profiles(spec, run, start, start + counts[index])
    seed = spec.data_seed
    record_ids = _hex_strings([_mix(profiles, _mix_int(seed, run, i, 11)) for i in (1, 2)])
    ecids = _decimal_strings([_mix(profiles, _mix_int(seed, i, 12)) for i in range(5)], 38)
    identity = _identity_map(profiles, ecids, seed)
    identity_obj = run_identity(spec, run)
    started_us = (identity_obj.created + 600) * 1000
    timestamps = started_us + (_uniform(profiles, _mix_int(seed, run, 13)) * 3.6e9).astype(np.int64)
    present = _presence(profiles, seed, len(spec.instances))
    score_day = identity_obj.created - identity_obj.created % (24 * 3600 * 1000)
    instances = tuple(
        _instance_values(spec, run, profiles, name, position, present[:, position], score_day)
        for position, name in enumerate(spec.instances)
    )
    return PartValues(index, record_ids, identity, ecids, timestamps, instances)


def _identity_map(profiles: np.ndarray, ecids: pa.StringArray, seed: int) -> pa.MapArray:
    """identityMap: ECID (primary) always; Email (listed first) and CRMID sometimes."""
    n = len(profiles)
    numbers = pa.array(profiles.astype(np.int64)).cast(pa.string())
    emails = pc.binary_join_element_wise("p", numbers, "@example.com", "")
    crmids = pc.binary_join_element_wise("CRM-", pc.utf8_lpad(numbers, 9, "0"), "")
    has = np.ones((n, 3), dtype=bool)
    has[:, 0] = _uniform(profiles, _mix_int(seed, 14)) < 0.4
    has[:, 2] = _uniform(profiles, _mix_int(seed, 15)) < 0.25
    flat = has.ravel()
    slot = np.tile(np.arange(3), n)[flat]
    row = np.repeat(np.arange(n), 3)[flat]
    ids = pa.concat_arrays([emails, ecids, crmids]).take(pa.array(slot * n + row))
    items = pa.StructArray.from_arrays(
        [ids, pa.array(AUTH_STATES).take(pa.array(slot)), pa.array(slot == 1)],
        names=["id", "authenticatedState", "primary"],
    )
    lists = pa.ListArray.from_arrays(pa.array(np.arange(len(slot) + 1, dtype=np.int32)), items)
    offsets = np.concatenate([[0], np.cumsum(has.sum(axis=1))]).astype(np.int32)
    keys = pa.array(SLOTS).take(pa.array(slot))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, lists)


def _presence(profiles: np.ndarray, seed: int, instances: int) -> np.ndarray:
    """Which instances each record carries: each with probability 0.8, at least one."""
    draws = [_uniform(profiles, _mix_int(seed, 16, i)) for i in range(instances)]
    present = np.stack(draws, axis=1) < INSTANCE_SHARE
    fallback = (_uniform(profiles, _mix_int(seed, 17)) * instances).astype(np.intp)
    empty = ~present.any(axis=1)
    present[np.flatnonzero(empty), fallback[empty]] = True
    return present


def _instance_values(
    spec: DatasetSpec,
    run: int,
    profiles: np.ndarray,
    name: str,
    position: int,
    present: np.ndarray,
    score_day_ms: int,
) -> InstanceValues:
    """Scores of one instance: a stable latent per profile plus a little noise per run."""
    seed = spec.data_seed
    latent = _normal(profiles, _mix_int(seed, 18, position))
    noise = _normal(profiles, _mix_int(seed, 19, position, run))
    drifted = (latent + 0.25 * noise) / np.sqrt(1.0 + 0.25**2)
    quantile = 1.0 / (1.0 + np.exp(-1.702 * drifted))
    kind = propensity_type(name)
    a, b = (1.3, 5.0) if kind == "CONVERSION" else (1.2, 3.0)
    probability = (1.0 - (1.0 - quantile) ** (1.0 / b)) ** (1.0 / a)
    score = np.clip(np.rint(probability * 100.0), 0, 100).astype(np.int32)
    percentile = np.clip(np.ceil(quantile * 100.0), 1, 100).astype(np.int32)
    key = _mix_int(seed, 20, position, run)
    factors = _factors(profiles, probability, key)
    return InstanceValues(
        name, present, score, probability, percentile, kind, score_day_ms * 1000, factors
    )


def _factors(profiles: np.ndarray, probability: np.ndarray, key: int) -> pa.ListArray:
    """2..5 distinct influential factors per record, importance rising with the score."""
    counts = 2 + (_uniform(profiles, _mix_int(key, 1)) * 4).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    row = np.repeat(np.arange(len(profiles)), counts)
    position = np.arange(len(row)) - offsets[row]
    item = profiles[row] * U64(8) + position.astype(U64)
    first = (_uniform(profiles, _mix_int(key, 2)) * len(FACTORS)).astype(np.int64)
    stride = 1 + (_uniform(profiles, _mix_int(key, 3)) * (len(FACTORS) - 1)).astype(np.int64)
    code = (first[row] + position * stride[row]) % len(FACTORS)
    level = 0.55 * probability[row] + 0.45 * _uniform(item, _mix_int(key, 4)) - 0.08 * position
    importance = np.digitize(level, [0.28, 0.5])
    values = _factor_values(code, _uniform(item, _mix_int(key, 5)))
    structs = pa.StructArray.from_arrays(
        [
            pa.array([factor.code for factor in FACTORS]).take(pa.array(code)),
            values,
            pa.array(IMPORTANCE).take(pa.array(importance)),
        ],
        names=["code", "value", "importance"],
    )
    return pa.ListArray.from_arrays(pa.array(offsets), structs)


def _factor_values(code: np.ndarray, draw: np.ndarray) -> pa.StringArray:
    """The value string of each factor, formatted by the kind of its code."""
    kinds = np.array([factor.kind for factor in FACTORS])[code]
    scaled = draw * np.array([factor.scale for factor in FACTORS])[code]
    whole = np.floor(scaled).astype(np.int64)
    as_int = pa.array(whole).cast(pa.string())
    as_float = pa.array(np.round(scaled, 2)).cast(pa.string())
    label_index = np.where(kinds == "category", _FIRST_LABEL[code] + whole, 0)
    as_label = pa.array(_LABELS).take(pa.array(label_index))
    is_int, is_float = pa.array(kinds == "int"), pa.array(kinds == "float")
    return pc.if_else(is_int, as_int, pc.if_else(is_float, as_float, as_label))


def run_times(spec: DatasetSpec, run: int) -> tuple[int, int, int]:
    """``(created, started, completed)`` of a run in epoch ms."""
    created = run_identity(spec, run).created
    started = created + 600
    completed = started + 3_600_000 + spec.rows // 50
    return created, started, min(completed, created + WEEK_MS // 2)
