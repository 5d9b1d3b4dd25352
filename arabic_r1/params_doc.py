"""docs/params.md, generated from the schema: every key of a params file, its type, default and description, and the
package modules that read it. ``make params-doc`` writes it; ``tests/test_params_doc.py`` fails when it is stale.

"Read by" is a static scan (:func:`readers`); a read through an alias of an alias (``x = params.train; y = x.lora;
y.r`` in a module that never names ``LoraParams``) is missed.
"""

from __future__ import annotations

import ast
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from arabic_r1.params import PACKAGE_DIR, REPO_DIR, Params

DOC_PATH = REPO_DIR / "docs" / "params.md"
HEADER = """# Params reference

Every key a params file (`params/<profile>.yaml`) may hold, generated from the schema (`arabic_r1/params.py` and the
section modules it imports) by `make params-doc`; `tests/test_params_doc.py` fails when this file is stale. Types are
checked strictly (no `"3"` for 3); an unknown key is an error. "Read by" lists the package modules whose code reads
the key (a static scan of attribute access: it may list a module that reads a same-named key of another section).
"""


def type_name(annotation: Any) -> str:
    """A short, readable type: ``int > 0``-style constraints are in the description, not here."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(built)"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{json.dumps(value, ensure_ascii=False, default=str)}`"


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The nested section a field holds (``LoraParams`` for ``train.lora``, also when optional), if any; a mapping of
    sections (``train.lora.per_family``) is one key."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for candidate in (annotation, *(typing.get_args(annotation) if union else ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def keys(model: type[BaseModel] = Params, prefix: str = "") -> list[tuple[str, Any, tuple[str, ...]]]:
    """(dotted key, pydantic field, the names that enclose it: section attributes and classes) for every leaf."""
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        dotted = f"{prefix}{name}"
        nested = section_model(field.annotation)
        if nested is not None and nested is not model:
            out += [(k, f, (name, nested.__name__, *enc)) for k, f, enc in keys(nested, dotted + ".")]
        else:
            out.append((dotted, field, ()))
    return out


def _chain(node: ast.Attribute, aliases: dict[str, str]) -> list[str]:
    """``ep.benchmarks`` -> ["eval", "benchmarks"] when the module wrote ``ep = params.eval``."""
    parts = [node.attr]
    while isinstance(node.value, ast.Attribute):
        node = node.value
        parts.append(node.attr)
    if isinstance(node.value, ast.Name) and node.value.id in aliases:
        parts.append(aliases[node.value.id])
    return parts[::-1]


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Names bound to an attribute (``t = params.train``, ``lora = params.train.lora``): name -> that attribute."""
    out = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Attribute):
            for target in n.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = n.value.attr
    return out


@functools.cache
def _module_names() -> dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]]:
    """Per package module: its ``parent.child`` attribute pairs, the attributes it accesses, and the plain names and
    strings it uses."""
    out = {}
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _aliases(tree)
        chains = [_chain(n, aliases) for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
        pairs = frozenset(f"{c[i]}.{c[i + 1]}" for c in chains for i in range(len(c) - 1))
        attrs = frozenset(n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute))
        strings = {
            n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        names = frozenset({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | strings)
        out[path.stem] = (pairs, attrs, names)
    return out


def readers(dotted: str, enclosing: tuple[str, ...]) -> list[str]:
    """The modules (not the schema's own) whose code reads ``dotted``: ``section.key`` written out
    (``params.train.lora.r``, ``t.lora.r``), the key quoted (``params.get("train.lora.r")``), or the key read off a
    variable in a module that names the section's class (``ep.benchmarks`` where ``EvalParams`` is named)."""
    parts = dotted.split(".")
    pair, leaf = ".".join(parts[-2:]), parts[-1]
    section_class = enclosing[-1] if enclosing else None
    found = []
    for module, (pairs, attrs, names) in _module_names().items():
        if module.startswith("params") and module != "params_loading":
            continue
        if pair in pairs or dotted in names or (section_class in names and leaf in attrs):
            found.append(module)
    return found


def render() -> str:
    lines = [HEADER]
    current = None
    for dotted, field, enclosing in keys():
        section = dotted.split(".", 1)[0]
        if section != current:
            current = section
            doc = (Params.model_fields[section].annotation.__doc__ or "").strip().splitlines()
            lines += ["", f"## `{section}`", ""]
            if doc and not doc[0].startswith(("Usage docs", "A base class")):
                lines += [" ".join(d.strip() for d in doc), ""]
            lines += ["| key | type | default | description | read by |", "|---|---|---|---|---|"]
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = type_name(field.annotation).replace("|", "\\|")
        who = ", ".join(readers(dotted, enclosing)) or "—"
        lines.append(f"| `{dotted}` | {kind} | {default_text(field)} | {description} | {who} |")
    return "\n".join(lines) + "\n"


def write(path: Path = DOC_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write())
