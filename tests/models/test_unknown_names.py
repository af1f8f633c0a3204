"""A mistyped model name (memx export, memx.models.create) lists the presets and the trained zoo
models, and suggests the closest of either."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import memx.models
from memx.cli import app
from memx.errors import RegistryError
from memx.models import presets
from memx.models.zoo import require_model, unknown_model
from memx.zoo import zoo_entries


def test_a_preset_typo_suggests_the_preset_and_lists_the_zoo_too():
    err = unknown_model("rmt-smal")
    assert err.hint == "did you mean the preset 'rmt-small'?"
    assert all(p.name in err.expected for p in presets()) and all(e.name in err.expected for e in zoo_entries())
    assert "trained zoo model" in err.expected and err.actual == "'rmt-smal'"


def test_a_zoo_typo_suggests_the_zoo_model():
    with pytest.raises(RegistryError) as e:
        memx.models.create("gmat-majorty")
    assert e.value.hint == "did you mean the zoo model 'gmat-majority'?"


def test_known_names_pass_and_a_far_name_points_to_memx_zoo():
    require_model("rmt-tiny")
    require_model("gmat-majority")
    assert unknown_model("gpt-5").hint == "`memx zoo` lists them"


def test_cli_export_typo(tmp_path):
    r = CliRunner().invoke(app, ["export", "rmt-smal", "--out", str(tmp_path / "never.memx")])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "unknown preset 'rmt-smal'" in text and "did you mean the preset 'rmt-small'?" in text
    assert "gmat-majority" in text and "rmt-tiny" in text
