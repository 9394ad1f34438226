"""Fit a scikit-learn pipeline and export it to ONNX with its preprocessing inside the graph.

The pipeline is median imputation (missing values), standardization and a
classifier (``mlp``: a small multi-layer perceptron, or ``logreg``: logistic
regression). The ONNX graph takes one ``float32 [batch, n]`` input named ``x`` and
answers one ``float32 [batch]`` output named ``score``, the probability of class 1;
no pickle ever leaves training. :func:`verify` checks that ONNX Runtime reproduces
``predict_proba`` before anything is registered.

Why not skl2onnx: its graphs put the preprocessing in the ``ai.onnx.ml`` domain
(``Imputer``, ``Scaler``, ``LinearClassifier``), which TensorRT cannot build, and its
tree converter (1.20) fails on this scikit-learn/onnx pair, so gradient-boosted
trees are not offered: a model that cannot be exported must not be trained.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

KINDS = ("mlp", "logreg")
INPUT = "x"
OUTPUT = "score"
OPSET = 17


class ExportMismatch(AssertionError):
    """ONNX Runtime's scores differ from scikit-learn's beyond the tolerance."""


def build(kind: str, *, seed: int) -> Pipeline:
    if kind == "mlp":
        classifier: MLPClassifier | LogisticRegression = MLPClassifier(
            hidden_layer_sizes=(32, 16),
            alpha=1e-3,
            max_iter=200,
            early_stopping=True,
            validation_fraction=0.15,
            n_iter_no_change=10,
            random_state=seed,
        )
    elif kind == "logreg":
        classifier = LogisticRegression(max_iter=2000, C=1.0)
    else:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("classify", classifier),
        ]
    )


def fit(kind: str, x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> Pipeline:
    """Fit on float32-rounded inputs, the precision serving will feed the graph."""
    if len(np.unique(y)) < 2:
        raise ValueError("the training rows hold a single class; need both frauds and legitimate ones")
    pipeline = build(kind, seed=seed)
    pipeline.fit(x.astype(np.float32), y)
    return pipeline


def scores(pipeline: Pipeline, x: np.ndarray) -> np.ndarray:
    """scikit-learn's probability of class 1 on float32-rounded inputs."""
    result: np.ndarray = pipeline.predict_proba(x.astype(np.float32))[:, 1]
    return result


def export(pipeline: Pipeline, n_features: int) -> bytes:
    """The fitted pipeline as ONNX: ``x: float32 [batch, n]`` -> ``score: float32 [batch]``.

    Built with onnx's own helpers from standard operators only (no ``ai.onnx.ml``
    domain), so the same file runs on ONNX Runtime and builds a TensorRT engine:
    ``Where(IsNaN(x), median, x)``, ``(x - mean) / scale``, then the classifier's
    layers (``MatMul``, ``Add``, ``Relu``) and a ``Sigmoid`` on the single logit.
    """
    imputer: SimpleImputer = pipeline.named_steps["impute"]
    scaler: StandardScaler = pipeline.named_steps["scale"]
    classifier = pipeline.named_steps["classify"]
    if imputer.statistics_.shape[0] != n_features:
        raise ValueError(f"the pipeline was fitted on {imputer.statistics_.shape[0]} features, not {n_features}")
    constants: dict[str, np.ndarray] = {
        "median": imputer.statistics_.astype(np.float32),
        "mean": np.asarray(scaler.mean_, dtype=np.float32),
        "scale": np.asarray(scaler.scale_, dtype=np.float32),
        "flat": np.array([-1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("IsNaN", [INPUT], ["missing"]),
        helper.make_node("Where", ["missing", "median", INPUT], ["imputed"]),
        helper.make_node("Sub", ["imputed", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["h0"]),
    ]
    if isinstance(classifier, MLPClassifier):
        if classifier.activation != "relu" or classifier.out_activation_ != "logistic":
            raise ValueError("only a relu MLP with a logistic output can be exported")
        layers = list(zip(classifier.coefs_, classifier.intercepts_, strict=True))
    elif isinstance(classifier, LogisticRegression):
        layers = [(classifier.coef_.T, classifier.intercept_)]
    else:
        raise ValueError(f"cannot export a {type(classifier).__name__}")
    current = "h0"
    for i, (weights, bias) in enumerate(layers):
        constants[f"w{i}"] = np.asarray(weights, dtype=np.float32)
        constants[f"b{i}"] = np.asarray(bias, dtype=np.float32)
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
        current = f"a{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes.append(helper.make_node("Sigmoid", [current], ["probability"]))
    nodes.append(helper.make_node("Reshape", ["probability", "flat"], [OUTPUT]))
    graph = helper.make_graph(
        nodes,
        "rtml_fraud",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(value, name=name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rtml-train")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    serialized: bytes = model.SerializeToString()
    return serialized


def onnx_scores(artifact: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    (result,) = session.run([OUTPUT], {INPUT: x.astype(np.float32)})
    return np.asarray(result, dtype=np.float64)


def verify(artifact: bytes, pipeline: Pipeline, x: np.ndarray, *, atol: float = 1e-5) -> float:
    """The largest |ONNX - scikit-learn| score difference over ``x``; :class:`ExportMismatch` above ``atol``."""
    ours = onnx_scores(artifact, x)
    theirs = scores(pipeline, x)
    if ours.shape != theirs.shape:
        raise ExportMismatch(f"ONNX answers shape {ours.shape}, scikit-learn {theirs.shape}")
    worst = float(np.max(np.abs(ours - theirs))) if len(x) else 0.0
    if not worst <= atol:
        raise ExportMismatch(f"ONNX scores differ from scikit-learn's by up to {worst:.3g} (tolerance {atol:g})")
    return worst
