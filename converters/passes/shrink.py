"""Remove the output channels structured pruning zeroed: a smaller graph, not just zeros.

A Conv/Linear layer's dead channels (weight rows and bias zero) are cut from it and the matching
input channels from the one layer that consumes it, when the path between them only holds
channel-wise operations (activations, pooling, dropout) or a ``flatten`` into a Linear layer. Layers
feeding anything else (residual adds, concatenations, normalization) keep their channels.
"""

from __future__ import annotations

import copy
from typing import Any

_PASS_THROUGH_MODULES = ("ReLU", "ReLU6", "GELU", "SiLU", "Tanh", "Sigmoid", "MaxPool2d", "AvgPool2d", "Dropout")
_PASS_THROUGH_FUNCTIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "max_pool2d", "avg_pool2d", "dropout")


def shrink(module: Any, example_inputs: tuple[Any, ...]) -> Any:
    """An ``fx.GraphModule`` computing what ``module`` computes, without its dead output channels."""
    import torch
    from torch import fx, nn
    from torch.fx.passes.shape_prop import ShapeProp

    graph_module = fx.symbolic_trace(copy.deepcopy(module))
    with torch.no_grad():
        ShapeProp(graph_module).propagate(*example_inputs)
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        layer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(layer, (nn.Linear, nn.Conv2d)) or getattr(layer, "groups", 1) != 1:
            continue
        consumer = _single_consumer(node, modules)
        if consumer is None:
            continue
        consumer_node, spatial = consumer
        keep = _live_channels(layer)
        if keep is None:
            continue
        _cut_outputs(layer, keep)
        _cut_inputs(modules[consumer_node.target], keep, spatial)
    graph_module.recompile()
    return graph_module


def _live_channels(layer: Any) -> Any:
    """Indices of output channels with a non-zero weight or bias; None if none are dead (or all are)."""
    import torch

    weight = layer.weight.detach().flatten(1)
    alive = weight.abs().sum(1) != 0
    if layer.bias is not None:
        alive |= layer.bias.detach() != 0
    if bool(alive.all()) or not bool(alive.any()):
        return None
    return torch.nonzero(alive).flatten()


def _single_consumer(node: Any, modules: dict[str, Any]) -> tuple[Any, int] | None:
    """(the Conv/Linear node consuming ``node`` through channel-wise ops, spatial size if flattened)."""
    from torch import nn

    spatial = 1
    current = node
    while True:
        users = list(current.users)
        if len(users) != 1:
            return None
        user = users[0]
        if user.op == "call_module":
            target = modules[user.target]
            if isinstance(target, (nn.Linear, nn.Conv2d)) and user.args[0] is current:
                expected = target.in_features if isinstance(target, nn.Linear) else target.in_channels
                channels = node.meta["tensor_meta"].shape[1]
                ungrouped = getattr(target, "groups", 1) == 1
                return (user, spatial) if expected == channels * spatial and ungrouped else None
            if isinstance(target, nn.Flatten) and target.start_dim == 1 and target.end_dim == -1:
                spatial = _spatial(current)
            elif type(target).__name__ not in _PASS_THROUGH_MODULES:
                return None
        elif user.op in ("call_function", "call_method"):
            name = getattr(user.target, "__name__", str(user.target))
            if name == "flatten" and _flattens_channels(user):
                spatial = _spatial(current)
            elif name not in _PASS_THROUGH_FUNCTIONS or user.args[0] is not current:
                return None
        else:
            return None
        current = user


def _flattens_channels(node: Any) -> bool:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _spatial(node: Any) -> int:
    shape = node.meta["tensor_meta"].shape
    size = 1
    for dim in shape[2:]:
        size *= int(dim)
    return size


def _cut_outputs(layer: Any, keep: Any) -> None:
    from torch import nn

    layer.weight = nn.Parameter(layer.weight.detach()[keep].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[keep].clone())
    if isinstance(layer, nn.Linear):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)


def _cut_inputs(layer: Any, keep: Any, spatial: int) -> None:
    import torch
    from torch import nn

    if spatial > 1:  # channel c of a flattened (C, H, W) map is features c*HW .. (c+1)*HW
        keep = (keep[:, None] * spatial + torch.arange(spatial)[None, :]).flatten()
    layer.weight = nn.Parameter(layer.weight.detach()[:, keep].clone())
    if isinstance(layer, nn.Linear):
        layer.in_features = len(keep)
    else:
        layer.in_channels = len(keep)
