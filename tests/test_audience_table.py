"""Tidy audience reshaping against hand-built records."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cai_frames.audience_table import tidy_audience
from cai_frames.errors import SchemaError

IDENTITY = pa.map_(
    pa.string(),
    pa.list_(pa.struct([("id", pa.string()), ("primary", pa.bool_())])),
)
SCORES = pa.struct([("score", pa.int32()), ("probability", pa.float64())])


def _records() -> pa.Table:
    identity = pa.array(
        [
            [("ECID", [{"id": "e1", "primary": True}])],
            [("ECID", [{"id": "e2", "primary": True}])],
            [("ECID", [{"id": "e3", "primary": True}])],
        ],
        IDENTITY,
    )
    churn = pa.array([{"score": 80, "probability": 0.8}, None, {"score": 10, "probability": 0.1}])
    upsell = pa.array([{"score": 5, "probability": 0.05}, None, None], SCORES)
    customer_ai = pa.StructArray.from_arrays([churn.cast(SCORES), upsell], ["churn", "upsell"])
    tenant = pa.StructArray.from_arrays([customer_ai], ["CustomerAI"])
    name = pa.StructArray.from_arrays([pa.array(["Ada", "Ben", None])], ["firstName"])
    person = pa.StructArray.from_arrays([name], ["name"], mask=pa.array([False, False, True]))
    return pa.table({"identityMap": identity, "person": person, "_acme": tenant})


def test_tidy_audience_several_instances_keeps_members_without_scores() -> None:
    tidy = tidy_audience(_records())

    columns = [tidy.column(c).to_pylist() for c in ("profile_id", "instance", "score")]
    rows = list(zip(*columns, strict=True))
    assert rows == [
        ("e1", "churn", 80),
        ("e3", "churn", 10),
        ("e1", "upsell", 5),
        ("e2", None, None),
    ]
    assert tidy.column("person.name.firstName").to_pylist() == ["Ada", None, "Ada", "Ben"]
    assert tidy.column("percentile").null_count == 4


def test_tidy_audience_without_customer_ai_only_identity_and_leaves() -> None:
    tidy = tidy_audience(_records().drop_columns(["_acme"]))

    assert tidy.column_names == ["profile_id", "profile_namespace", "person.name.firstName"]
    assert tidy.column("profile_namespace").to_pylist() == ["ECID"] * 3


def test_tidy_audience_unknown_column_raises() -> None:
    with pytest.raises(SchemaError, match="nope"):
        tidy_audience(_records(), ["profile_id", "nope"])
