"""Regression tests for issue 17's untyped CLI errors: `memx inspect` and `memx validate` on a
broken package print one line on stderr and exit 2, never a traceback. Each case runs the CLI in
a fresh process, as a user would (no Typer runner catching what the process would print)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from memx.exporter import Package

ROOT = Path(__file__).resolve().parents[1]


def memx_cli(*args: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80")  # 80 columns: a long message must still be one line
    return subprocess.run([sys.executable, "-c", "from memx.cli import main; main()", *map(str, args)], check=False, capture_output=True, text=True, env=env, timeout=300)


def _onnx_not_protobuf(d: Path) -> str:
    (d / "model.onnx").write_bytes(b"\x0a\xff\xff\xff" + b"not protobuf" * 8)
    return "model.onnx"


def _onnx_with_an_unknown_op(d: Path) -> str:  # onnxruntime: InvalidGraph at session creation
    m = onnx.load(str(d / "model.onnx"))
    m.graph.node[0].op_type = "NoSuchOp"
    onnx.save(m, str(d / "model.onnx"))
    return "model.onnx"


def _onnx_whose_types_disagree(d: Path) -> str:  # onnxruntime: Fail (type inference) at session creation
    m = onnx.load(str(d / "model.onnx"))
    next(i for i in m.graph.input if i.name.startswith("state_in.")).type.tensor_type.elem_type = TensorProto.DOUBLE
    onnx.save(m, str(d / "model.onnx"))
    return "model.onnx"


def _weights_corrupt(d: Path) -> str:  # SafetensorError
    (d / "reference" / "weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json" + b"\0" * 64)
    return "reference/weights.safetensors"


def _file_missing(d: Path) -> str:
    (d / "model.onnx").unlink()
    return "model.onnx"


def _manifest_not_utf8(d: Path) -> str:
    (d / "memx.json").write_bytes(b"\xff\xfe" + (d / "memx.json").read_bytes())
    return "memx.json"


def _manifest_nested_deeply(d: Path) -> str:  # json would raise RecursionError
    (d / "memx.json").write_text("[" * 100_000 + "]" * 100_000)
    return "memx.json"


def _weights_path_with_a_nul_byte(d: Path) -> str:  # ValueError: embedded null byte
    m = json.loads((d / "memx.json").read_text())
    m["reference"]["weights"] = "reference/w\u0000.safetensors"
    (d / "memx.json").write_text(json.dumps(m))
    return "NUL byte"


def _onnx_a_symlink_loop(d: Path) -> str:  # RuntimeError / OSError ELOOP from Path.resolve
    (d / "model.onnx").unlink()
    os.symlink("model.onnx", d / "model.onnx")
    return "model.onnx"


def _weights_a_symlink_loop(d: Path) -> str:
    w = d / "reference" / "weights.safetensors"
    w.unlink()
    os.symlink("weights.safetensors", w)
    return "reference/weights.safetensors"


def _manifest_a_symlink_loop(d: Path) -> str:
    (d / "memx.json").unlink()
    os.symlink("memx.json", d / "memx.json")
    return "memx.json"


def _rehash(d: Path) -> None:
    """Record the altered files' sizes and hashes, so only --verify's absence is not what catches them."""
    m = json.loads((d / "memx.json").read_text())
    for rel in m["files"]:
        p = d / rel
        if p.is_file():
            m["files"][rel] = {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    (d / "memx.json").write_text(json.dumps(m))


# case -> (how to break a copy of the package, commands that must refuse it, whether to rehash)
CASES = {
    "onnx-not-protobuf": (_onnx_not_protobuf, ("inspect", "validate"), True),
    "onnx-graph-onnxruntime-refuses-invalid-graph": (_onnx_with_an_unknown_op, ("validate",), True),
    "onnx-graph-onnxruntime-refuses-fail": (_onnx_whose_types_disagree, ("validate",), True),
    "weights-safetensors-corrupt": (_weights_corrupt, ("validate",), True),
    "file-missing": (_file_missing, ("inspect", "validate"), False),
    "manifest-not-utf8": (_manifest_not_utf8, ("inspect", "validate"), False),
    "manifest-deep-recursion": (_manifest_nested_deeply, ("inspect", "validate"), False),
    "path-with-nul-byte": (_weights_path_with_a_nul_byte, ("validate",), False),
    "onnx-symlink-loop": (_onnx_a_symlink_loop, ("inspect", "validate"), False),
    "weights-symlink-loop": (_weights_a_symlink_loop, ("inspect", "validate"), False),
    "manifest-symlink-loop": (_manifest_a_symlink_loop, ("inspect", "validate"), False),
}


def _args(command: str, pkg: Path) -> list[object]:
    if command == "inspect":
        return ["inspect", pkg, "--no-verify"]
    return ["validate", pkg, "--no-verify", "--segments", "2", "--no-record"]


def _assert_one_line_exit_2(r: subprocess.CompletedProcess, names: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error (") and names in lines[0], lines[0]


@pytest.mark.parametrize("case, command", [(c, cmd) for c, (_, cmds, _) in CASES.items() for cmd in cmds])
def test_cli_on_a_broken_package_prints_one_typed_line_and_exits_2_without_a_traceback(private_copy, case, command):
    pkg = private_copy("rmt-tiny")
    breaks, _, rehash = CASES[case]
    names = breaks(pkg)
    if rehash:
        _rehash(pkg)
    _assert_one_line_exit_2(memx_cli(*_args(command, pkg)), names)


@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_cli_on_a_package_path_that_is_a_symlink_loop_or_absent_exits_2_naming_it(tmp_path, command):
    loop = tmp_path / "loop.memx"
    os.symlink(loop.name, loop)
    for path in (loop, tmp_path / "absent.memx"):
        _assert_one_line_exit_2(memx_cli(*_args(command, path)), path.name)


def test_a_package_path_with_a_nul_byte_is_a_typed_error_in_the_library(tmp_path):
    from memx import runtimes
    from memx.errors import PackageError

    for path in (f"{tmp_path}/a\0b.memx", tmp_path / "a\0b.memx"):
        with pytest.raises(PackageError, match="package directory not found"):
            Package.open(path)
        with pytest.raises(PackageError, match="package directory not found"):
            runtimes.open(path)


def test_the_library_types_the_session_and_weights_errors_the_cli_used_to_show_as_tracebacks(private_copy):
    from memx import runtimes
    from memx.errors import PackageFileError

    pkg = private_copy("rmt-tiny")
    _onnx_with_an_unknown_op(pkg)
    _rehash(pkg)
    with pytest.raises(PackageFileError, match=r"package file 'model.onnx' is a graph onnxruntime .* cannot load: expected a valid ONNX graph, got InvalidGraph: "):
        runtimes.open(pkg, verify=False)
    _weights_corrupt(pkg)
    _rehash(pkg)
    with pytest.raises(PackageFileError, match=r"package file 'reference/weights.safetensors' is not a readable safetensors file: expected safetensors weights, got SafetensorError"):
        runtimes.open(pkg, backend="torch", verify=False)


def test_an_os_error_about_a_path_is_one_line_and_exit_2_at_the_cli(monkeypatch, capsys):
    """The CLI's one safety net: an OSError the OS raised about a path (here: a file that
    vanishes between the library's check and its read) is one line and exit 2; library code
    types what it can see first."""
    import typer

    from memx.cli.app import Mode, run_command

    def command():
        raise FileNotFoundError(2, "No such file or directory", "/gone/model.onnx")

    with pytest.raises(typer.Exit) as e:
        run_command(command, (), {}, Mode())
    assert e.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FileNotFoundError" in err and "/gone/model.onnx" in err

    with pytest.raises(typer.Exit) as e:  # under --json: one JSON object on stdout, nothing on stderr
        run_command(command, (), {}, Mode(json=True))
    captured = capsys.readouterr()
    assert e.value.exit_code == 2 and captured.err == ""
    assert json.loads(captured.out) == {"ok": False, "error": {"type": "FileNotFoundError", "text": "No such file or directory: /gone/model.onnx"}}

    def bug():
        raise OSError("not from the OS")  # no errno: a bug, its traceback is kept

    with pytest.raises(OSError, match="not from the OS"):
        run_command(bug, (), {}, Mode())


def test_ctrl_c_says_what_was_left_behind_and_exits_130(capsys):
    import typer

    from memx.cli.app import Mode, run_command

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as e:
        run_command(interrupted, (), {}, Mode(), "the last checkpoint stays")
    err = capsys.readouterr().err
    assert e.value.exit_code == 130 and err.startswith("interrupted after ") and "the last checkpoint stays" in err


def test_inspect_shows_a_hand_edited_validation_record_as_unreadable_not_a_traceback(private_copy):
    pkg = private_copy("rmt-tiny")
    m = json.loads((pkg / "memx.json").read_text())
    m["validation"] = {"onnxruntime:cpu": {"max_error": "big"}, "precision:x": [1, 2], "ok:cpu": {"passed": True, "max_error": 1e-7, "segments": 8}}
    (pkg / "memx.json").write_text(json.dumps(m))
    r = memx_cli("inspect", pkg, "--no-verify")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    out = " ".join(r.stdout.split())  # rich wraps at the terminal's width
    assert "validation onnxruntime:cpu: a record memx cannot read" in out and "validation precision:x: a record memx cannot read" in out, out
    assert "validation ok:cpu: PASS, max error 1e-07 over 8 segments" in out, out
