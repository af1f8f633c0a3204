"""PyTorch reference backend: rebuilds the model from the manifest's family and config
and the package's reference weights (safetensors), and runs it eagerly."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from memx.errors import BackendUnavailableError, CheckpointError, PackageFileError
from memx.package.manifest import GraphInfo
from memx.package.files import Package
from memx.models.reference import build_reference
from memx.runtimes.base import Backend, check_graph_dtypes, register_backend
from memx.runtimes.resident import Binding, TorchDevice, torch_ready


@register_backend("torch")
class TorchBackend(Backend):
    """Options: ``threads`` (torch intra-op threads; default torch's own); where the model comes
    from when it is not a memx family: ``model`` (an instance), ``factory``
    ("package.module:function" or a callable), ``trust_package_factory`` (import the factory the
    package records) — see memx.models.reference."""

    def __init__(self, package: Package, *, device: str = "cpu", **options: Any):
        super().__init__(package, device=device, **options)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("CUDA is not available to torch", expected="a CUDA device", actual="torch.cuda.is_available() == False")
        m = package.manifest
        weights = m.reference.get("weights")
        if not weights:
            raise PackageFileError("package has no reference weights for the torch backend", expected="reference.weights in memx.json", actual="none")
        model = build_reference(m, model=options.get("model"), factory=options.get("factory"), trust_package_factory=bool(options.get("trust_package_factory")))
        check_graph_dtypes(m, {g.name: _model_dtypes(model) for g in m.graphs})  # as the ONNX Runtime backend checks its sessions
        tensors = _load_weights(package, weights)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"reference weights do not fit the {m.family} model: {e}") from None
        if options.get("threads"):
            torch.set_num_threads(int(options["threads"]))
        model = model.to(device).eval()
        self.modules = {g.name: model.graph_module(g.name) for g in m.graphs}  # each graph as the exporter saw it
        if m.decode is not None:  # the decode graphs, as the exporter saw them
            from memx.models.decode import DecodeGraph

            self.modules.update({g.name: DecodeGraph(model, g.role, m.decode.capacity) for g in m.decode.graphs})
        self._torch_device = torch.device(device)

    def run(self, graph: GraphInfo, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(torch_ready(feeds[t.name])).to(self._torch_device) for t in graph.inputs]
        with torch.inference_mode():
            out = self.modules[graph.name](*args)
        return {t.name: o.to("cpu").numpy() for t, o in zip(graph.outputs, out)}

    def resident(self) -> tuple["TorchExecutor", TorchDevice]:
        """State as torch tensors on this backend's device; CUDA graphs possible on CUDA."""
        device = TorchDevice(str(self._torch_device))
        return TorchExecutor(self.modules, self.package.manifest.graphs, device), device

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "torch": torch.__version__, "threads": torch.get_num_threads()}


def _load_weights(package: Package, weights: str) -> dict[str, torch.Tensor]:
    """The reference weights; a file safetensors cannot read is a PackageFileError naming it."""
    path = package.file(weights)
    try:
        return load_file(str(path))
    except OSError as e:
        raise PackageFileError(f"package file {weights!r} cannot be read", expected="a readable safetensors file", actual=f"{type(e).__name__}: {e.strerror or e}") from None
    except Exception as e:  # SafetensorError (a bad header, truncated data) and what the Rust side raises
        raise PackageFileError(f"package file {weights!r} is not a readable safetensors file", expected="safetensors weights", actual=f"{type(e).__name__}: {str(e)[:200]}") from None


def _model_dtypes(model: Any) -> dict[str, str]:
    """tensor name -> dtype of every step tensor the model's specs declare (what its graphs take and give)."""
    dtypes = {"tokens": "int64", "lengths": "int64", "reset": "bool"}
    dtypes.update({i.name: i.dtype for i in model.input_specs()})
    for s in model.state_specs():
        dtypes[f"state_in.{s.name}"] = dtypes[f"state_out.{s.name}"] = s.dtype
    dtypes.update({o.name: o.dtype for o in (*model.output_specs(), *model.intermediate_specs())})
    return dtypes


class TorchExecutor:
    """Calls each graph's module on the bound tensors and copies its results into the bound
    output buffers, on the device's stream. Every launch touches only preallocated tensors,
    so on CUDA it can be captured in a CUDA graph (static addresses, static shapes)."""

    name = "torch"

    def __init__(self, modules: dict[str, torch.nn.Module], graphs: list[GraphInfo], device: TorchDevice):
        self.modules, self.graphs, self.device = modules, list(graphs), device
        self._calls: list[tuple[torch.nn.Module, list[torch.Tensor], list[torch.Tensor]]] = []

    def bind(self, binding: Binding, stream_handle: int) -> None:
        self._calls = [(self.modules[g.name], [binding.inputs[t.name] for t in g.inputs], [binding.outputs[t.name] for t in g.outputs]) for g in self.graphs]

    def launch(self, stream_handle: int) -> None:
        self.device.run_on_stream(self._run)

    def _run(self) -> None:
        with torch.no_grad():
            for module, args, outs in self._calls:
                results = module(*args)
                for dst, src in zip(outs, results):
                    dst.copy_(src)
