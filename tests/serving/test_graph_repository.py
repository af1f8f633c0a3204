"""`memx serve repo --backend onnxruntime|tensorrt`: Triton runs the package's step graph and
keeps each sequence's memory as implicit state. Triton's onnxruntime and tensorrt backends are
not installable here, so these repositories are checked structurally (against Triton's own
config schema from tritonclient, and against the package), and the serving graph is run in
ONNX Runtime under Triton's sequence semantics (START, implicit state carried per sequence,
only equal-width requests batched) for hundreds of segments against a local Stream."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from memx.errors import EngineError, RepositoryError
from memx.serving.repository import RepositoryOptions, check_repository, pending_plan, write_repository
from memx.serving.serving_graph import LENGTHS, START, TOKENS
from tests.package_cache import exported_factory
from tests.test_cli_errors import memx_cli

SINGLE_GRAPH_ZOO = ["rmt-ar", "gmat-majority", "infformer-sort", "memtr-majority"]
BYO = ["tests.models.byo_models:make_xl", "tests.models.byo_models:make_seq2seq", "tests.models.byo_models:make_kv"]


def _package(name, package_of):
    return exported_factory(name) if ":" in name else package_of(name)


def _triton_schema(text: str):
    """config.pbtxt parsed by Triton's own ModelConfig message (unknown fields and bad enum words fail)."""
    from google.protobuf import text_format

    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
@pytest.mark.parametrize("name", SINGLE_GRAPH_ZOO + BYO)
def test_graph_repositories_parse_as_triton_configs_with_every_state_paired_by_name(name, backend, package_of, tmp_path):
    import onnx

    pkg = _package(name, package_of)
    m = pkg.manifest
    repo = write_repository(pkg, tmp_path / "repo", RepositoryOptions(name="m", backend=backend, max_batch=8))
    check_repository(repo, "m")
    cfg = _triton_schema((repo / "m" / "config.pbtxt").read_text())
    assert cfg.backend == backend and cfg.max_batch_size == 8
    assert cfg.default_model_filename == ("model.plan" if backend == "tensorrt" else "model.onnx")
    seq = cfg.sequence_batching
    assert [(c.name, [k.kind for k in c.control], list(c.control[0].bool_false_true)) for c in seq.control_input] == \
        [(START, [seq.Control.CONTROL_SEQUENCE_START], [False, True])]
    pairs = {s.input_name: (s.output_name, list(s.dims), [(i.zero_data, list(i.dims)) for i in s.initial_state]) for s in seq.state}
    assert pairs == {s.input: (s.output, list(s.shape[1:]), [(True, list(s.shape[1:]))]) for s in m.state}
    assert [i.name for i in cfg.input] == [TOKENS, LENGTHS, *(i.name for i in m.inputs)]
    assert [o.name for o in cfg.output] == [o.name for o in m.outputs]
    graph_file = repo / "m" / "1" / ("serving.onnx" if backend == "tensorrt" else "model.onnx")
    model = onnx.load(str(graph_file))
    onnx.checker.check_model(model, full_check=True)
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for o in model.graph.output}
    assert graph_inputs == {TOKENS, LENGTHS, START, *(i.name for i in m.inputs), *(s.input for s in m.state)}
    assert {s.output for s in m.state} <= graph_outputs and {o.name for o in m.outputs} <= graph_outputs
    assert pending_plan(repo, "m") == (backend == "tensorrt")
    assert not (repo / "m" / "1" / "package").exists() and (repo / "m" / "1" / "memx.json").is_file()


def _serve_like_triton(session, m, tokens, lengths, reset, extras, states, started, rng):
    """One step of every sequence the way Triton's sequence batcher runs the serving graph: each
    request carries its row padded to the step's width with its length; Triton batches whichever
    of these equal-shaped requests are queued together (here: a random partition of the rows);
    START on a sequence's first request and after a reset; the implicit state carried per
    sequence (zero initial data at START). Returns the outputs as a local Stream's."""
    B, S = tokens.shape
    outs = {o.name: np.zeros([B] + [S if d == "segment" else d for d in o.shape[1:]], np.dtype(o.dtype)) for o in m.outputs}
    cuts = sorted(rng.choice(np.arange(1, B), size=int(rng.integers(0, B)), replace=False).tolist())
    for rows in np.split(rng.permutation(B), cuts):
        feed = {TOKENS: tokens[rows], LENGTHS: lengths[rows].astype(np.int64), START: np.array([[not started[b] or bool(reset[b])] for b in rows])}
        feed.update({spec.name: extras[spec.name][rows] for spec in m.inputs})
        for s in m.state:
            feed[s.input] = np.stack([states[b][s.name] if started[b] and not reset[b] else np.zeros([int(d) for d in s.shape[1:]], np.dtype(s.dtype))
                                      for b in rows])
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        for o in m.outputs:
            outs[o.name][rows] = got[o.name]
        for i, b in enumerate(rows):
            states[b] = {s.name: got[s.output][i] for s in m.state}
            started[b] = True
    return outs


