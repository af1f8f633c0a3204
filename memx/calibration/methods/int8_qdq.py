"""int8-qdq: static int8 with explicit QuantizeLinear/DequantizeLinear pairs (ONNX Runtime
``quantize_static``, QDQ format): symmetric scales (zero point 0), per-channel weights, Q/DQ
only on the inputs of MatMul/Gemm: the form TensorRT's explicit quantization accepts. The
memory path is excluded under the default policy; custom memx ops stay float (their
reference bodies make ONNX Runtime's calibrator work without the kernel library). Each
consumer of an activation gets its own Q/DQ pair (``memx.calibration.qdq_fanout``), so ONNX
Runtime's CPU provider fuses every quantized MatMul on x86; MatMul outputs stay float (ONNX
Runtime runs each group as MatMulIntegerToFloat, memx's int8-matmul graph pass folds the bias
Add into it)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from memx.calibration.methods.base import CALIBRATION_METHODS, GraphJob, QuantMethod, register_method, unfit_weights
from memx.calibration.qdq_fanout import private_activation_qdq
from memx.onnxgraph import quiet_onnxruntime_tools
from memx.errors import QuantizationError


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


@register_method
class Int8QDQ(QuantMethod):
    name = "int8-qdq"
    precision = "int8-qdq"
    needs_calibration = True
    description = "static int8, symmetric, per-channel weights, Q/DQ on MatMul/Gemm inputs (TensorRT explicit quantization)"
    # False writes ONNX Runtime's shared activation Q/DQ pairs as they come (the writer before
    # memx.calibration.qdq_fanout; benchmarks/quantized_latency.py compares the two)
    _private_activation_qdq: ClassVar[bool] = True
    # True writes Q/DQ on MatMul/Gemm outputs too (quantize_static's default; the writer before
    # issue 22, compared in benchmarks/quantized_latency.py)
    _matmul_output_qdq: ClassVar[bool] = False

    def quantize(self, job: GraphJob) -> dict[str, Any]:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        if job.calibration not in CALIBRATION_METHODS:
            raise QuantizationError("unknown calibration method", expected=list(CALIBRATION_METHODS), actual=job.calibration)
        if not job.feeds:
            raise QuantizationError(f"no calibration inputs were recorded for graph {job.graph.name!r}", expected="at least one feed", actual=0)
        excluded = list(job.excluded_nodes)
        attention = bool(job.options.get("attention_qdq", False))
        if not attention:
            import onnx

            from memx.calibration.policy import activation_matmuls

            excluded += [n for n in activation_matmuls(onnx.load(str(job.source), load_external_data=False)) if n not in excluded]
        skipped = unfit_weights(job.source)
        excluded += [n for n in skipped if n not in excluded]
        cache = job.target.with_suffix(".calibration.json")
        ranges = self.calibrate(job, cache)
        try:
            with quiet_onnxruntime_tools():
                quantize_static(
                    str(job.source), str(job.target), None, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=excluded,
                    calibrate_method=_ort_method(job.calibration), calibration_cache_path=str(cache),
                    # biases stay float: TensorRT's explicit quantization refuses INT32 bias DequantizeLinear
                    # no Q/DQ on MatMul/Gemm outputs (NVIDIA's placement: quantize the inputs of weighted ops);
                    # ONNX Runtime then runs each group as MatMulIntegerToFloat with a float output
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "OpTypesToExcludeOutputQuantization": [] if self._matmul_output_qdq else ["MatMul", "Gemm"]},
                )
        except Exception as e:  # onnxruntime raises its own types
            raise QuantizationError(f"onnxruntime quantize_static failed on graph {job.graph.name!r}: {type(e).__name__}: {e}") from e
        rewired = float_inputs_for(job.target, set(job.excluded_nodes))
        private = private_qdq_for(job.target) if self._private_activation_qdq else 0
        return {"format": "QDQ", "activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel",
                "op_types": ["MatMul", "Gemm"], "calibration": job.calibration, "calibrated_tensors": ranges,
                "excluded_nodes": len(job.excluded_nodes), "attention_matmuls": "int8" if attention else "float",
                "calibration_cache": str(cache), "skipped_nodes": skipped,
                "float_inputs_restored": rewired, "private_activation_qdq": private}

    @staticmethod
    def calibrate(job: GraphJob, cache: Path) -> int:
        """Activation ranges over the rollout feeds, written as ONNX Runtime's calibration
        cache (quantize_static does not pass histogram settings to its entropy calibrator,
        so it runs here with 2048 bins, as TensorRT's entropy calibration does)."""
        try:
            from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
        except ImportError as e:
            raise QuantizationError("this onnxruntime has no calibration cache support", expected="onnxruntime >= 1.22", actual=str(e)) from None
        options: dict[str, Any] = {"symmetric": True}
        if job.calibration == "entropy":
            options.update(num_bins=2048, num_quantized_bins=128)
        elif job.calibration == "percentile":
            options.update(num_bins=2048, percentile=float(job.options.get("percentile", 99.999)))
        try:
            with tempfile.TemporaryDirectory(prefix="memx-calib-") as tmp, quiet_onnxruntime_tools():
                calibrator = create_calibrator(Path(job.source), ["MatMul", "Gemm"], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                               calibrate_method=_ort_method(job.calibration), extra_options=options)
                calibrator.collect_data(_Reader(job.feeds))
                ranges = calibrator.compute_data()
                _unify_ranges(ranges, job.options.get("range_groups") or [])
                _override_ranges(ranges, job.options.get("range_overrides") or {})
                save_tensors_data(ranges, cache)
        except QuantizationError:
            raise
        except Exception as e:
            raise QuantizationError(f"calibration ({job.calibration}) failed on graph {job.graph.name!r}: {type(e).__name__}: {e}") from e
        return len(ranges.data)


def float_inputs_for(path: Path, nodes: set[str]) -> int:
    """Feed ``nodes`` (kept float by the policy) the float tensors themselves: ONNX Runtime's Q/DQ
    quantizer hands every consumer of a quantized activation its dequantized copy, excluded
    consumers too (a memory projection reading a LayerNorm output that a token projection also
    reads), which would round what the policy keeps exact. Rewrites the file; returns how many
    inputs were restored."""
    import onnx

    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output if o}
    restored = 0
    for node in model.graph.node:
        if node.name not in nodes:
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":  # an activation Q/DQ pair (weights have no Q)
                node.input[k] = q.input[0]
                restored += 1
    if restored:
        onnx.save(model, str(path))
    return restored


