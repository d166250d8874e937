"""Source passes: magnitude pruning and knowledge distillation."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.convert import convert
from converters.passes.distill import distill
from converters.passes.prune import finalize, prune_module, sparsity
from tests.converters.conftest import Trained
from tests.converters.converter_models import TinyMLP

torch = pytest.importorskip("torch")


def test_unstructured_pruning_zeroes_the_smallest_weights(mlp: Trained) -> None:
    pruned = finalize(prune_module(mlp.model, 0.5, structured=False))
    assert sparsity(pruned) == pytest.approx(0.5, abs=0.01)
    assert sparsity(mlp.model) < 0.01  # the source is untouched
    kept = torch.cat([m.weight.flatten() for m in pruned.modules() if isinstance(m, torch.nn.Linear)])
    original = torch.cat([m.weight.flatten() for m in mlp.model.modules() if isinstance(m, torch.nn.Linear)])
    assert original[kept == 0].abs().max() <= original[kept != 0].abs().min()


def test_structured_pruning_removes_whole_output_channels(cnn: Trained) -> None:
    pruned = finalize(prune_module(cnn.model, 0.25, structured=True))
    weight = pruned.conv2.weight.detach()
    zero_rows = (weight.flatten(1).abs().sum(1) == 0).sum().item()
    assert zero_rows == round(0.25 * weight.shape[0])


def test_shrink_removes_dead_channels_and_keeps_the_function(cnn: Trained) -> None:
    from converters.passes.shrink import shrink

    pruned = finalize(prune_module(cnn.model, 0.5, structured=True))
    x = torch.from_numpy(cnn.eval.inputs["input"][:8])
    smaller = shrink(pruned, (x,))
    assert (smaller.conv1.out_channels, smaller.conv2.out_channels) == (8, 16)
    assert smaller.head.in_features == 16 * 4 * 4
    assert sum(p.numel() for p in smaller.parameters()) < 0.45 * sum(p.numel() for p in cnn.model.parameters())
    torch.testing.assert_close(smaller(x), pruned(x), atol=1e-5, rtol=1e-5)
    assert pruned.conv1.out_channels == 16  # the input module is untouched


def test_structured_pruning_in_a_pipeline_shrinks_the_variant(cnn: Trained, tmp_path: Path) -> None:
    prune = {"type": "prune", "amount": 0.5, "structured": True, "finetune_epochs": 4, "learning_rate": 5e-3}
    pruned = [prune, {"type": "onnx_export"}]
    common = {"example_inputs": cnn.example, "calib": cnn.calib, "eval": cnn.eval, "train": cnn.train}
    base = convert(cnn.model, ["x86-onnx-cpu"], tmp_path / "a", precisions=["fp32"], **common)
    report = convert(cnn.model, ["x86-onnx-cpu"], tmp_path / "b", pipelines={"x86-onnx-cpu": pruned}, **common)
    (variant,) = report.variants
    assert variant.size_bytes < 0.5 * base.variant("x86-onnx-cpu").size_bytes
    notes = variant.meta["pruning"]
    assert notes["parameters_after"] < 0.45 * notes["parameters_before"]
    assert notes["latency_ms_before"] > 0 and notes["latency_ms_after"] > 0
    assert variant.accuracy is not None and report.source_accuracy - variant.accuracy <= 0.05


def test_pruned_and_fine_tuned_variant_in_a_pipeline(mlp: Trained, tmp_path: Path) -> None:
    pipeline = [{"type": "prune", "amount": 0.5, "finetune_epochs": 2}, {"type": "onnx_export"}]
    report = convert(
        mlp.model,
        ["x86-onnx-cpu"],
        tmp_path / "out",
        example_inputs=mlp.example,
        calib=mlp.calib,
        eval=mlp.eval,
        train=mlp.train,
        pipelines={"x86-onnx-cpu": pipeline},
    )
    (variant,) = report.variants
    assert [s.type for s in variant.steps] == ["prune", "onnx_export"]
    assert variant.accuracy is not None and report.source_accuracy - variant.accuracy <= 0.03


def test_distillation_trains_a_smaller_student_towards_the_teacher(mlp: Trained) -> None:
    torch.manual_seed(1)
    student = TinyMLP(hidden=16)
    x = torch.from_numpy(mlp.eval.inputs["input"])
    teacher_top = mlp.model(x).argmax(1)
    before = (student(x).argmax(1) == teacher_top).float().mean().item()
    trained = distill(
        mlp.model, student, mlp.train, ("input",), temperature=4.0, alpha=0.7, epochs=8, learning_rate=1e-2
    )
    after = (trained(x).argmax(1) == teacher_top).float().mean().item()
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in mlp.model.parameters()) / 3
    assert after > 0.85 and after > before + 0.3


def small_student() -> torch.nn.Module:
    return TinyMLP(hidden=16)


def test_distill_step_in_a_pipeline(mlp: Trained, tmp_path: Path) -> None:
    pipeline = [
        {
            "type": "distill",
            "student": "tests.converters.test_prune_distill:small_student",
            "epochs": 6,
            "learning_rate": 1e-2,
        },
        {"type": "torchscript_export"},
    ]
    report = convert(
        mlp.model,
        ["torchscript-cpu"],
        tmp_path / "out",
        example_inputs=mlp.example,
        calib=mlp.calib,
        eval=mlp.eval,
        train=mlp.train,
        pipelines={"torchscript-cpu": pipeline},
    )
    (variant,) = report.variants
    assert variant.top1_agreement is not None and variant.top1_agreement > 0.8
    assert variant.size_bytes < report.variants[0].size_bytes + 1  # sanity: a file was written