@pytest.mark.parametrize("name", ["infformer-sort", "gmat-majority", "tests.models.byo_models:make_seq2seq", "tests.models.byo_models:make_xl"])
def test_the_serving_graph_under_triton_semantics_continues_like_a_local_stream(name, package_of, tmp_path):
    """6 sequences x 300 segments, ragged lengths, batched in changing groups, 3% resets: every
    output and every state equal to a local Stream's (<= 1e-5 relative). (For families whose
    initial memory is learned, gmat and seq2seq here, this fails if START is not mapped onto reset.)"""
    import onnxruntime as ort

    import memx.runtimes

    pkg = _package(name, package_of)
    m = pkg.manifest
    repo = write_repository(pkg, tmp_path / "repo", RepositoryOptions(name="m", backend="onnxruntime"))
    session = ort.InferenceSession(str(repo / "m" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    B, S, steps = 6, m.segment["max"], 300
    local = memx.runtimes.open(pkg).stream(B)
    rng = np.random.default_rng(7)
    states: list[dict] = [{} for _ in range(B)]
    started = [False] * B
    worst = 0.0
    for step in range(steps):
        tokens = rng.integers(0, m.vocab_size, size=(B, S))
        lengths = rng.integers(max(1, m.segment["min"]), S + 1, size=B)
        reset = rng.random(B) < 0.03
        extras = m.sample_inputs(rng, B, S)
        want = local.step(tokens, lengths, reset, **extras)
        got = _serve_like_triton(session, m, tokens, lengths, reset, extras, states, started, rng)
        for k in want:
            worst = max(worst, _relative_difference(want[k], got[k]))
        for s in m.state:
            worst = max(worst, _relative_difference(local.state[s.name], np.stack([states[b][s.name] for b in range(B)])))
    assert worst <= 1e-5, f"{name}: max relative difference {worst:.3g} over {steps} segments"


def _relative_difference(want: np.ndarray, got: np.ndarray) -> float:
    """max |want - got| / max(1, max |want|) (bool and int tensors as numbers)."""
    assert want.shape == got.shape and want.dtype == got.dtype, (want.shape, got.shape, want.dtype, got.dtype)
    a, b = want.astype(np.float64), got.astype(np.float64)
    return float(np.max(np.abs(a - b), initial=0.0)) / max(1.0, float(np.max(np.abs(a), initial=0.0)))


def _edit(repo, old, new, count=1):
    path = repo / "m" / "config.pbtxt"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))


@pytest.mark.parametrize("edit, match", [
    # the swap bug (Triton server#8586): ltm0 and stm0 have the same shape, so Triton would carry the swap silently
    (lambda r: (_edit(r, 'output_name: "state_out.ltm0"', 'output_name: "TMP"'), _edit(r, 'output_name: "state_out.stm0"', 'output_name: "state_out.ltm0"'),
                _edit(r, 'output_name: "TMP"', 'output_name: "state_out.stm0"')), "pairs state input 'state_in.ltm0' with another state's output"),
    (lambda r: _edit(r, "zero_data: true", "zero_data: false"), "needs zero initial data"),
    (lambda r: _edit(r, "dims: [ 16, 64 ]\n    initial_state", "dims: [ 64, 16 ]\n    initial_state"), "state 'ltm0' does not match"),
    (lambda r: _edit(r, "bool_false_true: [ false, true ]", "int32_false_true: [ 0, 1 ]"), "START must reach the graph as a bool"),
    (lambda r: _edit(r, 'input_name: "state_in.has_ltm"', 'input_name: "state_in.ltm1"'), "state entries are not the package's states"),
])
def test_a_graph_repository_with_states_paired_wrongly_is_refused(edit, match, package_of, tmp_path):
    repo = write_repository(package_of("infformer-sort"), tmp_path / "repo", RepositoryOptions(name="m", backend="onnxruntime"))
    edit(repo)
    with pytest.raises(RepositoryError, match=match):
        check_repository(repo, "m")


