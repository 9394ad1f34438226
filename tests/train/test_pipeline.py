"""Training on a simulated point-in-time export: ONNX fidelity, time split, metrics, profile, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pytest

from rtml.train import model as models
from rtml.train.dataset import DatasetError, Source, from_table, load_export, time_split
from rtml.train.pipeline import TrainConfig, TrainResult, feature_specs, train
from services.monitor.profiles import ReferenceProfile
from tests.train.export_factory import FEATURES, export_table, write


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return export_table(hours=12)


@pytest.fixture(scope="module")
def export(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(table, tmp_path_factory.mktemp("export") / "training.parquet")


@pytest.fixture(scope="module")
def result(export: Path) -> TrainResult:
    return train(TrainConfig(export=export, kind="mlp", seed=3))


def test_csv_and_parquet_read_the_same_rows_in_time_order(table: pa.Table, export: Path, tmp_path: Path) -> None:
    from_parquet = load_export(export)
    from_csv = load_export(write(table, tmp_path / "training.csv"))
    assert from_parquet.features == FEATURES == from_csv.features
    assert np.array_equal(from_parquet.ids, from_csv.ids)
    assert np.allclose(from_parquet.x, from_csv.x, equal_nan=True)
    assert np.all(np.diff(from_parquet.ts) >= 0)
    # Unlabelled rows are left out; the rest keep their labels.
    labelled = sum(v is not None for v in table.column("label").to_pylist())
    assert len(from_parquet) == labelled


def test_since_and_until_bound_the_rows(export: Path) -> None:
    every = load_export(export)
    since, until = int(every.ts[100]), int(every.ts[-100])
    window = load_export(export, since_ms=since, until_ms=until)
    assert window.ts.min() >= since and window.ts.max() < until
    assert len(window) == int(np.sum((every.ts >= since) & (every.ts < until)))


def test_onnx_reproduces_scikit_learn_within_1e_5(result: TrainResult, export: Path) -> None:
    data = load_export(export)
    training, _ = time_split(data, holdout_fraction=0.2)
    pipeline = models.fit("mlp", training.x, training.y, seed=3)
    # Same seed, same rows: the refit is the registered model, bit for bit.
    assert models.export(pipeline, len(FEATURES)) == result.artifact
    session = ort.InferenceSession(result.artifact, providers=["CPUExecutionProvider"])
    (onnx_scores,) = session.run(["score"], {"x": data.x.astype(np.float32)})
    expected = pipeline.predict_proba(data.x.astype(np.float32))[:, 1]
    assert onnx_scores.shape == (len(data),)
    assert np.max(np.abs(onnx_scores - expected)) <= 1e-5
    assert result.max_onnx_error <= 1e-5


def test_graph_is_one_float_input_one_score_output_in_standard_operators(result: TrainResult) -> None:
    graph = onnx.load_model_from_string(result.artifact).graph
    (inp,) = graph.input
    assert inp.name == "x" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1] == len(FEATURES)
    assert [o.name for o in graph.output] == ["score"]
    assert {node.domain for node in graph.node} == {""}  # no ai.onnx.ml: TensorRT can build it


def test_missing_values_are_imputed_inside_the_graph(result: TrainResult) -> None:
    rows = np.array([[np.nan] * len(FEATURES), [12.0, 1, 12.0, 1, 0, 0]], dtype=np.float32)
    scores = models.onnx_scores(result.artifact, rows)
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))


def test_holdout_is_strictly_later_than_training(result: TrainResult, export: Path) -> None:
    assert result.train_until_ms < result.holdout_from_ms
    metrics = result.metadata.training_metrics
    assert metrics["train_until_ms"] < metrics["holdout_from_ms"]
    data = load_export(export)
    assert result.train_rows + result.holdout_rows == len(data)
    assert abs(result.holdout_rows / len(data) - 0.2) < 0.01


def test_the_model_separates_fraud_on_the_later_rows(result: TrainResult) -> None:
    holdout = result.holdout
    assert holdout["auc"] > 0.85
    assert 0 < holdout["precision"] <= 1 and 0 < holdout["recall"] <= 1
    assert result.metadata.threshold == pytest.approx(holdout["threshold"])


def test_metadata_lists_features_in_column_order_with_their_sources(result: TrainResult) -> None:
    specs = result.metadata.features
    assert [s.name for s in specs] == list(FEATURES)
    velocity = specs[1]
    assert (velocity.source, velocity.view, velocity.field) == ("online", "card_velocity", "txn_count_1h")
    assert specs[0].source == "request"


def test_reference_profile_reads_back_in_the_monitor(result: TrainResult) -> None:
    profile = ReferenceProfile.from_dict({**result.metadata.reference_profile, "model": "fraud", "version": 1})
    assert list(profile.features) == list(FEATURES)
    amount = profile.numeric["amount"]
    assert len(amount.edges) + 1 == len(amount.fractions) and abs(sum(amount.fractions) - 1) < 1e-9
    assert 0 < len(amount.sample) <= 1000
    assert profile.score is not None and 0 <= profile.score.mean <= 1
    assert profile.threshold == pytest.approx(result.metadata.threshold)


def test_logistic_regression_exports_faithfully_too(export: Path) -> None:
    fitted = train(TrainConfig(export=export, kind="logreg"))
    assert fitted.max_onnx_error <= 1e-5 and fitted.holdout["auc"] > 0.8


def test_bad_exports_are_refused_with_the_reason(tmp_path: Path) -> None:
    base = {"event_id": ["a", "b", "c"], "event_ts": [1, 2, 3], "label": [0, 1, 0]}
    with pytest.raises(DatasetError, match="'country'"):
        from_table(pa.table({**base, "country": ["FR", "DE", "FR"]}))
    with pytest.raises(DatasetError, match="no label column"):
        from_table(pa.table({"event_id": ["a"], "event_ts": [1], "amount": [1.0]}))
    with pytest.raises(DatasetError, match="labels must be 0 or 1"):
        from_table(pa.table({**base, "label": [0, 2, 1], "amount": [1.0, 2.0, 3.0]}))
    with pytest.raises(DatasetError, match="no such file"):
        load_export(tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="need at least 5"):
        write(pa.table({**base, "amount": [1.0, 2.0, 3.0]}), tmp_path / "tiny.csv")
        train(TrainConfig(export=tmp_path / "tiny.csv"))


def test_plain_names_are_request_features_and_entity_from_keys_a_view() -> None:
    specs = feature_specs(["merchant_volume:txn_count_5m", "hour"], entity_from={"merchant_volume": "merchant"})
    assert (specs[0].view, specs[0].field, specs[0].entity_from) == ("merchant_volume", "txn_count_5m", "merchant")
    assert specs[1].source == "request"


def test_per_view_exports_join_on_the_event_id_as_online_features(table: pa.Table, tmp_path: Path) -> None:
    # The features service's layout: event_id, entity, ts, label, then the view's plain feature names.
    keys = {"event_id": table.column("event_id"), "entity": table.column("entity"), "ts": table.column("event_ts")}
    velocity = pa.table({**keys, "label": table.column("label"), "txn_count_1h": table["card_velocity.txn_count_1h"]})
    # The second view's file is in another order and lacks a few rows: the join keeps rows in both.
    amount = pa.table({**keys, "label": table.column("label"), "amount_mean_24h": table["card_amount.amount_mean_24h"]})
    amount = amount.slice(5).take(np.random.default_rng(0).permutation(amount.num_rows - 5))
    sources = (
        Source.parse(f"card_velocity={write(velocity, tmp_path / 'velocity.parquet')}"),
        Source.parse(f"card_amount={write(amount, tmp_path / 'amount.csv')}"),
    )
    data = load_export(sources)
    assert data.features == ("card_velocity.txn_count_1h", "card_amount.amount_mean_24h")
    expected = load_export(write(table, tmp_path / "all.parquet"), features=data.features)
    keep = np.isin(expected.ids, data.ids)
    assert np.array_equal(expected.ids[keep], data.ids) and np.allclose(expected.x[keep], data.x)
    fitted = train(TrainConfig(export=sources, kind="logreg"))
    specs = fitted.metadata.features
    assert [(s.source, s.view, s.field) for s in specs] == [
        ("online", "card_velocity", "txn_count_1h"),
        ("online", "card_amount", "amount_mean_24h"),
    ]
