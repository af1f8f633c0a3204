"""The user's files (issue 17): --force deleted a directory that was not a package (notes.txt
gone), left a moment with no package between its two renames, killed runs left .staging-*
directories behind, and packages were 0700 with weights 0600 whatever the umask. Pure Python:
staged_directory with a fake package (a minimal memx.json); one CLI export in a subprocess."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from memx.errors import PackageExistsError
from memx.package import files
from memx.package.files import remove_dead_leftovers, staged_directory, unreplaceable

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
MANIFEST = json.dumps({"format": "memx.package", "format_version": 1, "family": "fake"})


def _fake_package(path: Path, tag: str = "old") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "memx.json").write_text(MANIFEST)
    (path / "tag.txt").write_text(tag)
    return path


def _write_package(target: Path, tag: str = "new", **kwargs) -> None:
    with staged_directory(target, **kwargs) as stage:
        _fake_package(stage, tag)


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


# --- --force replaces only a memx package ------------------------------------------------------
def test_force_refuses_a_directory_that_is_not_a_package(tmp_path):
    mydata = tmp_path / "mydata"
    mydata.mkdir()
    (mydata / "notes.txt").write_text("my notes")
    with pytest.raises(PackageExistsError, match=r"not a memx package \(no memx.json; holds notes.txt\)") as e:
        _write_package(mydata, force=True)
    assert e.value.expected == "a memx package or an empty directory" and "notes.txt" in e.value.actual
    assert (mydata / "notes.txt").read_text() == "my notes" and _siblings(tmp_path) == ["mydata"]


@pytest.mark.parametrize("content, found", [
    ("{not json", "memx.json is not JSON"),
    (json.dumps({"format": "other.tool", "format_version": 1}), "is not a memx manifest (format 'other.tool')"),
    (json.dumps(["memx.package"]), "is not a memx manifest (format 'list')"),
    (json.dumps({"format": "memx.package"}), "is not a memx manifest"),
])
def test_force_refuses_a_directory_whose_memx_json_is_not_a_manifest(tmp_path, content, found):
    target = tmp_path / "p"
    target.mkdir()
    (target / "memx.json").write_text(content)
    with pytest.raises(PackageExistsError, match="not a memx package") as e:
        _write_package(target, force=True)
    assert found in str(e.value)
    assert (target / "memx.json").read_text() == content and _siblings(tmp_path) == ["p"]


def test_force_refuses_a_file_a_link_and_a_memx_json_directory(tmp_path):
    (tmp_path / "f").write_text("data")
    _fake_package(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "memx.json").mkdir()
    for name, found in [("f", "got a file ("), ("link", "a symbolic link (to "), ("d", "memx.json is not a regular file")]:
        with pytest.raises(PackageExistsError, match="replaces only a memx package") as e:
            _write_package(tmp_path / name, force=True)
        assert found in str(e.value), str(e.value)
    assert (tmp_path / "f").read_text() == "data" and (tmp_path / "link").is_symlink() and (tmp_path / "real" / "tag.txt").read_text() == "old"
    assert _siblings(tmp_path) == ["d", "f", "link", "real"]


def test_force_replaces_a_package_and_an_empty_directory_but_nothing_without_force(tmp_path):
    pkg, empty = _fake_package(tmp_path / "p.memx"), tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PackageExistsError, match="already exists"):
        _write_package(pkg)
    _write_package(pkg, force=True)
    _write_package(empty, force=True)
    assert (pkg / "tag.txt").read_text() == "new" and (empty / "tag.txt").read_text() == "new"
    assert _siblings(tmp_path) == ["empty", "p.memx"], "no staging or old directory may remain"


def test_the_target_is_checked_again_before_the_rename(tmp_path):
    pkg = _fake_package(tmp_path / "p.memx")
    with pytest.raises(PackageExistsError, match="holds notes.txt"):
        with staged_directory(pkg, force=True) as stage:
            _fake_package(stage, "new")
            (pkg / "memx.json").unlink()  # the user turned it into their own directory meanwhile
            (pkg / "notes.txt").write_text("mine")
    assert (pkg / "notes.txt").read_text() == "mine" and _siblings(tmp_path) == ["p.memx"]


def test_unreplaceable_names_a_few_of_what_a_directory_holds(tmp_path):
    for name in "edcba":
        (tmp_path / name).write_text("")
    assert unreplaceable(tmp_path) == "a directory that is not a memx package (no memx.json; holds a, b, c, …)"
    assert unreplaceable(tmp_path / "absent") is None


# --- one step: never a moment without a package -----------------------------------------------
def _watch_every_step(monkeypatch, pkg: Path) -> list[str]:
    """After each rename or removal staged_directory makes, note it if ``pkg`` has no memx.json
    then (a watcher thread would not see the gap: the GIL rarely switches inside it)."""
    missing: list[str] = []

    def watched(name: str, real):
        def step(*args, **kwargs):
            result = real(*args, **kwargs)
            if not (pkg / "memx.json").is_file():
                missing.append(name)
            return result
        return step

    for owner, name in [(files, "_renameat2"), (files.os, "replace"), (files.os, "rename"), (files.shutil, "rmtree")]:
        monkeypatch.setattr(owner, name, watched(name, getattr(owner, name)))
    return missing


def test_force_replaces_with_no_window_without_a_package(tmp_path, monkeypatch):
    pkg = _fake_package(tmp_path / "p.memx")
    flags: list[int] = []
    real = files._renameat2
    monkeypatch.setattr(files, "_renameat2", lambda src, dst, f: flags.append(f) or real(src, dst, f))
    missing = _watch_every_step(monkeypatch, pkg)
    _write_package(pkg, force=True)
    assert (pkg / "tag.txt").read_text() == "new" and _siblings(tmp_path) == ["p.memx"]
    if not sys.platform.startswith("linux") or files._libc_renameat2() is None:
        pytest.skip("no renameat2 here: the two-rename fallback is all there is")
    assert flags == [files.RENAME_EXCHANGE], "replacing must be one renameat2(RENAME_EXCHANGE)"
    assert missing == [], f"the package was missing after {missing}"


def test_the_two_rename_fallback_has_the_window_the_watch_sees(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_libc_renameat2", lambda: None)  # not Linux / no renameat2
    pkg = _fake_package(tmp_path / "p.memx")
    missing = _watch_every_step(monkeypatch, pkg)
    _write_package(pkg, force=True)
    assert missing == ["replace"] and (pkg / "tag.txt").read_text() == "new"


def test_force_falls_back_to_two_renames_where_exchange_is_unsupported(tmp_path, monkeypatch):
    def einval(*args) -> int:
        ctypes.set_errno(errno.EINVAL)  # what a file system without RENAME_EXCHANGE answers
        return -1

    monkeypatch.setattr(files, "_libc_renameat2", lambda: einval)
    pkg = _fake_package(tmp_path / "p.memx")
    _write_package(pkg, force=True)
    _write_package(tmp_path / "new.memx")
    assert (pkg / "tag.txt").read_text() == "new" and (tmp_path / "new.memx" / "tag.txt").read_text() == "new"
    assert _siblings(tmp_path) == ["new.memx", "p.memx"]


def test_a_package_that_appears_meanwhile_is_not_overwritten(tmp_path):
    target = tmp_path / "p.memx"
    with pytest.raises(PackageExistsError, match="already exists"):
        with staged_directory(target) as stage:
            _fake_package(stage, "new")
            _fake_package(target, "theirs")
    assert (target / "tag.txt").read_text() == "theirs" and _siblings(tmp_path) == ["p.memx"]


# --- staging of killed runs ---------------------------------------------------------------------
INSIDE = """import sys, time
from memx.package.files import staged_directory
with staged_directory(sys.argv[1], force=True) as stage:
    (stage / "weights.bin").write_bytes(b"partial")
    print(stage, flush=True)
    time.sleep(600)
