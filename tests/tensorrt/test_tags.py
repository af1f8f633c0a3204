"""Engine build tags and the runtime's compatibility rules (no TensorRT needed)."""

from __future__ import annotations

import pytest

from memx.errors import EngineCompatibilityError, EngineError, InputError, ManifestError
from memx.package.manifest import GraphInfo, TensorInfo
from memx.tensorrt.build import make_profile, parse_range
from memx.tensorrt.tags import BuildTags, Profile, check_runnable, choose_profile, normalize_cc


def _tags(**kw):
    base = dict(graph="step", file="engines/step.plan", flavour="tensorrt", trt_version="10.3.0.26", compute_capability="sm87", precision="fp16",
                strongly_typed=True, version_compatible=False, profiles=[Profile({}, (1, 1, 8), (1, 32, 32))])
    base.update(kw)
    return BuildTags(**base)


GRAPH = GraphInfo("step", "model.onnx", "step", [TensorInfo("tokens", "int64", ["batch", "segment"]), TensorInfo("lengths", "int64", ["batch"]),
                                                 TensorInfo("state_in.memory", "float32", ["batch", 4, 32])], [])


def test_profiles_cover_batch_and_segment_and_keep_fixed_dims():
    p = make_profile(GRAPH, (1, 4, 8), (2, 16, 32), {"min": 1, "max": 32})
    assert p.shapes["tokens"] == {"min": [1, 2], "opt": [4, 16], "max": [8, 32]}
    assert p.shapes["state_in.memory"] == {"min": [1, 4, 32], "opt": [4, 4, 32], "max": [8, 4, 32]}
    assert p.covers(8, 32) and not p.covers(9, 16) and not p.covers(4, 1)
    with pytest.raises(InputError, match="segment range outside"):
        make_profile(GRAPH, (1, 1, 8), (1, 16, 64), {"min": 1, "max": 32})
    odd = GraphInfo("step", "m.onnx", "step", [TensorInfo("x", "float32", ["batch", "width"])], [])
    with pytest.raises(EngineError, match="'width'"):
        make_profile(odd, (1, 1, 8), (1, 8, 8), {"min": 1, "max": 32})


def test_range_parsing():
    assert parse_range("1,8,32", name="--batch", default=(1, 1, 1)) == (1, 8, 32)
    assert parse_range("8", name="--batch", default=(1, 1, 1)) == (8, 8, 8)
    assert parse_range(None, name="--batch", default=(1, 2, 3)) == (1, 2, 3)
    for bad in ("8,1,32", "0,1,2", "a,b,c", "1,2"):
        with pytest.raises(InputError, match="MIN,OPT,MAX"):
            parse_range(bad, name="--batch", default=(1, 1, 1))


def test_profile_choice_picks_the_first_covering_profile_and_names_the_ranges():
    short, long = Profile({}, (1, 4, 8), (1, 16, 16)), Profile({}, (1, 4, 8), (17, 64, 64))
    assert choose_profile([short, long], 2, 16) == 0
    assert choose_profile([short, long], 2, 17) == 1
    with pytest.raises(EngineCompatibilityError) as e:
        choose_profile([short, long], 9, 8)
    assert e.value.expected == "batch 1..8, segment 1..16 or batch 1..8, segment 17..64" and e.value.actual == "batch 9, segment 8"


def test_engine_for_another_tensorrt_version_is_refused():
    check_runnable(_tags(), flavour="tensorrt", trt_version="10.3.0.30", compute_capability="sm87")  # same release, other build
    with pytest.raises(EngineCompatibilityError) as e:
        check_runnable(_tags(), flavour="tensorrt", trt_version="10.7.0", compute_capability="sm87")
    assert e.value.expected == "10.3.0.26" and e.value.actual == "10.7.0" and "--version-compatible" in str(e.value)


def test_version_compatible_engines_run_on_newer_runtimes_only():
    vc = _tags(version_compatible=True)
    check_runnable(vc, flavour="tensorrt", trt_version="11.4.0", compute_capability="sm87")
    with pytest.raises(EngineCompatibilityError, match=">= 10.3.0.26"):
        check_runnable(vc, flavour="tensorrt", trt_version="10.2.0", compute_capability="sm87")


def test_engine_for_another_gpu_or_flavour_is_refused():
    with pytest.raises(EngineCompatibilityError) as e:
        check_runnable(_tags(), flavour="tensorrt", trt_version="10.3.0.26", compute_capability=(9, 0))
    assert e.value.expected == "sm87" and e.value.actual == "sm90"
    with pytest.raises(EngineCompatibilityError, match="another TensorRT flavour"):
        check_runnable(_tags(), flavour="tensorrt-rtx", trt_version="10.3.0.26", compute_capability="sm87")


def test_compute_capability_spellings():
    assert normalize_cc("sm89") == normalize_cc("8.9") == normalize_cc((8, 9)) == normalize_cc(8.9) == "sm89"
    assert normalize_cc("sm120") == "sm120"
    with pytest.raises(InputError, match="compute capability"):
        normalize_cc("hopper")


def test_tags_round_trip_and_malformed_entries_are_refused():
    t = _tags(custom_ops={"memx.LocalGlobalAttention": "function body"})
    back = BuildTags.from_dict(t.to_dict())
    assert back == t
    with pytest.raises(ManifestError, match="engines entry is malformed"):
        BuildTags.from_dict({"graph": "step"})
