"""A conversion's variants registered under one version, and each device served its target's variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hub.bundles.conversions import register_conversion
from hub.demo.model import TrainedDigits, train_digits
from tests.integration.fleet_harness import Harness, start_hub


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedDigits, Path, Path]:
    from converters.convert import convert

    root = tmp_path_factory.mktemp("conversion")
    trained = train_digits(root, epochs=30)
    vectors = root / "eval.npz"
    np.savez(vectors, input=((trained.test_x - trained.mean) / trained.std).astype(np.float32), labels=trained.test_y)
    convert(
        trained.onnx_path,
        ["x86-onnx-cpu", "intel-openvino"],
        root / "out",
        calib=vectors,
        eval=vectors,
        cache_dir=root / "cache",
        eval_limit=128,
        measure_budget_s=0.2,
        max_trials=2,
    )
    return trained, root / "out", vectors


def test_variants_register_and_each_device_gets_its_targets_variant(
    tmp_path: Path, converted: tuple[TrainedDigits, Path, Path]
) -> None:
    trained, out, vectors = converted
    hub = start_hub(tmp_path, None)
    harness = Harness(hub, tmp_path, trained)
    try:
        result = register_conversion(
            hub, out, version="2.0.0", vectors=vectors, model="digits", labels=[str(i) for i in range(10)]
        )
        registered = {r["variant"] for r in result.registered}
        assert {"x86-onnx-cpu/int8", "x86-onnx-cpu/fp32", "intel-openvino/int8"} <= registered
        pc = harness.agent("pc")
        nuc = harness.agent_on("nuc", "intel-openvino")
        states = harness.deploy("2.0.0", [pc, nuc])
        assert set(states.values()) == {"done"}, [harness.detail(a) for a in (pc, nuc)]
        x = ((trained.test_x[:64] - trained.mean) / trained.std).astype(np.float32)
        for agent, runtime in ((pc, "onnxruntime"), (nuc, "openvino")):
            model = agent.service.model
            assert model is not None and model.manifest.runtime == runtime and model.manifest.precision == "int8"
            answers = agent.service.predict(x.tolist())["predictions"]
            accuracy = np.mean([int(a["label"]) for a in answers] == trained.test_y[:64])
            assert accuracy >= 0.85
    finally:
        harness.close()


def test_cli_registers_a_conversion(tmp_path: Path, converted: tuple[TrainedDigits, Path, Path]) -> None:
    import json

    from typer.testing import CliRunner

    from agent.bundle import read_bundle
    from hub.app import Hub
    from hub.auth import Role
    from hub.cli import app
    from hub.config import HubSettings
    from tests.hub.cli.live_hub import serving

    _, out, vectors = converted
    contract = tmp_path / "contract.json"
    inferred = CliRunner().invoke(app, ["contract", "infer", str(vectors), "--out", str(contract)])
    assert inferred.exit_code == 0, inferred.output
    register = ["models", "register-conversion", str(out), "--vectors", str(vectors), "--model", "digits"]
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))  # the CLI uploads to it and asks it for drift
    try:
        with serving(hub, Role.OPERATOR) as hub_args:
            result = CliRunner().invoke(
                app, [*hub_args, *register, "--version", "3.1.0", "--contract", str(contract), "--json"]
            )
            bad = CliRunner().invoke(app, [*hub_args, *register, "--version", "three"])
            drift = CliRunner().invoke(app, [*hub_args, "drift", "report", "digits:3.1.0", "--json"])
    finally:
        hub.db.close()
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["version"] == "3.1.0" and len(body["registered"]) >= 3
    for registered in body["registered"]:  # every bundle carries the contract its devices check inputs against
        bundle = read_bundle(hub.store.path(registered["bundle_sha256"]))
        assert bundle.contract is not None and bundle.contract.input().name == "input"
    assert bad.exit_code == 1 and "not semantic versioning" in bad.output
    # the bundles carry a drift reference built from the vectors: `drift report` needs no --reference
    assert drift.exit_code == 0, drift.output
    assert "no drift reference" not in drift.output
    report = json.loads(drift.output)
    assert report["model"] == "digits" and report["version"] == "3.1.0"


def test_a_variant_exported_with_a_fixed_batch_of_one_says_so_in_its_manifest(
    tmp_path: Path, converted: tuple[TrainedDigits, Path, Path]
) -> None:
    """A ``torch.export`` without dynamic shapes converts to a model that takes one row: the manifest's batch of 1
    makes the agent run requests (and its self-test) row by row instead of failing the install."""
    import json
    import shutil

    from agent.runtimes import load_runtime
    from hub.bundles.conversions import prepare_conversion

    _, out, vectors = converted
    static = shutil.copytree(out, tmp_path / "out")
    report = json.loads((static / "report.json").read_text())
    for variant in report["variants"]:
        variant["meta"]["batch_dynamic"] = variant["target"] != "x86-onnx-cpu"
    (static / "report.json").write_text(json.dumps(report))
    prepared = prepare_conversion(static, version="1.0.0", vectors=vectors, model="digits")
    shapes = {v.name: v.manifest.input.shape for v in prepared.variants}
    assert shapes["x86-onnx-cpu/fp32"] == [1, 64] and shapes["intel-openvino/int8"] == [-1, 64], shapes
    fixed = next(v for v in prepared.variants if v.name == "x86-onnx-cpu/fp32")
    runtime = load_runtime(fixed.manifest, fixed.model_path.read_bytes())
    np.testing.assert_allclose(runtime.run(fixed.inputs), fixed.outputs, atol=1e-5)
