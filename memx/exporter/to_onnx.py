"""Export a segment step to a memx package (DESIGN.md §3) with torch.onnx (dynamo)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from safetensors.torch import load_file, save_file
from torch.export import Dim

import memx
from memx.errors import CheckpointError, ContractError, ExportError
from memx.exporter.manifest import (
    METADATA_KEY,
    GraphInfo,
    Manifest,
    OutputInfo,
    StateInfo,
    TensorInfo,
)
from memx.exporter.package import Package, file_info, sha256_file, staged_directory, write_text_atomic
from memx.exporter.step import StepModule, check_contract, example_inputs, state_input_name, state_output_name
from memx.models.base import SegmentModel

DEFAULT_OPSET = 18
GRAPH_FILE = "model.onnx"
WEIGHTS_FILE = "reference/weights.safetensors"
EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GiB go to model.onnx.data


def load_checkpoint(model: SegmentModel, path: str | os.PathLike) -> str:
    """Load a safetensors checkpoint strictly (names and shapes); returns its sha256."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise CheckpointError("checkpoints must be safetensors files", expected="*.safetensors", actual=p.name)
    if not p.is_file():
        raise CheckpointError("checkpoint not found", expected="an existing file", actual=str(p))
    try:
        tensors = load_file(str(p))
    except Exception as e:  # safetensors raises its own error types on bad headers
        raise CheckpointError(f"cannot read checkpoint {p.name}: {e}") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError("checkpoint does not fit the model", expected=f"missing none (missing {missing[:5]})", actual=f"unexpected {unexpected[:5]}")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(own[name].shape):
            raise CheckpointError(f"checkpoint tensor {name!r} has the wrong shape", expected=list(own[name].shape), actual=list(t.shape))
    model.load_state_dict(tensors, strict=True)
    return sha256_file(p)


def _tensor_infos(model: SegmentModel, segment_max: int) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph I/O of the contract; a package limited to 1-token segments has a static segment axis."""
    seg: int | str = 1 if segment_max == 1 else "segment"

    def dims(shape: tuple[int | str, ...]) -> list[int | str]:
        return [seg if d == "segment" else d for d in shape]

    specs = model.state_specs()
    inputs = [
        TensorInfo("tokens", "int64", ["batch", seg]),
        TensorInfo("lengths", "int64", ["batch"]),
        TensorInfo("reset", "bool", ["batch"]),
    ] + [TensorInfo(state_input_name(s.name), s.dtype, ["batch", *s.shape]) for s in specs]
    outputs = [TensorInfo(o.name, o.dtype, dims(o.shape)) for o in model.output_specs()]
    outputs += [TensorInfo(state_output_name(s.name), s.dtype, ["batch", *s.shape]) for s in specs]
    return inputs, outputs


@contextlib.contextmanager
def _quiet_export() -> Any:
    """torch.onnx prints progress and warnings meant for its developers; keep them for errors only."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _export_onnx(model: SegmentModel, path: Path, segment_max: int, opset: int, input_names: list[str], output_names: list[str]) -> None:
    n_state = len(model.state_specs())
    batch = Dim("batch", min=1, max=1 << 16)
    tokens_dims = {0: batch, 1: Dim("segment", min=1, max=segment_max)} if segment_max > 1 else {0: batch}
    dynamic = ((tokens_dims, {0: batch}, {0: batch}) + tuple({0: batch} for _ in range(n_state)),)
    args = example_inputs(model, batch=2, segment=min(segment_max, 8))
    with _quiet_export() as log:
        try:
            program = torch.onnx.export(
                StepModule(model), args, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                input_names=input_names, output_names=output_names, verbose=False,
            )
        except Exception as e:
            raise ExportError(f"torch.onnx could not export the {model.family} step: {type(e).__name__}: {str(e)[:2000]}\n{log.getvalue()[-2000:]}") from e
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(str(path), external_data=nbytes > EXTERNAL_DATA_THRESHOLD)


def _check_graph_io(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> onnx.ModelProto:
    proto = onnx.load(str(path), load_external_data=False)
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    if got_in != [t.name for t in inputs] or got_out != [t.name for t in outputs]:
        raise ExportError("exported graph does not have the contract's inputs/outputs", expected=([t.name for t in inputs], [t.name for t in outputs]), actual=(got_in, got_out))
    return proto


def _mirror_manifest(path: Path, proto: onnx.ModelProto, manifest: Manifest) -> None:
    """Write the manifest into metadata_props so a bare .onnx is self-describing."""
    kept = [p for p in proto.metadata_props if p.key not in (METADATA_KEY, "memx.format_version")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in kept}, METADATA_KEY: manifest.mirror_json(), "memx.format_version": str(manifest.format_version)})
    proto.producer_name, proto.producer_version = "memx", memx.__version__
    onnx.save(proto, str(path))


