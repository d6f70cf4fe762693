"""Settings from environment variables: one msgspec Struct per process, read once, passed in.

Each field of a settings Struct is the variable ``<PREFIX><FIELD>``; the string under a field in
the class body is its documentation, shown by ``--help``.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from collections.abc import Mapping
from typing import TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


def field_docs(cls: type[msgspec.Struct]) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs


def load_from_env(cls: type[S], prefix: str, environ: Mapping[str, str]) -> S:
    """Read `cls` from ``<prefix><FIELD>`` variables; raise ValueError naming a bad one."""
    raw: dict[str, str] = {}
    for field in msgspec.structs.fields(cls):
        name = prefix + field.name.upper()
        if name in environ:
            raw[field.name] = environ[name]
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        name = prefix + path.rstrip("`").upper() if path else "settings"
        raise ValueError(f"{name}: {message}") from None


def describe(cls: type[msgspec.Struct], prefix: str, computed: Mapping[str, str] = {}) -> str:
    """The settings as help text: variable, default and meaning.

    `computed` names fields whose default is worked out at start (shown instead of a value).
    """
    docs = field_docs(cls)
    lines = ["environment variables:"]
    for field in msgspec.structs.fields(cls):
        default = (computed or {}).get(field.name, repr(field.default))
        lines.append(f"  {prefix}{field.name.upper()}  default {default}")
        lines.append(f"      {docs.get(field.name, '')}")
    return "\n".join(lines)
