"""What every `memx` command shares: --json, --quiet and --verbose, an example in --help that
names the command, no `<bool>` placeholder beside flags; and `memx --version`."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from memx.cli import app


def _commands(group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every leaf command under a (Typer's own click) group, with its path."""
    found = []
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            found += _commands(cmd, prefix + (name,))
        else:
            found.append((prefix + (name,), cmd))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_command_list_is_what_the_docs_describe():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"export", "validate", "generate", "inspect", "zoo", "profile", "quantize", "doctor", "build", "train", "quickstart",
            "serve repo", "serve plan", "serve up"} <= names


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_json_quiet_verbose_and_an_example(path, cmd):
    options = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    missing = {"--json", "--quiet", "--verbose"} - options
    assert not missing, f"memx {' '.join(path)} lacks {sorted(missing)}"
    json_param = next(p for p in cmd.params if "--json" in p.opts)
    assert json_param.is_flag, f"memx {' '.join(path)}: --json takes no value (write files with --report)"
    help_text = CliRunner().invoke(app, [*path, "--help"], terminal_width=200).output
    examples = help_text.split("Examples:", 1)
    assert len(examples) == 2, f"memx {' '.join(path)} --help has no Examples section"
    assert f"memx {' '.join(path)}" in examples[1], f"memx {' '.join(path)} --help: no example runs the command itself"
    assert "<bool>" not in help_text


def test_version_names_memx_and_its_components_without_importing_torch():
    import subprocess
    import sys

    code = "import sys; from memx.cli import main; sys.argv = ['memx', '--version']\ntry:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    first, imported = done.stdout.strip().splitlines()[0], done.stdout.strip().splitlines()[-1]
    assert re.match(r"^memx \d+\.\d+\.\d+ \(memx-toolkit\) onnxruntime ", first), first
    assert "libmemx_ops " in first and imported == "False"


def test_json_mode_prints_one_object_on_stdout_for_success_and_for_errors(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["zoo", "--json"])
    data = json.loads(ok.stdout)
    assert ok.exit_code == 0 and data["ok"] is True and "gmat-majority" in {e["name"] for e in data["zoo"]}
    bad = runner.invoke(app, ["inspect", str(tmp_path / "missing.memx"), "--json"])
    error = json.loads(bad.stdout)
    assert bad.exit_code == 2 and error["ok"] is False and error["error"]["type"].endswith("Error") and "missing.memx" in error["error"]["text"]


def test_shell_completion_script_is_offered():
    done = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert done.exit_code == 0 and "_memx_completion" in done.output
