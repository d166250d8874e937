"""Magnitude pruning of Linear and Conv weights, unstructured or structured, with optional fine-tuning.

Structured pruning removes the pruned output channels from the graph (`converters.passes.shrink`),
so the exported variant is smaller and faster; the source's ``notes["pruning"]`` has the parameter
count, weight bytes and eager latency before and after."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from converters.errors import ConversionError
from converters.passes.shrink import shrink
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
        for layer, name in layers[:-1]:  # the last layer's channels are the model's outputs
            if layer.weight.shape[0] > 1:
                prune.ln_structured(layer, name, amount=amount, n=2, dim=0)
                if layer.bias is not None:  # a removed channel outputs nothing, not its bias
                    rows = getattr(layer, f"{name}_mask").flatten(1).any(1).to(layer.bias.dtype)
                    prune.custom_from_mask(layer, "bias", rows)
    else:
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    return pruned


def finalize(module: Any) -> Any:
    """Make pruning permanent (drop masks and re-parametrisation)."""
    from torch.nn.utils import prune

    for layer, name in prunable(module):
        for parameter in (name, "bias"):
            if hasattr(layer, f"{parameter}_orig"):
                prune.remove(layer, parameter)
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
        if self.config.structured:
            pruned = shrink(pruned, model.torch_examples())
        label = f"prune({'structured' if self.config.structured else 'unstructured'}, {self.config.amount:g})"
        derived = model.derived(pruned, module_digest(pruned), label)
        notes = {"pruning": before_after(model.module, pruned, model.torch_examples())}
        return replace(derived, notes={**dict(model.notes), **notes})


def before_after(original: Any, pruned: Any, examples: tuple[Any, ...]) -> dict[str, Any]:
    """Parameter count, weight bytes and eager batch-1 latency of the module before and after."""
    import time

    import torch

    def latency_ms(module: Any) -> float:
        sample = tuple(t[:1] for t in examples)
        with torch.no_grad():
            for _ in range(3):
                module(*sample)
            timings = []
            for _ in range(20):
                tick = time.perf_counter()
                module(*sample)
                timings.append((time.perf_counter() - tick) * 1000)
        return round(sorted(timings)[len(timings) // 2], 4)

    def weights(module: Any) -> tuple[int, int]:
        tensors = list(module.state_dict().values())
        return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)

    (params_before, bytes_before), (params_after, bytes_after) = weights(original), weights(pruned)
    return {
        "parameters_before": params_before,
        "parameters_after": params_after,
        "weight_bytes_before": bytes_before,
        "weight_bytes_after": bytes_after,
        "latency_ms_before": latency_ms(original),
        "latency_ms_after": latency_ms(pruned),
        "measured_on": "this host, PyTorch eager, batch 1",
    }