def test_a_serving_graph_out_of_step_with_the_config_is_refused(package_of, tmp_path):
    import onnx

    repo = write_repository(package_of("rmt-ar"), tmp_path / "repo", RepositoryOptions(name="m", backend="onnxruntime"))
    path = repo / "m" / "1" / "model.onnx"
    model = onnx.load(str(path))
    for i in model.graph.input:
        if i.name == START:
            i.name = "reset"
    onnx.save(model, str(path))
    with pytest.raises(RepositoryError, match="serving graph's input 'START'"):
        check_repository(repo, "m")


def test_what_a_graph_backend_cannot_serve_is_refused_naming_the_python_backend(package_of, tmp_path):
    for backend in ("onnxruntime", "tensorrt"):
        with pytest.raises(RepositoryError, match="python") as e:
            write_repository(package_of("memformer-majority"), tmp_path / "r", RepositoryOptions(name="m", backend=backend))
        assert e.value.actual == ["encoder", "decoder"]
    with pytest.raises(RepositoryError, match="snapshot store needs the python backend"):
        write_repository(package_of("rmt-ar"), tmp_path / "r", RepositoryOptions(name="m", backend="onnxruntime", snapshot_store="store"))
    with pytest.raises(RepositoryError, match="absolute path"):
        write_repository(package_of("gmat-majority"), tmp_path / "r", RepositoryOptions(name="m", backend="onnxruntime", op_library="lib/libmemx_ops.so"))
    assert not (tmp_path / "r").exists()
    repo = write_repository(package_of("gmat-majority"), tmp_path / "r", RepositoryOptions(name="m", backend="onnxruntime", op_library="/opt/memx/libmemx_ops.so"))
    assert list(_triton_schema((repo / "m" / "config.pbtxt").read_text()).model_operations.op_library_filename) == ["/opt/memx/libmemx_ops.so"]


def test_memx_serve_repo_tensorrt_leaves_the_plan_to_the_server_in_a_fresh_process(package_of, tmp_path):
    from memx.tensorrt.versions import installed_flavour

    pkg = package_of("rmt-ar")
    r = memx_cli("serve", "repo", pkg.path, "--out", tmp_path / "repo", "--name", "rmt", "--backend", "tensorrt", "--max-batch", "16")
    assert r.returncode == 0, r.stderr
    full_trt = (f := installed_flavour("tensorrt")) is not None and not f.rtx
    if full_trt:
        pytest.skip("full TensorRT is installed: the plan was built at once")
    said = " ".join(r.stdout.split())
    assert "memx serve plan" in said and pending_plan(tmp_path / "repo", "rmt"), said
    r = memx_cli("serve", "plan", tmp_path / "repo", "--name", "rmt")
    assert r.returncode == 2 and "EngineError" in r.stderr and "full TensorRT" in " ".join(r.stderr.split()) and "Traceback" not in r.stderr, r.stderr
    assert pending_plan(tmp_path / "repo", "rmt")
    r = memx_cli("serve", "repo", package_of("memformer-majority").path, "--out", tmp_path / "repo2", "--backend", "onnxruntime")
    assert r.returncode == 2 and "RepositoryError" in r.stderr and "--backend python" in " ".join(r.stderr.split()), r.stderr
    assert not (tmp_path / "repo2").exists()


@pytest.mark.trt_parser
def test_the_tensorrt_serving_graph_builds_into_a_plan_with_a_profile_up_to_max_batch(package_of, tmp_path):
    """Where only TensorRT-RTX is installed (this machine), the serving graph is still parsed and
    built ahead of time (for sm89): the plan Triton would load differs only in the builder."""
    from memx.serving.plan import build_plan, serving_engine
    from memx.tensorrt.versions import installed_flavour

    flavour = installed_flavour()
    if flavour is None:
        pytest.skip("no TensorRT builder installed")
    repo = write_repository(package_of("gmat-majority"), tmp_path / "repo", RepositoryOptions(name="m", backend="tensorrt", max_batch=16))
    if not flavour.rtx:
        plan = build_plan(repo, "m")
        assert plan.stat().st_size > 1000 and not pending_plan(repo, "m")
        return
    before = sorted(p.name for p in (repo / "m" / "1").iterdir())
    with pytest.raises(EngineError, match="full TensorRT"):
        build_plan(repo, "m")
    assert sorted(p.name for p in (repo / "m" / "1").iterdir()) == before
    build = serving_engine(repo / "m", flavour, target_cc="sm89", max_batch=16)
    assert len(build.plan) > 1000
    profile = build.tags.profiles[0]
    assert profile.batch == (1, 16, 16) and profile.shapes[START]["max"] == [16, 1] and profile.shapes[TOKENS]["max"][0] == 16
    assert all(v == "function body" for v in build.tags.custom_ops.values())
    shutil.rmtree(repo)


