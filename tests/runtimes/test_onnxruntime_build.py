"""`memx build --backend onnxruntime` (memx.runtimes.onnxruntime_build): the graphs rewritten
into ONNX Runtime's fused CPU kernels ahead of time, checked over many segments against what
ONNX Runtime runs without them, written atomically into the package; runtimes on the CPU
provider run them from then on, without importing onnx, and give what the in-memory passes
give; a build its check refuses writes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from memx import runtimes
from memx.errors import BackendUnavailableError, BuildCheckError, InputError, ManifestError, PackageFileError
from memx.package.files import Package
from memx.runtimes.onnxruntime_build import BUILD_DIR, build_cpu, remove_cpu_build
from memx.runtimes.onnxruntime_passes import PASSES, register_pass
from memx.validation.drift import CpuBuildCheck, cpu_build_check
from tests.runtimes.test_onnxruntime_passes import worst_differences

CHECK_SEGMENTS = 24  # the build's check in these tests (memx build's default is 256)


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _copy(pkg: Package, tmp_path: Path, name: str = "pkg.memx") -> Path:
    dst = tmp_path / name
    shutil.copytree(pkg.path, dst)
    return dst


@pytest.fixture(scope="module")
def built_memtr(package_of, tmp_path_factory) -> Path:
    """memtr-majority (a zoo model with a task) with a checked CPU build."""
    path = _copy(package_of("memtr-majority"), tmp_path_factory.mktemp("build"))
    build_cpu(path, check=cpu_build_check(segments=CHECK_SEGMENTS, progress=False))
    return path


def test_build_records_the_graphs_and_the_check_in_the_manifest(built_memtr):
    pkg = Package.open(built_memtr)  # every listed file, the build's included, checked against its sha256
    entry = pkg.manifest.onnxruntime_cpu
    assert set(entry["graphs"]) == {"step"} and entry["graphs"]["step"].startswith(f"{BUILD_DIR}/step-")
    assert entry["graphs"]["step"] in pkg.manifest.files
    assert entry["passes"]["step"]["attention"] >= 1 and entry["passes"]["step"]["gelu"] >= 1
    check = entry["check"]
    assert check["passed"] and check["segments"] == CHECK_SEGMENTS and check["verdict"].startswith("PASS")
    assert "task_accuracy" in check["build"] and check["build"]["top1_agreement_mean"] >= check["exported"]["top1_agreement_mean"] - 0.005
    model = onnx.load(str(pkg.file(entry["graphs"]["step"])))
    ops = {n.op_type for n in model.graph.node}
    assert {"MultiHeadAttention", "FastGelu"} <= ops and "Softmax" not in ops


def test_runtimes_run_the_build_on_the_cpu_and_long_streams_agree_with_the_exported_graph(built_memtr):
    """300 segments with partial segments and resets: outputs and state of the build (the
    default on the CPU) against the graphs as exported (cpu_build=False)."""
    built = runtimes.open(built_memtr)
    plain = runtimes.open(built_memtr, cpu_build=False)
    assert built.backend.describe()["graph_files"]["step"].startswith(f"{BUILD_DIR}/")
    assert plain.backend.describe()["graph_files"]["step"] == "model.onnx"
    assert built.backend.describe()["graph_passes"]["step"]["attention"] >= 1
    worst_out, worst_state = worst_differences(plain, built, segments=300, vocab=built.manifest.vocab_size, reset_every=89, seed=1)
    assert worst_out < 1e-4 and worst_state < 1e-4, (worst_out, worst_state)


@pytest.fixture(scope="module")
def built_int8(quantized, tmp_path_factory) -> Path:
    """gmat-majority int8-qdq with a CPU build (no check): int8-matmul in its passes."""
    path = _copy(quantized("gmat-majority", "int8-qdq"), tmp_path_factory.mktemp("build-int8"))
    build_cpu(path)
    return path


@pytest.mark.parametrize("which", ["built_memtr", "built_int8"])
def test_opening_a_built_package_imports_no_onnx(which, request):
    built_memtr = request.getfixturevalue(which)
    code = ("import sys, numpy as np; from memx import runtimes; rt = runtimes.open(sys.argv[1]); s = rt.stream(1); "
            "s.step(np.zeros((1, rt.manifest.segment['max']), dtype=np.int64)); "
            "print(rt.backend.describe()['graph_files']['step'], 'onnx' in sys.modules, 'onnxruntime.transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(built_memtr)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    file, onnx_imported, transformers_imported = out.stdout.split()
    assert file.startswith(f"{BUILD_DIR}/") and onnx_imported == "False" and transformers_imported == "False"


def test_cpu_build_choices(built_memtr, package_of):
    with pytest.raises(BackendUnavailableError, match="no ONNX Runtime CPU build") as e:
        runtimes.open(package_of("rmt-tiny"), cpu_build=True)
    assert "memx build" in e.value.hint
    assert runtimes.open(package_of("rmt-tiny")).backend.describe()["graph_files"] == {"step": "model.onnx"}
    assert runtimes.open(built_memtr, cpu_build=True).backend.describe()["graph_files"]["step"].startswith(BUILD_DIR)
    with pytest.raises(InputError, match="cpu_build"):
        runtimes.open(built_memtr, cpu_build="sometimes")


def test_a_build_onnxruntime_cannot_load_runs_the_exported_graph_unless_required(built_memtr, tmp_path, caplog):
    """A build from an onnxruntime with a kernel this one lacks (here: a graph naming an op no
    build has): "auto" runs the graph as exported and says so; True is an error."""
    path = _copy(Package.open(built_memtr), tmp_path)
    pkg = Package.open(path)
    rel = pkg.manifest.onnxruntime_cpu["graphs"]["step"]
    model = onnx.load(str(pkg.file(rel)))
    next(n for n in model.graph.node if n.op_type == "FastGelu").op_type = "FastGeluFromTheFuture"
    onnx.save(model, str(pkg.file(rel)))
    from memx.package.files import file_info, update_manifest

    files = dict(pkg.manifest.files)
    files[rel] = file_info(pkg.file(rel))
    import dataclasses

    update_manifest(pkg, dataclasses.replace(pkg.manifest, files=files))
    with caplog.at_level("WARNING", logger="memx.runtimes.onnxruntime"):
        rt = runtimes.open(path)
    assert rt.backend.describe()["graph_files"]["step"] == "model.onnx"
    assert "FastGeluFromTheFuture" in rt.backend.describe()["cpu_build_refused"]["step"]
    assert "cannot load its CPU build" in caplog.text
    with pytest.raises(BackendUnavailableError, match="cannot load the CPU build"):
        runtimes.open(path, cpu_build=True)


def test_a_build_its_check_refuses_writes_nothing(package_of, tmp_path):
    """A pass that changes the function (every weight matrix 20% smaller) drifts beyond the
    gate: a typed error with the numbers, and the package byte for byte as it was."""

    @register_pass("test-perturb", "scales every 2-D weight by 0.8 (a wrong rewrite)")
    def perturb(model: onnx.ModelProto) -> int:
        done = 0
        for t in model.graph.initializer:
            if len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT:
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 0.8, t.name))
                done += 1
        return done

    try:
        path = _copy(package_of("memtr-majority"), tmp_path)
        before = _digest(path)
        with pytest.raises(BuildCheckError) as e:
            build_cpu(path, passes=["test-perturb"], check=cpu_build_check(segments=CHECK_SEGMENTS, progress=False))
        assert "FAIL" in e.value.actual and "top-1 agreement" in e.value.actual
        assert _digest(path) == before
        assert Package.open(path).manifest.onnxruntime_cpu is None
    finally:
        del PASSES["test-perturb"]


def test_rebuild_replaces_and_remove_takes_the_build_out(built_memtr, tmp_path):
    path = _copy(Package.open(built_memtr), tmp_path)
    first = Package.open(path).manifest.onnxruntime_cpu["graphs"]["step"]
    entry = build_cpu(path, passes=["gelu"])  # no check: the caller's choice
    assert "check" not in entry and set(entry["passes"]["step"]) == {"gelu"}
    pkg = Package.open(path)
    now = pkg.manifest.onnxruntime_cpu["graphs"]["step"]
    assert now != first and not (path / first).exists() and (path / now).is_file()
    assert sorted(p.relative_to(path).as_posix() for p in (path / BUILD_DIR).iterdir()) == [now]
    assert remove_cpu_build(path) is True
    pkg = Package.open(path)
    assert pkg.manifest.onnxruntime_cpu is None and not (path / BUILD_DIR).exists()
    assert not any(k.startswith(f"{BUILD_DIR}/") for k in pkg.manifest.files)
    assert remove_cpu_build(path) is False


def test_build_file_names_stay_inside_the_build_folder():
    from memx.runtimes.onnxruntime_build import build_file

    for name in ("../../evil", "a/b", "..", "", "décodeur"):
        folder, base = build_file(name, b"graph").split("/")
        assert folder == BUILD_DIR and base.endswith(".onnx") and not base.startswith(".") and "\\" not in base, base


def test_a_damaged_build_can_be_removed_and_rebuilt(built_memtr, tmp_path):
    path = _copy(Package.open(built_memtr), tmp_path)
    rel = Package.open(path).manifest.onnxruntime_cpu["graphs"]["step"]
    (path / rel).unlink()
    with pytest.raises(PackageFileError):
        Package.open(path)  # what every reader says of it
    build_cpu(path, passes=["gelu"])
    assert set(Package.open(path).manifest.onnxruntime_cpu["passes"]["step"]) == {"gelu"}
    rel = Package.open(path).manifest.onnxruntime_cpu["graphs"]["step"]
    (path / rel).write_bytes(b"not onnx")
    assert remove_cpu_build(path) is True
    assert Package.open(path).manifest.onnxruntime_cpu is None and not (path / BUILD_DIR).exists()
    (path / "model.onnx").write_bytes(b"damaged")  # damage elsewhere is still refused
    with pytest.raises(PackageFileError):
        build_cpu(path)


def test_a_build_that_fails_while_writing_takes_its_files_away(built_memtr, tmp_path, monkeypatch):
    from memx.runtimes import onnxruntime_build

    path = _copy(Package.open(built_memtr), tmp_path)
    before = _digest(path)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnxruntime_build, "update_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        build_cpu(path, passes=["gelu"])
    assert _digest(path) == before and Package.open(path).manifest.onnxruntime_cpu["passes"]["step"]["attention"] >= 1


def test_a_build_folder_that_is_a_link_is_refused(package_of, tmp_path):
    from memx.errors import UnsafePathError

    path = _copy(package_of("memtr-majority"), tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (path / BUILD_DIR).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="not a directory"):
        build_cpu(path)
    assert not any((tmp_path / "elsewhere").iterdir()) and Package.open(path).manifest.onnxruntime_cpu is None


def test_update_manifest_refuses_what_would_not_read_back(built_memtr, tmp_path):
    import dataclasses

    from memx.package.files import update_manifest

    path = _copy(Package.open(built_memtr), tmp_path)
    pkg = Package.open(path)
    before = (path / "memx.json").read_bytes()
    entry = {**pkg.manifest.onnxruntime_cpu, "check": {"output_max_error": float("nan")}}
    with pytest.raises(ManifestError, match="not valid JSON"):
        update_manifest(pkg, dataclasses.replace(pkg.manifest, onnxruntime_cpu=entry))
    assert (path / "memx.json").read_bytes() == before


def test_build_of_a_package_nothing_rewrites_is_an_input_error(tmp_path):
    """A user model without attention, GELU or Q/DQ (a bool memory of seen tokens): nothing to build."""
    from memx.exporter import export
    from tests.models import byo_models as byo

    pkg = export(byo.make_seen(), tmp_path / "seen.memx", verify_segments=0)
    before = _digest(pkg.path)
    with pytest.raises(InputError, match="memx's ONNX Runtime passes rewrite") as e:
        build_cpu(pkg.path)
    assert "nothing to build" in e.value.hint
    assert _digest(pkg.path) == before


def test_quantizing_a_built_package_leaves_the_build_behind(built_memtr, tmp_path):
    from memx.calibration import quantize_package

    out = quantize_package(built_memtr, tmp_path / "q.memx", method="int8-dynamic", progress=False).package
    assert out.manifest.onnxruntime_cpu is None and not (out.path / BUILD_DIR).exists()
    assert not any(k.startswith(f"{BUILD_DIR}/") for k in out.manifest.files)


def test_int8_qdq_build_passes_where_onnxruntime_itself_disagrees_with_the_literal_graph(quantized, tmp_path):
    """A Q/DQ graph: ONNX Runtime's own fusions already move activations across int8 steps
    (against the literal graph: not bit-equal); the build is held to that, not to bit equality."""
    path = _copy(quantized("gmat-majority", "int8-qdq"), tmp_path)
    entry = build_cpu(path, check=cpu_build_check(segments=CHECK_SEGMENTS, progress=False))
    assert entry["passes"]["step"]["int8-matmul"] >= 1 and entry["check"]["passed"]
    exported, build = entry["check"]["exported"], entry["check"]["build"]
    assert abs(build["task_accuracy"] - exported["task_accuracy"]) <= 0.005 + 1e-9


def test_cpu_build_check_gate():
    """The gate: no further from the literal graphs than ONNX Runtime's own run, with slack;
    a package without logits by its output and state errors; a non-finite error fails."""

    class Report:  # the parts of a DriftReport the gate reads
        def __init__(self, top1: float | None, kl: float = 0.0, acc: float | None = None, out: float = 0.0, state: float = 0.0):
            self.top1_agreement = [top1] if top1 is not None else []
            self.top1, self.kl, self.out, self.state = (top1 if top1 is not None else 1.0), kl, out, state
            self.task_accuracy = type("Acc", (), {"candidate": acc})() if acc is not None else None
            self.segments, self.batch = 8, 4

        def summary_numbers(self):
            return {"top1_agreement_mean": self.top1, "kl_mean": self.kl, "output_max_error": self.out, "state_rel_error_max": {"memory": self.state}}

    assert CpuBuildCheck(Report(0.94, 1e-3), Report(0.936, 1.4e-3)).passed
    assert not CpuBuildCheck(Report(0.94, 1e-3), Report(0.93, 1e-3)).passed  # 1 point lower top-1
    assert not CpuBuildCheck(Report(0.94, 1e-3), Report(0.94, 2e-3)).passed  # twice the KL
    assert CpuBuildCheck(Report(1.0, 0.0), Report(1.0, 5e-7)).passed  # float graphs: rounding only
    assert not CpuBuildCheck(Report(1.0, 0.0, 0.9), Report(1.0, 0.0, 0.89)).passed  # a point of task accuracy
    line = CpuBuildCheck(Report(0.94, 1e-3, 0.9), Report(0.94, 1e-3, 0.9)).verdict_line()
    assert line.startswith("PASS") and "task accuracy 90.00% vs 90.00%" in line
    # no logits: the largest output and state errors decide
    assert CpuBuildCheck(Report(None, out=1e-5, state=2e-6), Report(None, out=3e-5, state=2e-6)).passed
    failed = CpuBuildCheck(Report(None, out=1e-5, state=2e-6), Report(None, out=0.3, state=0.1))
    assert not failed.passed and "outputs 0.3 vs 1e-05" in failed.verdict_line()
    nan = CpuBuildCheck(Report(1.0, out=1e-5), Report(1.0, out=float("nan")))
    assert not nan.passed and nan.to_record()["build"]["output_max_error"] is None
    json.dumps(nan.to_record(), allow_nan=False)  # what memx.json keeps has no NaN


# --- the manifest field ------------------------------------------------------------------------


def _manifest_with(pkg: Package, entry) -> dict:
    data = json.loads(pkg.manifest.to_json())
    data["onnxruntime_cpu"] = entry
    return data


@pytest.mark.parametrize("entry, message", [
    ({"graphs": {"decoder": "model.onnx"}, "onnxruntime": "1.32.0", "passes": {}}, "unknown graph"),
    ({"graphs": {"step": "onnxruntime-cpu/missing.onnx"}, "onnxruntime": "1.32.0", "passes": {}}, "not listed in files"),
    ({"graphs": {}, "onnxruntime": "1.32.0", "passes": {}}, "is empty"),
    ({"graphs": {"step": "model.onnx"}, "onnxruntime": "1.32.0", "passes": {}, "extra": 1}, "unknown fields"),
    ({"graphs": {"step": "model.onnx"}, "passes": {}}, "onnxruntime_cpu.onnxruntime is missing"),
    ({"graphs": {"step": 3}, "onnxruntime": "1.32.0", "passes": {}}, "not listed in files"),
    ([], "wrong type"),
])
def test_manifest_refuses_a_malformed_cpu_build(package_of, entry, message):
    from memx.package.manifest import Manifest

    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(_manifest_with(package_of("rmt-tiny"), entry))


def test_manifest_round_trips_a_cpu_build_and_keeps_it_out_of_the_onnx_mirror(built_memtr):
    from memx.package.manifest import Manifest

    m = Package.open(built_memtr).manifest
    again = Manifest.from_json(m.to_json())
    assert again.onnxruntime_cpu == m.onnxruntime_cpu
    assert "onnxruntime_cpu" not in json.loads(m.mirror_json())


# --- the command line ----------------------------------------------------------------------------


def test_cli_builds_checks_shows_and_removes(package_of, tmp_path):
    from typer.testing import CliRunner

    from memx.cli import app

    cli = CliRunner()
    path = _copy(package_of("memtr-majority"), tmp_path)
    r = cli.invoke(app, ["build", str(path), "--backend", "onnxruntime", "--check-segments", "8", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout.strip().splitlines()[-1])
    assert data["onnxruntime_cpu"]["check"]["passed"] and data["onnxruntime_cpu"]["graphs"]["step"].startswith(f"{BUILD_DIR}/step-")
    r = cli.invoke(app, ["inspect", str(path)], env={"COLUMNS": "240"})
    assert r.exit_code == 0 and "ONNX Runtime CPU build" in r.output and "attention" in r.output, r.output
    r = cli.invoke(app, ["build", str(path), "--backend", "onnxruntime", "--passes", "atention"])
    assert r.exit_code == 2 and "did you mean 'attention'" in r.output
    r = cli.invoke(app, ["build", str(path), "--backend", "onnxruntime", "--check-segments", "-1"])
    assert r.exit_code == 2 and "--check-segments must not be negative" in r.output
    r = cli.invoke(app, ["build", str(path), "--backend", "onnxruntime", "--remove"])
    assert r.exit_code == 0 and "removed the ONNX Runtime CPU build" in r.output
    assert Package.open(path).manifest.onnxruntime_cpu is None
    r = cli.invoke(app, ["build", str(path), "--backend", "tvm"])
    assert r.exit_code == 2 and "onnxruntime" in r.output and "tensorrt" in r.output
    r = cli.invoke(app, ["build", str(path), "--remove"])  # a TensorRT build does not remove anything: refused, not ignored
    assert r.exit_code == 2 and "--remove is an option of the other backend" in " ".join(r.output.split())
    r = cli.invoke(app, ["build", str(path), "--backend", "onnxruntime", "--batch", "1,2,4", "--target-cc", "sm86"])
    assert r.exit_code == 2 and "--batch, --target-cc are options of the other backend" in " ".join(r.output.split())
    r = cli.invoke(app, ["profile", str(path), "--compare", "onnxruntime+exported,onnxruntime", "--segments", "4", "--warmup", "1", "--json"])
    assert r.exit_code == 0, r.output
