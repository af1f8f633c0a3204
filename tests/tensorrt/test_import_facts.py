"""One set of facts about how TensorRT imports a package, whoever says it: memx doctor's fixes
name only what the target version can do (and the version a better import needs), memx inspect
shows the same plugin facts and the engines memx build added, and memx build refuses a package
doctor refuses with one typed error giving doctor's reasons."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from memx.cli import app
from memx.errors import EngineError, GraphImportError
from memx.exporter import Package
from memx.inspection import describe_package
from memx.package.files import file_info, update_manifest
from memx.tensorrt import diagnose
from memx.tensorrt import versions as tv
from memx.tensorrt.build import build_engines, parser_errors, plugin_mode
from memx.tensorrt.doctor import summarize
from memx.tensorrt.plugin import OP, installed_plugin_facts, plugin_facts
from memx.tensorrt.tags import BuildTags, Profile

V = tv.parse_version


def _memx_op_graph(tmp_path):
    """A graph with memx's attention op (a Relu standing in for its reference body)."""
    body = helper.make_function("memx", OP, ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])], [helper.make_opsetid("", 18)])
    node = helper.make_node(OP, ["x"], ["y"], domain="memx", name="lga")
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 8]) for n in ("x", "y"))
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("memx", 1)],
                              functions=[body])
    path = tmp_path / "lga.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _custom_op_finding(path, version):
    [f] = [f for f in diagnose(path, trt_version=version).findings if f.check == "custom_ops"]
    return f


def test_doctor_fix_for_memx_ops_follows_the_version(tmp_path):
    path = _memx_op_graph(tmp_path)
    old = _custom_op_finding(path, "10.3")  # JetPack 6: memx's plugin cannot be used there
    assert old.fix.startswith("nothing to do on TensorRT 10.3") and "needs TensorRT >= 10.6" in old.fix
    assert "reference body" in old.message and "10.6" in old.message
    jit = _custom_op_finding(path, "10.7")
    assert "JIT" in jit.message and "needs TensorRT >= 10.9" in jit.fix
    aot = _custom_op_finding(path, "11.4")
    assert "ahead of time" in aot.message and ">=" not in aot.fix  # nothing newer to ask for
    ancient = _custom_op_finding(path, "8.6")
    assert ancient.severity == "error" and "target TensorRT >= 9.0" in ancient.fix and "memx's own plugin needs TensorRT >= 10.6" in ancient.fix


def test_doctor_opset_fix_is_one_memx_can_follow(tmp_path):
    path = _memx_op_graph(tmp_path)
    [f] = [f for f in diagnose(path, trt_version="8.2").findings if f.check == "opset"]
    assert "--opset 13" not in f.fix and "target TensorRT >= 8.5" in f.fix  # memx cannot export opset 13
    [f] = [f for f in diagnose(path, trt_version="8.6").findings if f.check == "opset"]
    assert f.fix == "re-export with --opset 17 if the parser refuses a node"
    assert tv.min_version_for_opset(17) == V("8.5") and tv.min_version_for_opset(19) == V("9.0")


@pytest.mark.parametrize("version", ["8.6", "9.0", "10.3", "10.6", "10.8", "10.9", "11.4"])
def test_the_build_rule_and_the_facts_agree(version):
    v = V(version)
    facts = plugin_facts(OP, v)
    mode = tv.auto_plugin_mode(v)
    assert facts.mode == (mode if tv.local_functions_supported(v) else "none")
    if mode == "off":  # memx build --plugin auto takes the bodies there (the plugin modes need tensorrt.plugin to register)
        assert plugin_mode("auto", tv.Flavour("tensorrt", None, version)) == "off"
    assert plugin_facts(OP, v, rtx=True).mode == "off" and plugin_mode("auto", tv.Flavour("tensorrt-rtx", None, "1.7.1")) == "off"
    assert bool(facts.better) == (mode != "aot")  # only the ahead-of-time plugin leaves nothing to ask for


def test_inspect_shows_the_plugin_facts_doctor_uses(package_of):
    info = describe_package(package_of("gmat-tiny"))
    [op] = info["custom_op_kernels"]
    facts = installed_plugin_facts(op["op"], tv.installed_flavour())
    assert op["backends"]["tensorrt"] == facts.describe() and op["tensorrt"] == facts.to_dict()
    assert "shipped yet" not in op["backends"]["tensorrt"]
    no_trt = installed_plugin_facts(OP, None)
    assert no_trt.mode == "aot" and "none installed here" in no_trt.target


