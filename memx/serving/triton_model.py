"""The Triton Python-backend model memx writes into a repository (``model.py`` imports this):
it reads the package named in config.pbtxt, keeps a stream per sequence in a
:class:`~memx.serving.sequences.SequenceServer` and turns Triton requests into its requests.
Runs only inside Triton's Python backend (``triton_python_backend_utils``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from memx.serving.sequences import Reply, Request, SequenceServer, error_text

CONTROLS = ("START", "END", "READY", "CORRID")
COMMAND_INPUT, SNAPSHOT_INPUT, SNAPSHOT_OUTPUT = "MEMX_COMMAND", "MEMX_SNAPSHOT", "MEMX_SNAPSHOT"


def parameter(config: dict[str, Any], key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from memx import runtimes

        config = json.loads(args["model_config"])
        here = Path(args["model_repository"]) / args["model_version"]
        package = here / parameter(config, "memx_package", "package")
        self.input_names = [i["name"] for i in config["input"] if i["name"] not in (COMMAND_INPUT, SNAPSHOT_INPUT, "TOKENS", "LENGTHS", "RESET")]
        self.output_names = [o["name"] for o in config["output"] if o["name"] != SNAPSHOT_OUTPUT]
        store = parameter(config, "memx_snapshot_store", "")
        self.server = SequenceServer(runtimes.open(package, verify=parameter(config, "memx_verify", "true") == "true"),
                                     max_batch=int(config.get("max_batch_size", 64)) or 64,
                                     idle_timeout_s=float(parameter(config, "memx_idle_timeout_s", "60")),
                                     store=(Path(args["model_repository"]) / store) if store else None,  # relative: to the model's directory
                                     store_ttl_s=float(ttl) if (ttl := parameter(config, "memx_snapshot_ttl_s", "")) else None)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb

        replies = self.server.handle([self._request(pb, r) for r in requests])
        return [self._response(pb, reply) for reply in replies]

    def _request(self, pb: Any, r: Any) -> Request:
        def tensor(name: str) -> Any:
            t = pb.get_input_tensor_by_name(r, name)
            return None if t is None else t.as_numpy()

        def scalar(name: str) -> Any:
            t = tensor(name)
            return None if t is None else t.reshape(-1)[0]

        tokens = tensor("TOKENS")[0]  # (R, S): the sequence's rows (Triton's batch axis is 1)
        command = scalar(COMMAND_INPUT)
        blob = scalar(SNAPSHOT_INPUT)
        lengths, reset = tensor("LENGTHS"), tensor("RESET")
        inputs = {name: t[0] for name in self.input_names if (t := tensor(name)) is not None}
        return Request(corrid=int(scalar("CORRID")), tokens=tokens.astype(np.int64, copy=False), start=bool(scalar("START")),
                       end=bool(scalar("END")), ready=bool(scalar("READY")), inputs=inputs,
                       lengths=None if lengths is None else lengths[0], reset=None if reset is None else reset[0],
                       command=command.decode() if isinstance(command, bytes) else (command or "step"), snapshot=bytes(blob) if blob is not None else None)

    def _response(self, pb: Any, reply: Reply) -> Any:
        if reply.error is not None:
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(error_text(reply.error)))
        tensors = []
        for name, value in reply.outputs.items():
            if name == SNAPSHOT_OUTPUT:
                tensors.append(pb.Tensor(name, np.array([[value]], dtype=np.object_)))
            else:
                tensors.append(pb.Tensor(name, np.ascontiguousarray(value)[None]))
        return pb.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        for corrid in list(self.server.streams):
            self.server.close(corrid)
