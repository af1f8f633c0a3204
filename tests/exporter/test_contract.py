"""The step contract is checked at export on any module: models that break it the ways user
models do (state fed by padding, a reset that keeps the old state, an empty row that moves,
a batch axis read as a Python int) are refused with a ContractError/ExportError naming the
tensor and the measured difference; memx's own presets all pass; the skip is recorded."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from memx.errors import ContractError, ExportError
from memx.exporter import Package, export
from memx.exporter.contract import check_behaviour
from memx.models import build_preset, presets
from memx.models.base import OutputSpec, SegmentModel, StateSpec


@dataclass
class Cfg:
    vocab_size: int = 32
    max_segment_len: int = 8
    d: int = 16


class RunningMean(SegmentModel):
    """A correct step: memory = mean of the real token embeddings mixed with the old memory."""

    family = "test-running-mean"
    flaw = ""

    def __init__(self, config: Cfg = Cfg()):
        super().__init__(config)
        self.emb = nn.Embedding(config.vocab_size, config.d)
        self.out = nn.Linear(config.d, config.vocab_size)
        self.init = nn.Parameter(torch.randn(config.d) * 0.1)

    def state_specs(self):
        return [StateSpec("memory", (self.config.d,))]

    def output_specs(self):
        return [OutputSpec("logits", ("batch", "segment", self.config.vocab_size))]

    def forward(self, tokens, lengths, reset, memory):
        if self.flaw != "reset-ignored":
            memory = self.select_initial(reset, self.init, memory)
        real = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]  # (B, S)
        h = torch.tanh(self.emb(tokens) + memory[:, None, :])  # (B, S, d)
        logits = self.out(h) * real[..., None]
        read = torch.ones_like(real) if self.flaw == "padding-feeds-state" else real  # the flaw: the memory reads the padding too
        mean = (h * read[..., None]).sum(1) / read.sum(1, keepdim=True).clamp(min=1)
        new = 0.5 * memory + 0.5 * mean
        if self.flaw != "empty-row-moves":
            new = self.keep_if_empty(lengths, new, memory)
        return logits, new


def flawed(flaw: str) -> RunningMean:
    model = RunningMean()
    model.flaw = flaw
    return model.eval()


def test_every_memx_preset_honours_the_contract():
    for p in presets():
        check_behaviour(build_preset(p.name), 8)


@pytest.mark.parametrize("flaw, match", [
    ("padding-feeds-state", r"next state 'memory' depends on padding: a row of \d real tokens padded to 8 differs"),
    ("reset-ignored", r"a reset row still depends on the state it was given \('logits' differs\)"),
    ("empty-row-moves", r"a row with lengths == 0 changed its state 'memory'"),
])
def test_a_broken_step_is_refused_before_export_with_the_measured_difference(flaw, match, tmp_path):
    with pytest.raises(ContractError, match=match) as e:
        export(flawed(flaw), tmp_path / "pkg", verify_segments=0)
    assert float(e.value.actual) > 1e-3  # the measured difference, not a yes/no
    assert "skip-contract-checks" in str(e.value)
    assert not (tmp_path / "pkg").exists()


def test_the_checks_can_be_skipped_and_the_manifest_says_so(tmp_path):
    pkg = export(flawed("padding-feeds-state"), tmp_path / "pkg", verify_segments=0, contract_checks=False)
    assert Package.open(pkg.path).manifest.provenance["contract_checks"] == "skipped"
    ok = export(RunningMean().eval(), tmp_path / "ok", verify_segments=8)
    assert ok.manifest.provenance["contract_checks"] == "passed"


class BatchAsInt(RunningMean):
    """Reads the batch size as a Python int, as a lot of research code does."""

    family = "test-batch-as-int"

    def forward(self, tokens, lengths, reset, memory):
        b = int(tokens.shape[0])
        fresh = torch.zeros(b, self.config.d) + self.init
        memory = torch.where(reset[:, None], fresh, memory)
        return super().forward(tokens, lengths, torch.zeros_like(reset), memory)


def test_a_batch_axis_baked_into_the_graph_is_refused_naming_the_axis(tmp_path):
    with pytest.raises(ExportError, match=r"the batch axis \(axis 0\) of 'tokens' was fixed to 2 by the export") as e:
        export(BatchAsInt().eval(), tmp_path / "pkg", verify_segments=0)
    assert "int(x.shape[i])" in str(e.value)
    assert not (tmp_path / "pkg").exists()


class DataSizedOutput(RunningMean):
    """An output whose size is computed from the data (the positions of frequent tokens), as
    detection-style heads do: no runtime can preallocate it."""

    family = "test-data-sized"

    def output_specs(self):
        return [*super().output_specs(), OutputSpec("hits", ("batch", 3), "int64", None)]

    def forward(self, tokens, lengths, reset, memory):
        logits, new = super().forward(tokens, lengths, reset, memory)
        hits = torch.nonzero(tokens > 3)[:, 1].reshape(1, -1).expand(tokens.shape[0], -1)  # (B, number of hits)
        return logits, hits, new


def test_an_output_sized_by_the_data_is_refused_naming_the_output(tmp_path):
    with pytest.raises(ContractError, match=r"output 'hits' does not have its declared shape \(at batch 2, segment 8\): expected \['batch', 3\] = \[2, 3\], got \[2, \d+\]") as e:
        export(DataSizedOutput().eval(), tmp_path / "pkg", verify_segments=0)
    assert "pad to a fixed size" in str(e.value) and not (tmp_path / "pkg").exists()
