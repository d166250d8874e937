"""``transformer_optimize``: fuse a transformer's attention, skip LayerNorm and GELU into ONNX Runtime's
contrib operators before quantizing, so that int8 reaches the fused kernels (QAttention).

Two fusers are tried: ONNX Runtime's own (``onnxruntime.transformers.optimizer``, which knows the
graphs of the TorchScript-based exporter and of most ONNX files handed over) and onnxscript's
``ort_fusions`` (written for graphs of the dynamo exporter, which ONNX Runtime's patterns miss). The
graph with more fused attention nodes is kept, and the artifact records which fuser and which fused
operators (``meta.fusion``).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from converters.passes.onnx_passes import _onnx_artifact
from converters.pipeline import TransformerOptimizeStep
from converters.quiet import quiet_toolchains
from converters.types import Artifact, StepContext

ATTENTION_OPS = ("Attention", "MultiHeadAttention")
CONTRIB_DOMAIN = "com.microsoft"
# transformers' model_type -> the ONNX Runtime optimizer's model family
_ORT_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "distilbert": "bert",
    "albert": "bert",
    "electra": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "mpnet": "bert",
    "vit": "vit",
    "deit": "vit",
    "clip": "clip",
    "swin": "swin",
    "gpt2": "gpt2",
    "bart": "bart",
    "t5": "t5",
}


def model_geometry(module: Any) -> tuple[str | None, int, int]:
    """(ORT model type, attention heads, hidden size) from a PyTorch source: a ``transformers``
    config anywhere in the module tree, else the first ``nn.MultiheadAttention``; (None, 0, 0) if
    neither is there (the fusers then read both from the graph)."""
    if module is None or not hasattr(module, "modules"):
        return None, 0, 0
    import torch

    layers = list(module.modules())
    for layer in layers:
        config = getattr(layer, "config", None)
        heads = getattr(config, "num_attention_heads", None)
        hidden = getattr(config, "hidden_size", None)
        if isinstance(heads, int) and isinstance(hidden, int):
            return _ORT_MODEL_TYPES.get(str(getattr(config, "model_type", ""))), heads, hidden
    for layer in layers:
        if isinstance(layer, torch.nn.MultiheadAttention):
            return None, int(layer.num_heads), int(layer.embed_dim)
    return None, 0, 0


def fused_operators(model: Any) -> dict[str, int]:
    """How many nodes of each ONNX Runtime contrib operator a graph holds (what the fusers made)."""
    counts = Counter(n.op_type for n in model.graph.node if n.domain == CONTRIB_DOMAIN)
    return dict(sorted(counts.items()))


class TransformerOptimizePass:
    """``transformer_optimize``: the fused graph, or the graph unchanged (``meta.fusion`` says why)."""

    def __init__(self, config: TransformerOptimizeStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        import onnx

        detected_type, detected_heads, detected_hidden = model_geometry(self.context.source.module)
        model_type = self.config.model_type if self.config.model_type != "auto" else detected_type or "bert"
        heads = self.config.num_heads or detected_heads
        hidden = self.config.hidden_size or detected_hidden
        info: dict[str, Any] = {"model_type": model_type, "num_heads": heads, "hidden_size": hidden}
        errors: dict[str, str] = {}
        best: tuple[tuple[int, int], str, Any] | None = None
        for fuser in ("onnxruntime", "onnxscript"):
            try:
                with quiet_toolchains():
                    fused = _FUSERS[fuser](artifact.path, model_type, heads, hidden)
            except Exception as exc:  # a fuser that cannot read the graph leaves it to the other
                errors[fuser] = f"{type(exc).__name__}: {exc}"
                continue
            ops = fused_operators(fused)
            score = (sum(ops.get(op, 0) for op in ATTENTION_OPS), sum(ops.values()))
            if best is None or score > best[0]:
                best = (score, fuser, fused)
            if score[0]:
                break
        target = out / "model.onnx"
        if best is None or best[0] == (0, 0):
            shutil.copyfile(artifact.path, target)
            info.update(fuser=None, fused_ops={}, errors=errors or None)
        else:
            _, fuser, fused = best
            _fold_initializer_concats(fused)
            _drop_equal_qkv_sizes(fused)
            _import_contrib_domain(fused)
            onnx.save_model(fused, str(target))
            info.update(fuser=fuser, fused_ops=fused_operators(fused), errors=errors or None)
        return _onnx_artifact(artifact, out, artifact.precision, fusion=info)


def _ort_fuse(path: Path, model_type: str, heads: int, hidden: int) -> Any:
    """ONNX Runtime's Python fusions only (``opt_level=0``): the result stays portable across CPUs."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=0)
    return optimized.model


def _onnxscript_fuse(path: Path, model_type: str, heads: int, hidden: int) -> Any:
    """onnxscript's ORT fusions; they read heads and sizes from the graph itself."""
    from onnxscript import ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(ir.load(str(path)))
    return ir.to_proto(model)


_FUSERS = {"onnxruntime": _ort_fuse, "onnxscript": _onnxscript_fuse}


def _fold_initializer_concats(model: Any) -> None:
    """Replace Concat nodes of initializers by one initializer: a fused attention's packed Q/K/V
    weights must be a constant for the quantizer to make it a QAttention."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    consumers = Counter(name for node in model.graph.node for name in node.input)
    consumers.update(o.name for o in model.graph.output)
    folded: set[str] = set()
    for node in list(model.graph.node):
        if node.op_type != "Concat" or node.domain or not node.input:
            continue
        if not all(name in initializers for name in node.input):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        value = np.concatenate([numpy_helper.to_array(initializers[name]) for name in node.input], axis=axis)
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        model.graph.node.remove(node)
        consumers.subtract(node.input)
        folded.update(node.input)
    # an initializer read inside a subgraph (If, Loop) has consumers this count does not see
    subgraphs = any(a.g.node or a.graphs for node in model.graph.node for a in node.attribute)
    for name in folded:
        if consumers[name] <= 0 and not subgraphs:
            model.graph.initializer.remove(initializers[name])


def _drop_equal_qkv_sizes(model: Any) -> None:
    """Drop ``qkv_hidden_sizes`` from Attention nodes whose Q, K and V sizes are equal: the same
    meaning (equal thirds is the default), and ONNX Runtime's quantizer leaves an Attention that
    carries it in float instead of making it a QAttention."""
    for node in model.graph.node:
        if node.op_type != "Attention" or node.domain != CONTRIB_DOMAIN:
            continue
        sizes = [list(a.ints) for a in node.attribute if a.name == "qkv_hidden_sizes"]
        if sizes and len(set(sizes[0])) == 1:
            kept = [a for a in node.attribute if a.name != "qkv_hidden_sizes"]
            del node.attribute[:]
            node.attribute.extend(kept)


def _import_contrib_domain(model: Any) -> None:
    """Declare the contrib operators' domain (ONNX Runtime's fuser leaves it out): the quantizer's
    shape inference refuses a node of an undeclared domain."""
    import onnx

    used = any(node.domain == CONTRIB_DOMAIN for node in model.graph.node)
    if used and not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
