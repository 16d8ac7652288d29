"""int8 ONNX files: onnxruntime's dynamic quantization of a GFNet's matrix products.

onnxruntime's pre-processing (shape inference, graph optimization) runs first, as its
documentation asks, then ``quantize_dynamic``: weights stored as int8 per output channel,
activations quantized on the fly per tensor (``DynamicQuantizeLinear``, ``MatMulInteger``).
What is quantized: every ``MatMul`` whose second input is a stored weight, which is each MLP's
fc1 and fc2 and the classifier head (its ``Gemm`` is rewritten as ``MatMul`` + ``Add`` first,
since onnxruntime quantizes no ``Gemm`` dynamically). What stays fp32: the global filter's DFT
products (their constant DFT matrix is the first input; int8 would put the spectrum's error
where every token sees it), the patch embedding's convolution, LayerNorm and GELU. The
large fp32 weights left (the filters, the patch embedding, the position embedding) are stored
as fp16 with a ``Cast`` back to fp32, which onnxruntime folds when it loads the file: half the
bytes on disk, the arithmetic unchanged but for fp16's rounding of those weights.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from gfnet_cli.engine.onnx_model import import_onnxruntime
from gfnet_cli.errors import MissingDependencyError

logger = logging.getLogger(__name__)


def _gemm_as_matmul(model: Any) -> int:
    """Rewrite plain ``Gemm`` nodes (``A @ B.T + C``, B stored) as ``MatMul`` (+ ``Add``).

    Returns how many were rewritten; a Gemm with other attributes is left as it is.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "Gemm" or node.input[1] not in weights:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        stored = f"{node.input[1]}.matmul"
        graph.initializer.append(numpy_helper.from_array(weight.copy(), stored))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}.matmul" if has_bias else node.output[0]
        replacement = [
            helper.make_node(
                "MatMul", [node.input[0], stored], [product], name=f"{node.name}_MatMul"
            )
        ]
        if has_bias:
            replacement.append(
                helper.make_node(
                    "Add", [product, node.input[2]], list(node.output), name=f"{node.name}_Add"
                )
            )
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(position + offset, new)
        rewritten += 1
    return rewritten


def _weight_matmuls(model: Any) -> tuple[list[str], list[str]]:
    """(MatMul nodes with a stored weight as second input, all other MatMul nodes)."""
    stored = {init.name for init in model.graph.initializer}
    stored |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    weights, others = [], []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        (weights if node.input[1] in stored and node.input[0] not in stored else others).append(
            node.name
        )
    return weights, others


# fp32 weights with at least this many values are stored as fp16 (smaller ones: not worth it)
FP16_MIN_VALUES = 4096


def _store_rest_as_fp16(model: Any) -> int:
    """Store large fp32 weights not read by a MatMul as fp16 + ``Cast``; returns how many."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    by_matmul = {name for node in graph.node if node.op_type == "MatMul" for name in node.input}
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name in by_matmul:
            continue
        values = numpy_helper.to_array(init)
        if values.size < FP16_MIN_VALUES:
            continue
        name, stored = init.name, f"{init.name}.fp16"
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(
            helper.make_node("Cast", [stored], [name], name=f"{stored}_Cast", to=TensorProto.FLOAT)
        )
    for offset, cast in enumerate(casts):
        graph.node.insert(offset, cast)
    return len(casts)


def quantize_int8(source: Path, destination: Path) -> list[str]:
    """Write ``source`` (an fp32 GFNet ONNX file) as int8 to ``destination``.

    Returns the names of the quantized MatMul nodes.
    """
    import_onnxruntime("quantizing to int8")
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingDependencyError("quantizing to int8", "export") from None
    with tempfile.TemporaryDirectory(dir=destination.parent) as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        _gemm_as_matmul(model)
        quantized, kept = _weight_matmuls(model)
        onnx.save(model, str(prepared))
        quantize_dynamic(
            str(prepared),
            str(destination),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=quantized,
            nodes_to_exclude=kept,
        )
        model = onnx.load(str(destination))
        _store_rest_as_fp16(model)
        onnx.save(model, str(destination))
    logger.info(
        "int8: %d weight MatMuls quantized, %d DFT MatMuls kept fp32", len(quantized), len(kept)
    )
    return quantized
