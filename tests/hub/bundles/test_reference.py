"""The drift reference a bundle carries, built like the agent's telemetry so the two compare like for like."""

from __future__ import annotations

import numpy as np

from agent.telemetry import MAX_SKETCHED_FEATURES
from fleet.telemetry import ReferenceProfile
from fleet.wire.bundle import BundleManifest, Postprocess, SelfTest, TensorSpec
from fleet.wire.sketches import deserialize_sketch
from hub.bundles.reference import reference_profile


def _manifest(features: int, *, labels: list[str] | None = None, names: list[str] | None = None) -> BundleManifest:
    return BundleManifest(
        model="m", version="1.0.0", target="x86-onnx-cpu", runtime="onnxruntime", precision="fp32",
        model_file="model.onnx", input=TensorSpec(name="x", dtype="float32", shape=[-1, features]),
        postprocess=Postprocess(labels=labels or []), selftest=SelfTest(), feature_names=names or [],
    )  # fmt: skip


def test_features_predictions_and_confidence_follow_the_agents_rules() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.normal(3.0, 1.0, size=(500, 4))
    logits = np.zeros((500, 2))
    logits[:400, 0] = 10.0  # 400 confident "cat", 100 undecided (argmax 0 as well: a tie)
    profile = ReferenceProfile.model_validate(reference_profile(_manifest(4, labels=["cat", "dog"]), inputs, logits))
    assert sorted(profile.feature_sketches) == ["f0", "f1", "f2", "f3"]
    sketch = deserialize_sketch(profile.feature_sketches["f2"])
    assert sketch.n == 500 and abs(sketch.get_quantile(0.5) - np.median(inputs[:, 2])) < 0.1
    assert profile.predictions == {"cat": 500}
    assert profile.confidence is not None and sum(profile.confidence.counts) == 500
    assert profile.confidence.counts[-2] == 400  # softmax confidence ~1.0 lands in the top bucket


def test_manifest_feature_names_are_used_and_wide_inputs_are_not_sketched() -> None:
    named = reference_profile(_manifest(2, names=["age", "income"]), np.ones((10, 2)), None)
    assert sorted(named["feature_sketches"]) == ["age", "income"] and named["predictions"] == {}
    wide = reference_profile(_manifest(MAX_SKETCHED_FEATURES + 1), np.ones((10, MAX_SKETCHED_FEATURES + 1)), None)
    assert wide["feature_sketches"] == {}
