"""`memx serve repo` (memx.serving.repository): the written repository reads back as the
package it serves, edits that would pair tensors wrongly are refused, and the CLI refuses what
it cannot write with one typed line. No server needed."""

from __future__ import annotations

import pytest

from memx.errors import PackageExistsError, RepositoryError
from memx.serving import pbtxt
from memx.serving.repository import RepositoryOptions, check_repository, rows_dims, write_repository
from tests.test_cli_errors import memx_cli


def test_the_repository_reads_back_as_the_package_it_serves(tmp_path, package_of):
    pkg = package_of("rmt-tiny")
    repo = write_repository(pkg, tmp_path / "repo", RepositoryOptions(name="rmt", max_batch=16, strategy="direct", instances=2, idle_timeout_s=5))
    config = check_repository(repo, "rmt")
    assert config["backend"] == ["python"] and config["max_batch_size"] == [16]
    seq = config["sequence_batching"][0]
    assert seq["max_sequence_idle_microseconds"] == [5_000_000] and "direct" in seq
    outputs = {o["name"][0]: o["dims"] for o in config["output"]}
    assert outputs["logits"] == [-1, -1, pkg.manifest.vocab_size]  # [rows, segment, vocab]: a request carries its sequence's rows
    assert (repo / "rmt" / "1" / "package" / "memx.json").is_file() and "memx.serving.triton_model" in (repo / "rmt" / "1" / "model.py").read_text()


def test_a_package_with_extra_inputs_has_them_as_triton_inputs(tmp_path):
    from tests.package_cache import exported_factory

    pkg = exported_factory("tests.models.byo_models:make_seq2seq")
    repo = write_repository(pkg, tmp_path / "repo", RepositoryOptions(name="s2s"))
    inputs = {i["name"][0]: (i["data_type"][0].word, i["dims"]) for i in check_repository(repo, "s2s")["input"]}
    assert pkg.manifest.inputs
    for spec in pkg.manifest.inputs:
        assert inputs[spec.name][1] == rows_dims(spec.shape)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace('name: "logits"\n  data_type: TYPE_FP32', 'name: "logits"\n  data_type: TYPE_FP16'), "output 'logits' does not match"),
    (lambda t: t.replace('name: "END"', 'name: "START2"'), "sequence controls are not memx's"),
    (lambda t: t.replace('name: "rmt"', 'name: "other"', 1), "names another model"),
])
def test_a_repository_edited_out_of_step_with_its_package_is_refused(tmp_path, package_of, edit, match):
    repo = write_repository(package_of("rmt-tiny"), tmp_path / "repo", RepositoryOptions(name="rmt"))
    config = repo / "rmt" / "config.pbtxt"
    config.write_text(edit(config.read_text()))
    with pytest.raises(RepositoryError, match=match):
        check_repository(repo, "rmt")


def test_options_memx_cannot_serve_are_typed_errors(tmp_path, package_of):
    pkg = package_of("rmt-tiny")
    for opt, match in [(RepositoryOptions(name="x", backend="tensorflow"), "cannot write a repository for this Triton backend"),
                       (RepositoryOptions(name="x", strategy="newest"), "unknown sequence batching strategy"),
                       (RepositoryOptions(name="../x"), "plain directory name"), (RepositoryOptions(name="x", max_batch=0), "max_batch"),
                       (RepositoryOptions(name="x", snapshot_ttl_s=60), "snapshot TTL needs a snapshot store"),
                       (RepositoryOptions(name="x", queue_delay_us=-1), "queue delay")]:
        with pytest.raises(RepositoryError, match=match):
            write_repository(pkg, tmp_path / "r", opt)
    assert not (tmp_path / "r").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(PackageExistsError):
        write_repository(pkg, tmp_path / "mine", RepositoryOptions(name="x"), force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_text_format_round_trips():
    message = {"name": "m", "dims": [-1, 4], "flag": True, "ratio": 0.5, "input": [{"name": "a"}, {"name": "b"}], "sub": {"kind": pbtxt.Enum("KIND_CPU")}}
    back = pbtxt.loads(pbtxt.dumps(message))
    assert back == {"name": ["m"], "dims": [-1, 4], "flag": [True], "ratio": [0.5], "input": [{"name": ["a"]}, {"name": ["b"]}], "sub": [{"kind": [pbtxt.Enum("KIND_CPU")]}]}
    with pytest.raises(RepositoryError):
        pbtxt.loads('name: "m" }')


def test_memx_serve_repo_in_a_fresh_process(tmp_path, package_of):
    pkg = package_of("rmt-tiny")
    r = memx_cli("serve", "repo", pkg.path, "--out", tmp_path / "repo", "--name", "rmt", "--snapshot-store", "/var/memx/store", "--snapshot-ttl", "86400")
    assert r.returncode == 0 and "memx serve up" in " ".join(r.stdout.split()), r.stderr
    config = check_repository(tmp_path / "repo", "rmt")
    params = {p["key"][0]: p["value"][0]["string_value"][0] for p in config["parameters"]}
    assert params["memx_snapshot_store"] == "/var/memx/store" and float(params["memx_snapshot_ttl_s"]) == 86400
    r = memx_cli("serve", "repo", pkg.path, "--out", tmp_path / "repo2", "--backend", "tensorflow")
    assert r.returncode == 2 and "RepositoryError" in r.stderr and "onnxruntime" in r.stderr and "Traceback" not in r.stderr, r.stderr
