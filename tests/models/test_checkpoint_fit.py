"""A checkpoint that does not fit the model says plainly which tensors are missing, unexpected or
mis-shaped (a few names, with counts), and names the preset or zoo model it does fit."""

from __future__ import annotations

import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from memx.cli import app
from memx.errors import CheckpointError
from memx.models import build_preset
from memx.models.checkpoint import Mismatch, load_checkpoint
from memx.models.zoo import named_configs


def _save(state, path):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_a_checkpoint_of_another_preset_names_that_preset(tmp_path):
    ckpt = _save(build_preset("rmt-small").state_dict(), tmp_path / "small.safetensors")
    model = build_preset("rmt-tiny")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(model, ckpt, candidates=named_configs)
    err = e.value
    assert "preset 'rmt-small'" in err.hint and "preset 'rmt-tiny'" not in err.hint
    n_own, n_theirs = len(model.state_dict()), len(build_preset("rmt-small").state_dict())
    assert err.expected == f"the model's {n_own} tensors by name and shape"
    assert err.actual.startswith(f"{n_theirs} tensors: {n_theirs - n_own} unexpected (") and "mis-shaped (" in err.actual
    assert "in the checkpoint" in err.actual and "more" in err.actual  # a few names, then a count
    assert "missing none" not in str(err)


def test_a_renamed_tensor_is_named_with_counts_and_fits_nothing(tmp_path):
    state = build_preset("rmt-tiny").state_dict()
    name = sorted(state)[0]
    state[name + ".renamed"] = state.pop(name)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(build_preset("rmt-tiny"), _save(state, tmp_path / "r.safetensors"), candidates=named_configs)
    assert e.value.actual.endswith(f"1 missing ({name}), 1 unexpected ({name}.renamed)") and e.value.hint is None


def test_mismatch_describes_shapes_and_counts():
    own = {"a": (4,), "b": (2, 3), "c": (1,), "d": (1,), "e": (1,), "f": (1,)}
    theirs = {"a": (8,), "b": (2, 3), "x": (1,)}
    m = Mismatch.of(own, theirs)
    assert m.describe() == "4 missing (c, d, e, … 1 more), 1 unexpected (x), 1 mis-shaped (a: [8] in the checkpoint, [4] in the model)"
    assert not Mismatch.of(own, dict(own))


def test_cli_export_with_a_wrong_checkpoint_says_which_preset_it_fits(tmp_path):
    ckpt = _save(build_preset("rmt-small").state_dict(), tmp_path / "small.safetensors")
    r = CliRunner().invoke(app, ["export", "rmt-tiny", "--out", str(tmp_path / "x.memx"), "--checkpoint", str(ckpt)])
    assert r.exit_code == 2 and "this checkpoint fits preset 'rmt-small'" in " ".join(r.output.split())
    assert not (tmp_path / "x.memx").exists()