def private_qdq_for(path: Path) -> int:
    """Give each consumer of a shared activation Q/DQ pair in the file ``path`` its own pair
    (:func:`memx.calibration.qdq_fanout.private_activation_qdq`: the same values, but ONNX
    Runtime fuses the MatMuls behind it on x86). Rewrites the file; returns how many pairs
    were added."""
    import onnx

    model = onnx.load(str(path))
    added = private_activation_qdq(model)
    if added:
        onnx.save(model, str(path))
    return added


def _unify_ranges(ranges: Any, groups: list[list[str]]) -> None:
    """Give every tensor of a group the union of their ranges (one scale for all of them)."""
    from onnxruntime.quantization.calibrate import TensorData

    for group in groups:
        found = [ranges.data[t].range_value for t in group if t in ranges.data]
        if len(found) < 2:
            continue
        low = np.array(min(float(np.min(r[0])) for r in found), np.float32)
        high = np.array(max(float(np.max(r[1])) for r in found), np.float32)
        for t in group:
            if t in ranges.data:
                ranges.data[t] = TensorData(lowest=low, highest=high)


def _override_ranges(ranges: Any, overrides: dict[str, tuple[float, float]]) -> None:
    """Replace calibrated ranges by given ones (a decode graph takes the step's, so both quantize
    the same activations with the same scale); tensors the calibrator did not see are added."""
    from onnxruntime.quantization.calibrate import TensorData

    for name, (low, high) in overrides.items():
        ranges.data[name] = TensorData(lowest=np.array(low, np.float32), highest=np.array(high, np.float32))


def _ort_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[name]