"""


def _inside_staged_directory(target: Path) -> tuple[subprocess.Popen, Path]:
    """A python process paused inside staged_directory(target); returns it and its staging dir."""
    proc = subprocess.Popen([sys.executable, "-c", INSIDE, str(target)], stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    line = proc.stdout.readline().strip()
    assert line, f"the child did not reach staged_directory (rc {proc.poll()})"
    return proc, Path(line)


def test_a_killed_runs_staging_is_cleaned_at_the_next_start(tmp_path):
    target = _fake_package(tmp_path / "p.memx")
    killed, dead_stage = _inside_staged_directory(target)
    live, live_stage = _inside_staged_directory(target)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert dead_stage.is_dir() and dead_stage.name.startswith(f".p.memx.staging-{killed.pid}-")
        unrelated = [tmp_path / ".p.memx.staging-notapid", tmp_path / ".other.memx.staging-999999999-abc", tmp_path / "notes"]
        for p in unrelated:
            p.mkdir()
        _write_package(target, force=True)
        assert not dead_stage.exists(), "the killed run's staging must be removed at the next start"
        assert (live_stage / "weights.bin").read_bytes() == b"partial", "a live run's staging must be kept"
        assert all(p.is_dir() for p in unrelated), "nothing but a dead run's staging may be removed"
        assert (target / "tag.txt").read_text() == "new"
    finally:
        live.kill()
        live.wait(timeout=30)
    assert remove_dead_leftovers(target) == [live_stage]


def test_an_old_tree_of_a_killed_run_is_cleaned_and_a_pid_of_zero_never_matches(tmp_path):
    target = tmp_path / "p.memx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    old = _fake_package(tmp_path / f".p.memx.old-{dead.stdout.strip()}-abc123" / "pkg")
    zero = tmp_path / ".p.memx.staging-0-abc123"
    zero.mkdir()
    assert remove_dead_leftovers(target) == [old.parent] and zero.is_dir()


# --- modes follow the umask ----------------------------------------------------------------------
UMASKED = """import json, os, sys, tempfile
from pathlib import Path
import numpy as np
from safetensors.numpy import save_file
os.umask(int(sys.argv[2], 8))
from memx.package.files import staged_directory, write_text_atomic
target = Path(sys.argv[1])
with staged_directory(target) as stage:
    (stage / "weights").mkdir()
    save_file({"w": np.zeros(2, np.float32)}, str(stage / "weights" / "model.safetensors"))
    fd, onnx = tempfile.mkstemp(dir=stage, suffix=".onnx")
    os.close(fd)
    os.rename(onnx, stage / "step.onnx")
    (stage / "reports").mkdir()
    write_text_atomic(stage / "reports" / "r.json", "{}")
    write_text_atomic(stage / "memx.json", "{}")