def build_manifest(model: SegmentModel, *, preset: str | None, segment_max: int, opset: int, checkpoint_sha256: str | None, task: str | None = None) -> Manifest:
    inputs, outputs = _tensor_infos(model, segment_max)
    return Manifest(
        family=model.family,
        preset=preset,
        config=model.config_dict(),
        vocab_size=model.vocab_size,
        segment={"min": 1, "max": segment_max},
        graphs=[GraphInfo(name="step", file=GRAPH_FILE, role="step", inputs=inputs, outputs=outputs)],
        state=[
            StateInfo(s.name, ["batch", *s.shape], s.dtype, "fp32" if s.dtype == "float32" else s.dtype, state_input_name(s.name), state_output_name(s.name), "step")
            for s in model.state_specs()
        ],
        outputs=[OutputInfo(t.name, t.dtype, t.shape, o.segment_axis, "step") for o, t in zip(model.output_specs(), outputs)],
        precision="fp32",
        provenance={
            "memx_version": memx.__version__,
            "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "opset": opset,
            "exporter": "torch.onnx(dynamo)",
            "checkpoint_sha256": checkpoint_sha256,
            "weights_sha256": model.weights_sha256(),
            "parameters": model.num_parameters(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node() or "unknown",
        },
        files={},
        reference={"weights": WEIGHTS_FILE},
        causal=model.is_causal,
        task=task,
    )


def export(
    model: SegmentModel,
    out_dir: str | os.PathLike,
    *,
    preset: str | None = None,
    segment_len: int | None = None,
    opset: int = DEFAULT_OPSET,
    checkpoint: str | os.PathLike | None = None,
    task: str | None = None,
    force: bool = False,
    verify_segments: int = 32,
    progress: Callable[[str], None] | None = None,
) -> Package:
    """Export ``model``'s segment step to the package ``out_dir``.

    The package is built in a staging directory, checked (graph I/O names, and
    parity against PyTorch over ``verify_segments`` segments unless 0), and only
    then renamed into place: a failed export leaves no package behind.
    """
    say = progress or (lambda _msg: None)
    if not isinstance(model, SegmentModel):
        raise ContractError("model does not implement the step contract", expected="a memx.models.SegmentModel", actual=type(model).__name__)
    model = model.eval()
    segment_max = segment_len or model.max_segment_len
    if not 1 <= segment_max <= model.max_segment_len:
        raise ExportError("segment length out of range for this model", expected=f"1..{model.max_segment_len}", actual=segment_max)
    if opset < 17:
        raise ExportError("opset too old (LayerNormalization needs 17)", expected=">= 17", actual=opset)
    checkpoint_sha = load_checkpoint(model, checkpoint) if checkpoint else None
    check_contract(model, max(1, min(segment_max, 8)))
    manifest = build_manifest(model, preset=preset, segment_max=segment_max, opset=opset, checkpoint_sha256=checkpoint_sha, task=task)
    graph = manifest.graph("step")
    with staged_directory(out_dir, force=force) as stage:
        say("exporting the step graph with torch.onnx (dynamo)")
        onnx_path = stage / GRAPH_FILE
        _export_onnx(model, onnx_path, segment_max, opset, [t.name for t in graph.inputs], [t.name for t in graph.outputs])
        proto = _check_graph_io(onnx_path, graph.inputs, graph.outputs)
        _mirror_manifest(onnx_path, proto, manifest)
        (stage / WEIGHTS_FILE).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(stage / WEIGHTS_FILE))
        for p in sorted(stage.rglob("*")):
            if p.is_file():
                manifest.files[p.relative_to(stage).as_posix()] = file_info(p)
        write_text_atomic(stage / "memx.json", manifest.to_json())
        if verify_segments:
            say(f"checking parity against PyTorch over {verify_segments} segments")
            from memx.exporter.parity import validate

            report = validate(stage, segments=verify_segments, progress=False)
            if not report.passed:
                raise ExportError(f"exported graph does not match PyTorch: {report.summary()}")
    return Package.open(out_dir)


def export_preset(name: str, out_dir: str | os.PathLike, *, seed: int = 0, **kwargs: Any) -> Package:
    """Export a zoo model (trained weights) or a preset (weights from ``seed`` unless a
    checkpoint is given)."""
    from memx.models import build_model, build_preset
    from memx.zoo import get_zoo, is_zoo

    if is_zoo(name):  # the zoo checkpoint unless the caller brings weights of the same config
        entry = get_zoo(name)
        checkpoint = kwargs.pop("checkpoint", None) or entry.checkpoint
        return export(build_model(entry.family, entry.config), out_dir, preset=name, task=entry.task, checkpoint=checkpoint, **kwargs)
    model = build_preset(name, seed=seed)
    return export(model, out_dir, preset=name, **kwargs)
