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
