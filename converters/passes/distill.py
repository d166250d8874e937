"""Knowledge distillation: train a smaller student to match the source (teacher) model."""

from __future__ import annotations

import importlib
from typing import Any

from converters.errors import ConversionError
from converters.pipeline import DistillStep
from converters.source import SourceModel, module_digest
from converters.types import StepContext


def distillation_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float, alpha: float) -> Any:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    Without labels the loss is the distillation term alone.
    """
    import torch.nn.functional as F

    soft = (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
        )
        * temperature**2
    )
    if labels is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def distill(
    teacher: Any,
    student: Any,
    data: Any,
    input_names: tuple[str, ...],
    *,
    temperature: float,
    alpha: float,
    epochs: int,
    learning_rate: float,
    batch_size: int = 32,
    seed: int = 0,
) -> Any:
    """Train ``student`` on ``data`` (a `Dataset`) against ``teacher``; returns the student in eval mode."""
    import torch

    torch.manual_seed(seed)
    teacher.eval()
    student.train()
    optimiser = torch.optim.Adam(student.parameters(), lr=learning_rate)
    labels = None if data.labels is None else torch.from_numpy(data.labels)
    for _ in range(epochs):
        start = 0
        for batch in data.batches(batch_size):
            tensors = [torch.from_numpy(batch[name]) for name in input_names]
            count = len(tensors[0])
            with torch.no_grad():
                teacher_logits = teacher(*tensors)
            batch_labels = None if labels is None else labels[start : start + count]
            start += count
            optimiser.zero_grad()
            loss = distillation_loss(student(*tensors), teacher_logits, batch_labels, temperature, alpha)
            loss.backward()
            optimiser.step()
    return student.eval()


def load_factory(path: str) -> Any:
    """Import ``"package.module:factory"`` and return the callable."""
    module_name, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConversionError(f"cannot import student factory {path!r}: {exc}", stage="distill") from exc


class DistillPass:
    """``distill``: replace the source by a student distilled from it on the training data."""

    def __init__(self, config: DistillStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def apply(self, model: SourceModel) -> SourceModel:
        if model.module is None:
            raise ConversionError(
                "distillation needs a PyTorch teacher", stage="distill", target=self.context.target.name
            )
        student = load_factory(self.config.student)()
        data = self.context.train or self.context.calibration
        cfg = self.config
        trained = distill(
            model.module,
            student,
            data,
            model.input_names,
            temperature=cfg.temperature,
            alpha=cfg.alpha,
            epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
        )
        return model.derived(trained, module_digest(trained), f"distill({cfg.student})")
