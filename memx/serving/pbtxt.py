"""Protocol-buffer text format (config.pbtxt) for Triton model configurations: ``dumps``
writes nested dicts and lists, ``loads`` reads the same subset back (messages, repeated
fields as lists, strings, numbers, booleans, enum words), so a written repository can be
checked against the package it serves.

    dumps({"name": "m", "max_batch_size": 8, "input": [{"name": "TOKENS", "data_type": Enum("TYPE_INT64"), "dims": [-1]}]})
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from memx.errors import RepositoryError


@dataclass(frozen=True)
class Enum:
    """An enum value, written bare (TYPE_FP32, KIND_CPU, CONTROL_SEQUENCE_START)."""

    word: str


def dumps(message: dict[str, Any], indent: int = 0) -> str:
    """``message`` as text format; a list value is a repeated field, a dict a sub-message."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"{pad}{key} {{\n{dumps(item, indent + 1)}{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{dumps(value, indent + 1)}{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return value.word
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise RepositoryError("a config value text format cannot hold", expected="str, int, float, bool, Enum, list or dict", actual=type(value).__name__)


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([A-Za-z_][A-Za-z0-9_]*)|([-+]?[0-9][0-9.eE+-]*))', re.S)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise RepositoryError("config.pbtxt cannot be read", expected="protobuf text format", actual=f"{text[pos:pos + 30]!r} at offset {pos}")
        pos = m.end()
        if m.group(1) is None:
            out.append(next(g for g in m.groups()[1:] if g is not None))
    return out


def loads(text: str) -> dict[str, Any]:
    """Read text format into dicts; every field becomes a list of its values (repeated or not)."""
    tokens = _tokens(text)
    message, pos = _message(tokens, 0, top=True)
    return message


def _message(tokens: list[str], pos: int, *, top: bool = False) -> tuple[dict[str, Any], int]:
    out: dict[str, list[Any]] = {}
    while pos < len(tokens) and tokens[pos] != "}":
        key = tokens[pos]
        pos += 1
        if pos < len(tokens) and tokens[pos] == ":":
            pos += 1
        if pos >= len(tokens):
            raise RepositoryError("config.pbtxt ends inside a field", expected="a value", actual=key)
        if tokens[pos] == "{":
            value, pos = _message(tokens, pos + 1)
            pos += 1  # "}"
            out.setdefault(key, []).append(value)
        elif tokens[pos] == "[":
            pos += 1
            out.setdefault(key, [])  # an empty list is a field with no values
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                if tokens[pos] == "{":
                    value, pos = _message(tokens, pos + 1)
                    pos += 1
                else:
                    value, pos = _value(tokens[pos]), pos + 1
                out.setdefault(key, []).append(value)
            pos += 1
        else:
            out.setdefault(key, []).append(_value(tokens[pos]))
            pos += 1
    if top and pos != len(tokens):
        raise RepositoryError("config.pbtxt has an unmatched '}'", expected="balanced braces", actual=f"token {pos}")
    return out, pos


def _value(token: str) -> Any:
    if token.startswith('"'):
        return json.loads(token)
    if token in ("true", "false"):
        return token == "true"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return Enum(token)
