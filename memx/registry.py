"""One registry type for every extension point (families, presets, zoo models, backends,
quantization methods, tasks, custom ops, doctor checks), so that all of them refuse a
duplicate name and an unknown name the same way: a ``RegistryError`` naming the kind, the
choices and the nearest registered name.

    FAMILIES: Registry[type[SegmentModel]] = Registry("model family")
    FAMILIES.add("rmt", RMT)
    FAMILIES.get("rmtt")   # RegistryError: unknown model family 'rmtt': expected one of [...], got 'rmtt' (did you mean 'rmt'?)

Every registry made is listed by :func:`registries`, so tests enumerate them all.
"""

from __future__ import annotations

from typing import Any, Generic, Iterator, MutableMapping, TypeVar

from memx.errors import RegistryError, expect_choice

T = TypeVar("T")

_ALL: list["Registry"] = []
_REQUIRED = object()


class Registry(MutableMapping[str, T], Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        _ALL.append(self)

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Register ``entry`` as ``name``; a second registration of a name is refused unless ``replace``."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} needs a name", expected="a non-empty string", actual=repr(name))
        if name in self._entries and not replace:
            raise RegistryError(f"{self.kind} {name!r} registered twice", expected="a name not yet registered", actual=repr(name),
                                hint=f"registered: {sorted(self._entries)}")
        self._entries[name] = entry
        return entry

    def get(self, name: str, default: Any = _REQUIRED) -> T:  # type: ignore[override]
        """The entry; an unknown name is a RegistryError unless a ``default`` is given (Mapping.get)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _REQUIRED:
                return default
            raise self.unknown(name) from None

    def unknown(self, name: object) -> RegistryError:
        return expect_choice(self.kind, name, list(self._entries))

    def names(self) -> list[str]:
        return list(self._entries)

    # --- Mapping protocol (iteration gives names in registration order) --------------------
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, entry: T) -> None:
        self.add(name, entry)

    def __delitem__(self, name: str) -> None:
        if name not in self._entries:
            raise self.unknown(name)
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


def registries() -> list[Registry]:
    """Every registry made so far (import memx's layers first to have them all)."""
    return list(_ALL)

