"""`memx serve plan`: the TensorRT plan of a tensorrt model repository, built from its serving graph.

Triton's tensorrt backend loads ``1/model.plan``, a plan of full TensorRT bound to the
server's GPU and TensorRT version, so the plan is built where the server runs (or in its
container). ``memx serve repo --backend tensorrt`` builds it at once when full TensorRT and a
GPU are here; otherwise it leaves the plan pending, and ``memx serve plan REPO --name N`` on
the server machine builds it. The plan takes the serving graph's inputs (TOKENS, START [B, 1],
the states) with one optimization profile: batch 1..max_batch_size, segment min..max of the
package. memx ops are imported through their model-local bodies, so the plan needs no plugin
library in Triton.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from memx.errors import EngineError, RepositoryError
from memx.package.manifest import MANIFEST_FILE, Manifest
from memx.serving import serving_graph
from memx.serving.repository import PLAN_FILE, SERVING_GRAPH_FILE, _one, check_repository
from memx.tensorrt import versions as tv
from memx.tensorrt.build import GraphBuild, _local_cc, build_graph, make_profile, parse_range

PLAN_TAGS_FILE = "plan.json"  # the plan's build tags, beside it


def serving_engine(model_dir: Path, flavour: tv.Flavour, *, target_cc: str, max_batch: int, segment: str | None = None) -> GraphBuild:
    """Build the serving graph of ``model_dir`` with ``flavour`` (no files written)."""
    m = Manifest.from_bytes((model_dir / "1" / MANIFEST_FILE).read_bytes())
    info = serving_graph.serving_graph_info(m)
    seg = parse_range(segment, name="--segment-len", default=(m.segment["min"], m.segment["max"], m.segment["max"]))
    profile = make_profile(info, (1, max_batch, max_batch), seg, m.segment)
    return build_graph(flavour, model_dir / "1" / SERVING_GRAPH_FILE["tensorrt"], info, [profile], target_cc=target_cc, precision=m.precision,
                       version_compatible=False, timing_cache=None, engine_file=PLAN_FILE, plugins="off")


def build_plan(repo: str | os.PathLike, name: str, *, segment: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Build ``repo/name/1/model.plan`` with full TensorRT on this machine's GPU; returns its path.
    The plan is written atomically; a failed build leaves the repository as it was."""
    model_dir = Path(repo) / name
    config = check_repository(repo, name)
    if _one(config, "backend") != "tensorrt":
        raise RepositoryError("only a tensorrt model has a plan", expected="backend tensorrt", actual=_one(config, "backend"))
    flavour = tv.installed_flavour("tensorrt")
    if flavour is None or flavour.rtx:
        raise EngineError("Triton's tensorrt backend loads plans of full TensorRT, which is not installed here",
                          expected="the tensorrt package of the server's TensorRT version", actual=flavour.name if flavour else "no TensorRT",
                          hint=f"run `memx serve plan {repo} --name {name}` on the server's machine (or in its Triton container)")
    cc = _local_cc()
    if cc is None:
        raise EngineError("full TensorRT builds for the local GPU, and none was found", expected="a CUDA GPU", actual="none",
                          hint="build the plan on the server's machine")
    if progress:
        progress(f"building {name}/1/{PLAN_FILE} (TensorRT {flavour.version}, {cc})")
    build = serving_engine(model_dir, flavour, target_cc=cc, max_batch=int(_one(config, "max_batch_size")), segment=segment)
    plan = model_dir / "1" / PLAN_FILE
    for path, data in ((plan, build.plan), (model_dir / "1" / PLAN_TAGS_FILE, json.dumps(build.tags.to_dict(), indent=1).encode())):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return plan