def test_a_served_stream_of_a_graph_backend_model_refuses_snapshots_typed():
    """Triton's implicit state cannot be read out: snapshot()/restore() say so before any request."""
    from types import SimpleNamespace

    from memx.errors import ServingError
    from memx.serving.client import ServedStream

    stream = ServedStream(SimpleNamespace(backend="onnxruntime", protocol="http"), 2)
    for call in (stream.snapshot, lambda: stream.restore(b"")):
        with pytest.raises(ServingError, match="python backend") as e:
            call()
        assert e.value.expected == "backend python" and e.value.actual == "onnxruntime"
    from memx.errors import InputError

    with pytest.raises(InputError, match="out of range"):  # checked like a local Stream's reset(rows)
        stream.reset([7])
    stream.close()  # nothing to end: the server's idle timeout releases graph-backend sequences


class _TritonLikeGraphModel:
    """What memx's client talks to on a graph backend, without Triton: each sequence id's
    implicit state kept here, START feeding zero initial state, the config's reshapes applied,
    one request run at a time through the serving graph in ONNX Runtime."""

    backend, protocol = "onnxruntime", "http"

    def __init__(self, session, manifest):
        self.session, self.m = session, manifest
        self.outputs = [o.name for o in manifest.outputs]
        self.states: dict[int, dict[str, np.ndarray]] = {}

    def infer(self, sid, arrays, *, start=False, region=None, **options):
        from types import SimpleNamespace

        from memx.errors import SequenceError

        if not start and sid not in self.states:
            raise SequenceError("must specify the START flag", expected="a live sequence", actual=sid)
        feed = dict(arrays, **{START: np.array([[start]])})
        for name in [LENGTHS, *(i.name for i in self.m.inputs if len(i.shape) == 1)]:  # config dims [1], reshape []: one value per row
            feed[name] = feed[name].reshape(-1)
        for s in self.m.state:
            feed[s.input] = self.states[sid][s.name] if not start else np.zeros([1, *(int(d) for d in s.shape[1:])], np.dtype(s.dtype))
        got = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feed)))
        self.states[sid] = {s.name: got[s.output] for s in self.m.state}
        return SimpleNamespace(as_numpy=lambda name: got[name])


@pytest.mark.parametrize("name", ["gmat-majority", "tests.models.byo_models:make_seq2seq"])
def test_memx_client_streams_on_a_graph_backend_continue_like_a_local_stream(name, package_of, tmp_path):
    """The client's one-sequence-per-row protocol (rows padded with their lengths, START on
    the first step and on reset rows, extra inputs) through the serving graph: 5 rows x 150
    segments equal a local Stream(5)."""
    import onnxruntime as ort

    import memx.runtimes
    from memx.serving.client import ServedStream

    pkg = _package(name, package_of)
    m = pkg.manifest
    repo = write_repository(pkg, tmp_path / "repo", RepositoryOptions(name="m", backend="onnxruntime"))
    served = ServedStream(_TritonLikeGraphModel(ort.InferenceSession(str(repo / "m" / "1" / "model.onnx")), m), 5)
    local = memx.runtimes.open(pkg).stream(5)
    rng = np.random.default_rng(5)
    worst = 0.0
    for step in range(150):
        width = int(rng.integers(1, m.segment["max"] + 1))
        tokens, lengths, reset = rng.integers(0, m.vocab_size, (5, width)), rng.integers(1, width + 1, 5), rng.random(5) < 0.04
        extras = m.sample_inputs(rng, 5, width)
        if step == 70:
            served.reset([2]), local.reset([2])
        want, got = local.step(tokens, lengths, reset, **extras), served.step(tokens, lengths, reset, **extras)
        worst = max(worst, *(_relative_difference(want[k], got[k]) for k in want))
    assert worst <= 1e-5, worst


def test_memx_serve_up_refuses_a_graph_repository_the_local_server_cannot_load(package_of, tmp_path):
    """nvidia-pytriton's tritonserver has only the python backend: say so before starting anything."""
    from memx.errors import ServingError
    from memx.serving.launcher import TritonServer

    repo = write_repository(package_of("rmt-ar"), tmp_path / "repo", RepositoryOptions(name="m", backend="onnxruntime"))
    with pytest.raises(ServingError, match="only the python backend") as e:
        TritonServer(repo)
    assert e.value.actual == "onnxruntime" and "tritonserver --model-repository" in e.value.hint
    r = memx_cli("serve", "up", repo)
    assert r.returncode == 2 and "ServingError" in r.stderr and "Traceback" not in r.stderr, r.stderr