write_text_atomic(target.parent / "report.json", "{}")
paths = [target, *sorted(target.rglob("*")), target.parent / "report.json"]
print(json.dumps({str(p.relative_to(target.parent)): oct(p.stat().st_mode & 0o777) for p in paths}))
"""


@pytest.mark.parametrize("umask, dirs, regular", [("022", "0o755", "0o644"), ("077", "0o700", "0o600"), ("002", "0o775", "0o664")])
def test_package_files_follow_the_umask(tmp_path, umask, dirs, regular):
    r = subprocess.run([sys.executable, "-c", UMASKED, str(tmp_path / "p.memx"), umask], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    modes = json.loads(r.stdout)
    assert set(modes) == {"p.memx", "p.memx/weights", "p.memx/weights/model.safetensors", "p.memx/step.onnx", "p.memx/reports",
                          "p.memx/reports/r.json", "p.memx/memx.json", "report.json"}
    assert {p: m for p, m in modes.items() if m != (dirs if (tmp_path / p).is_dir() else regular)} == {}


def test_the_umask_is_read_without_changing_it(monkeypatch):
    mask = os.umask(0o027)
    try:
        assert files.current_umask() == 0o027 and files.file_mode() == 0o640 and files.dir_mode() == 0o750
        monkeypatch.setattr(files.Path, "read_text", lambda self, *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
        assert files.current_umask() == 0o027, "the fallback sets and restores the umask"
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(mask)


# --- the CLI ----------------------------------------------------------------------------------------
def test_memx_export_force_keeps_a_users_directory(tmp_path):
    mydata = tmp_path / "mydata"
    mydata.mkdir()
    (mydata / "notes.txt").write_text("my notes")
    r = subprocess.run([sys.executable, "-c", "from memx.cli import main; main()", "export", "rmt-tiny", "--out", str(mydata), "--force", "--verify-segments", "0"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert "PackageExistsError" in lines[0] and "not a memx package (no memx.json; holds notes.txt)" in lines[0], lines[0]
    assert (mydata / "notes.txt").read_text() == "my notes" and _siblings(tmp_path) == ["mydata"]
