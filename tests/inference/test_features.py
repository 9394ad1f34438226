"""Feature assembly against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.inference.features import Signature
from shared.errors import BadRequest
from shared.online import OnlineVector
from shared.registry import FeatureSpec

SIGNATURE = Signature(
    (
        FeatureSpec("txn_count", "online", default=-1.0, view="card"),
        FeatureSpec("amount", "request", default=0.5),
        FeatureSpec("avg", "online", default=2.0, view="card", field="avg_amount"),
        FeatureSpec("merchant_risk", "online", default=9.0, view="merchant", entity_from="merchant"),
    )
)


def reference(entity: str, features: dict[str, object], store: dict[tuple[str, str], dict[str, float]] | None):
    row, degraded = [], False
    for spec in SIGNATURE.specs:
        if spec.source == "request":
            value = features.get(spec.name)
        else:
            key = entity if spec.entity_from is None else features.get(spec.entity_from)
            hit = None if store is None or key is None else store.get((spec.view, str(key)))  # type: ignore[arg-type]
            value = None if hit is None else hit.get(spec.field or spec.name)
        if value is None:
            value, degraded = spec.default, True
        row.append(float(value))  # type: ignore[arg-type]
    return row, degraded


entities = st.sampled_from(["c1", "c2", "c3"])
requests = st.lists(
    st.tuples(
        entities,
        st.fixed_dictionaries(
            {},
            optional={
                "amount": st.floats(-1e6, 1e6, allow_nan=False, width=32),
                "merchant": st.sampled_from(["m1", "m2"]),
            },
        ),
    ),
    min_size=1,
    max_size=8,
)
stores = st.dictionaries(
    st.tuples(st.sampled_from(["card", "merchant"]), st.sampled_from(["c1", "c2", "m1", "m2"])),
    st.dictionaries(
        st.sampled_from(["txn_count", "avg_amount", "merchant_risk"]), st.floats(-1e3, 1e3, width=32), max_size=3
    ),
    max_size=6,
)


@given(requests=requests, store=st.one_of(st.none(), stores))
def test_assembly_matches_reference(requests: list, store: dict | None) -> None:
    wanted = SIGNATURE.lookups(requests)
    assert len(wanted) == len(set(wanted))
    online = None
    if store is not None:
        online = {pair: OnlineVector(dict(store[pair]), {}) for pair in wanted if pair in store}
    matrix, degraded = SIGNATURE.assemble(requests, online)
    for i, (entity, features) in enumerate(requests):
        row, flag = reference(entity, features, store)
        np.testing.assert_allclose(matrix[i], np.array(row, dtype=np.float32))
        assert degraded[i] == flag


def test_wrong_feature_types_are_refused() -> None:
    with pytest.raises(BadRequest, match="feature 'amount' must be a number"):
        SIGNATURE.check({"amount": "12"})
    with pytest.raises(BadRequest, match="'merchant' names an entity"):
        SIGNATURE.check({"merchant": 1.5})
    SIGNATURE.check({"amount": 3, "merchant": "m1", "unused": "text"})


def test_log_entries_are_prediction_records_on_the_wire() -> None:
    from services.inference.predlog import LogEntry
    from shared.messages import PredictionRecord

    entry = LogEntry("r1", "m", 2, "shadow", "c1", 0.25, True, 900, ("a", "b"), np.array([1.5, 2.0], np.float32),
                     timings_us={"total": 900})  # fmt: skip
    assert PredictionRecord.from_dict(entry.to_wire()) == entry.record()
