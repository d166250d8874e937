"""Magnitude pruning of Linear and Conv weights, unstructured or structured, with optional fine-tuning."""

from __future__ import annotations

import copy
from typing import Any

from converters.errors import ConversionError
from converters.pipeline import PruneStep
from converters.source import SourceModel, module_digest
from converters.types import StepContext


def prunable(module: Any) -> list[tuple[Any, str]]:
    """(layer, "weight") pairs for every Linear and Conv layer of ``module``."""
    from torch import nn

    return [(m, "weight") for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def sparsity(module: Any) -> float:
    """Fraction of zero weights over the prunable layers."""
    layers = prunable(module)
    total = sum(layer.weight.numel() for layer, _ in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer, _ in layers)
    return zeros / total if total else 0.0


def prune_module(module: Any, amount: float, *, structured: bool) -> Any:
    """A pruned copy of ``module``: global L1 (unstructured) or per-layer L2 over output channels
    (structured: whole filters/rows are zeroed). Masks stay attached until `finalize`."""
    from torch.nn.utils import prune

    pruned = copy.deepcopy(module)
    layers = prunable(pruned)
    if not layers:
        raise ConversionError("nothing to prune: the model has no Linear or Conv layers", stage="prune")
    if structured:
        for layer, name in layers:
            if layer.weight.shape[0] > 1:
                prune.ln_structured(layer, name, amount=amount, n=2, dim=0)
    else:
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    return pruned


def finalize(module: Any) -> Any:
    """Make pruning permanent (drop masks and re-parametrisation)."""
    from torch.nn.utils import prune

    for layer, name in prunable(module):
        if prune.is_pruned(layer):
            prune.remove(layer, name)
    return module


def fine_tune(module: Any, context: StepContext, model: SourceModel, epochs: int, lr: float) -> None:
    """A few epochs of cross-entropy training on labelled training data (masks keep zeros at zero)."""
    import torch

    data = context.train or context.calibration
    if data.labels is None:
        raise ConversionError(
            "fine-tuning after pruning needs labelled training data",
            stage="prune",
            target=context.target.name,
        )
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    labels = torch.from_numpy(data.labels)
    module.train()
    for _ in range(epochs):
        start = 0
        for batch in data.batches(32):
            tensors = [torch.from_numpy(batch[n]) for n in model.input_names]
            target = labels[start : start + len(tensors[0])]
            start += len(tensors[0])
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(*tensors), target)
            loss.backward()
            optimiser.step()
    module.eval()


class PrunePass:
    """``prune``: zero the smallest-magnitude weights (or output channels), then optionally fine-tune."""

    def __init__(self, config: PruneStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def apply(self, model: SourceModel) -> SourceModel:
        if model.module is None or model.kind == "torchscript":
            raise ConversionError(
                "pruning needs a PyTorch nn.Module source", stage="prune", target=self.context.target.name
            )
        pruned = prune_module(model.module, self.config.amount, structured=self.config.structured)
        if self.config.finetune_epochs:
            fine_tune(pruned, self.context, model, self.config.finetune_epochs, self.config.learning_rate)
        finalize(pruned).eval()
        label = f"prune({'structured' if self.config.structured else 'unstructured'}, {self.config.amount:g})"
        return model.derived(pruned, module_digest(pruned), label)