def _add_engine(path, *, tags: dict | None = None):
    """An engine entry as memx build writes it (a stand-in plan file; nothing deserializes it)."""
    pkg = Package.open(path)
    (path / "engines").mkdir()
    (path / "engines" / "step.plan").write_bytes(b"p" * 4096)
    entry = tags or BuildTags(graph="step", file="engines/step.plan", flavour="tensorrt-rtx", trt_version="1.7.1.116", compute_capability="sm89",
                              precision="fp32", strongly_typed=True, version_compatible=False, profiles=[Profile({}, (1, 2, 4), (1, 32, 32))],
                              custom_ops={"memx.LocalGlobalAttention": "function body"}, build_seconds=1.5).to_dict()
    files = {**pkg.manifest.files, "engines/step.plan": file_info(path / "engines" / "step.plan")}
    update_manifest(pkg, dataclasses.replace(pkg.manifest, files=files, engines=[entry]))


@pytest.fixture
def wide_console(monkeypatch):
    """The CLI's console as wide as a piped run's default (COLUMNS may be set narrow by the test runner)."""
    from memx.cli.app import out

    monkeypatch.setattr(out, "width", 200)


def test_inspect_shows_the_engines_memx_build_added(private_copy, wide_console):
    path = private_copy("gmat-tiny")
    runner = CliRunner()
    before = runner.invoke(app, ["inspect", str(path)])
    assert before.exit_code == 0 and "TensorRT engines: none (memx build adds them)" in " ".join(before.output.split())
    _add_engine(path)
    text = runner.invoke(app, ["inspect", str(path)])
    assert text.exit_code == 0, text.output
    # table cells wrap at spaces with the console's width: look for words that cannot wrap
    assert "TensorRT engines (memx build)" in text.output and all(w in text.output for w in ("engines/step.plan", "tensorrt-rtx", "1.7.1.116", "sm89", "1..32"))
    data = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).output)
    [e] = data["engines"]
    assert e["graph"] == "step" and e["bytes"] == 4096 and e["compute_capability"] == "sm89" and e["profiles"][0]["batch"] == [1, 2, 4]


def test_inspect_lists_an_engine_entry_it_cannot_read(private_copy, wide_console):
    path = private_copy("rmt-tiny")
    _add_engine(path, tags={"graph": "step", "file": "engines/step.plan"})  # edited by hand
    [e] = describe_package(Package.open(path))["engines"]
    assert e["graph"] == "step" and "malformed" in e["unreadable"]
    r = CliRunner().invoke(app, ["inspect", str(path)])
    assert r.exit_code == 0 and "memx cannot read" in r.output


def test_summarize_gives_each_reason_once_with_its_graphs():
    from memx.tensorrt.doctor import Finding

    found = [Finding("error", "unsupported_ops", g, f"does not import {op}", "use int8-qdq") for g in ("step", "decode") for op in ("A", "B")]
    what, fix = summarize(found)
    assert what == "does not import A (in step, decode); does not import B (in step, decode)" and fix == "use int8-qdq"
    many = [Finding("error", "x", "step", f"reason {i}") for i in range(6)]
    assert summarize(many, limit=2)[0].endswith("; and 4 more")


class _Err:
    def __init__(self, op, node, desc="false"):
        self.op, self.node, self.text = op, node, desc

    def node_operator(self):
        return self.op

    def node_name(self):
        return self.node

    def desc(self):
        return self.text

    def code(self):
        return "ErrorCode.UNSUPPORTED_NODE"


class _Parser:
    def __init__(self, errors):
        self.errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self.errors[i]


def test_parser_errors_are_summarized_not_repeated():
    text = parser_errors(_Parser([_Err("MatMulInteger", f"mm{i}") for i in range(40)] + [_Err("DynamicQuantizeLinear", "dq")]))
    assert text == "MatMulInteger: unsupported node (x40, e.g. node 'mm0'); DynamicQuantizeLinear: unsupported node (node 'dq')"
    assert "false" not in text
    assert parser_errors(_Parser([_Err("", "", "Network must have at least one output")])) == "graph: Network must have at least one output"


@pytest.mark.trt_parser
def test_build_refuses_int8_dynamic_with_one_clear_reason(quantized, tmp_path):
    flavour = tv.installed_flavour()
    if flavour is None or not flavour.rtx:
        pytest.skip("the refusal comes before any build; checked with TensorRT-RTX (full TensorRT needs a GPU to get that far)")
    path = shutil.copytree(quantized("rmt-tiny", "int8-dynamic").path, tmp_path / "q")
    before = (path / "memx.json").read_bytes()
    with pytest.raises(GraphImportError) as e:
        build_engines(path)
    msg = str(e.value)
    assert isinstance(e.value, EngineError)
    assert "int8-dynamic" in msg and "MatMulInteger" in msg and "DynamicQuantizeLinear" in msg and "not TensorRT-importable" in msg
    assert "memx quantize --method int8-qdq" in msg and f"memx doctor {path}" in msg
    assert "false" not in msg and msg.count("MatMulInteger") <= 3  # said once, not once per node
    assert "(in step, decode_open, decode)" in msg
    assert (path / "memx.json").read_bytes() == before and not (path / "engines").exists()
    r = CliRunner().invoke(app, ["build", str(path), "--no-decode"])
    assert r.exit_code == 2 and "GraphImportError" in r.output and "(in step)" in r.output
