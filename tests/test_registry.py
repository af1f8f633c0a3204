"""Every extension point uses the one Registry type: the same refusal of a duplicate name and
of an unknown name (kind, choices, nearest name), enumerated over every registry memx makes."""

from __future__ import annotations

import pytest

import memx.calibration  # noqa: F401  (each layer's import makes its registries)
import memx.edge  # noqa: F401
import memx.models  # noqa: F401
import memx.ops  # noqa: F401
import memx.runtimes  # noqa: F401
import memx.runtimes.onnxruntime_passes  # noqa: F401
import memx.tensorrt  # noqa: F401
import memx.training  # noqa: F401
from memx.errors import MemxError, RegistryError
from memx.registry import Registry, registries

KINDS = {"model family", "preset", "zoo model", "backend", "quantization method", "task", "custom op", "doctor check", "bundle target", "onnxruntime graph pass"}


def _every() -> dict[str, Registry]:
    found = {r.kind: r for r in registries() if r.kind in KINDS}
    assert set(found) == KINDS, f"registries missing: {sorted(KINDS - set(found))}"
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_registry_refuses_a_duplicate_and_keeps_the_first(kind):
    reg = _every()[kind]
    assert len(reg) > 0, f"nothing registered as {kind}"
    name = reg.names()[0]
    first = reg.get(name)
    with pytest.raises(RegistryError, match=rf"{kind} '{name}' registered twice"):
        reg.add(name, object())
    assert reg.get(name) is first and reg.names()[0] == name


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_registry_names_the_choices_and_the_nearest_one_for_an_unknown_name(kind):
    reg = _every()[kind]
    name = reg.names()[0]
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    with pytest.raises(RegistryError) as info:
        reg.get(typo)
    err = info.value
    assert isinstance(err, MemxError) and isinstance(err, KeyError)
    assert f"unknown {kind} {typo!r}" in str(err) and err.actual == repr(typo)
    assert all(n in err.expected for n in reg.names())
    assert err.hint == f"did you mean {name!r}?" or any(n in (err.hint or "") for n in reg.names())
    with pytest.raises(RegistryError, match="unknown"):
        reg["definitely-not-registered-0"]


def test_registry_mapping_behaviour_and_a_far_name_has_no_suggestion():
    reg: Registry[int] = Registry("test thing")
    reg.add("alpha", 1)
    reg["beta"] = 2
    assert list(reg) == ["alpha", "beta"] and dict(reg) == {"alpha": 1, "beta": 2} and "alpha" in reg and len(reg) == 2
    assert reg.get("gamma", None) is None  # Mapping.get with a default (monkeypatch.setitem relies on it)
    reg.add("alpha", 3, replace=True)
    assert reg.get("alpha") == 3
    del reg["beta"]
    assert reg.names() == ["alpha"]
    with pytest.raises(RegistryError) as info:
        reg.get("zzzzzz")
    assert info.value.hint is None and "one of ['alpha']" in str(info.value)
    with pytest.raises(RegistryError, match="needs a name"):
        reg.add("", 1)
    with pytest.raises(RegistryError, match="unknown test thing 'gone'"):
        del reg["gone"]
    assert reg in registries()
