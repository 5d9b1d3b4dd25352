"""Loading a run's params: YAML file -> dotted ``-o key=value`` overrides -> the validated :class:`Params`.

Every error names the file, the key path and what was expected (a line for each invalid key, with the override it
came from), never a pydantic traceback; a value that looks like an API key is never echoed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from arabic_r1.errors import looks_like_secret, redacted
from arabic_r1.params import REPO_DIR, Params, ParamsError, project_root_for

DEFAULT_PROFILE = "smoke"


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``2e-4`` as a float (YAML 1.1 wants ``2.0e-4``; users write the former), and
    refuses a key written twice in one mapping (YAML keeps the second silently: a second ``run:`` block would
    replace the whole first one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` overrides by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: SafeConstructor reports it
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (lines {first} and {line}); keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


# ------------------------------------------------------------------------------------------------ loading
def profile_path(profile_or_path: str | Path | None) -> Path:
    """``smoke`` -> ``<repo>/params/smoke.yaml``; a path is returned as is."""
    if profile_or_path is None:
        profile_or_path = DEFAULT_PROFILE
    text = str(profile_or_path)
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        return REPO_DIR / "params" / f"{text}.yaml"
    return Path(text).expanduser()


def parse_override(item: str) -> tuple[list[str | int], Any]:
    """``train.lora.r=32`` -> (["train", "lora", "r"], 32); the value is read as YAML (numbers, bools, lists)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ParamsError(f"override {item!r}: expected KEY.PATH=VALUE, e.g. train.lora.r=32")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ParamsError(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set each dotted key in a copy of ``data``; unknown keys are left for the schema to reject by name."""
    data = json.loads(json.dumps(data, default=str))
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(map(str, path[: i + 1]))
            if isinstance(node, list):
                if not isinstance(part, int) or part >= len(node):
                    raise ParamsError(
                        f"override {item!r}: {where} is not an index of a {len(node)}-item list"
                    )
                node = node[part]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise ParamsError(f"override {item!r}: {where} is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise ParamsError(f"override {item!r}: index {last} is outside a {len(node)}-item list")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ParamsError(f"override {item!r}: {'.'.join(map(str, path[:-1]))} is a value, not a section")
    return data


def load_params(
    profile_or_path: str | Path | None = None, overrides: Sequence[str] = (), *, check_paths: bool = True
) -> Params:
    """Load, override and validate a params file; raise :class:`ParamsError` naming file, key path and expectation."""
    path = profile_path(profile_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (REPO_DIR / "params").glob("*.yaml")))
        raise ParamsError(f"params file not found: {path} (profiles shipped: {known})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ParamsError(
            f"{path}: line {line} is not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(
            f"{path}: expected a mapping of sections (run, model, data, ...), got {type(data).__name__}"
        )
    overrides = tuple(overrides)
    data = apply_overrides(data, overrides)
    return validate_params(data, source_file=path, overrides=overrides, check_paths=check_paths)


def validate_params(
    data: dict[str, Any],
    *,
    source_file: Path | None = None,
    overrides: Sequence[str] = (),
    check_paths: bool = True,
) -> Params:
    """Validate an already-parsed mapping (e.g. built in a test or a notebook)."""
    base = project_root_for(source_file) if source_file else Path.cwd()
    context = {"base_dir": base, "check_paths": check_paths}
    try:
        params = Params.model_validate(data, context=context)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, source_file, overrides)) from None
    return params.model_copy(
        update={"source_file": source_file.resolve() if source_file else None, "overrides": tuple(overrides)}
    )


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")  # pydantic's names for union members


def _format_errors(exc: ValidationError, source_file: Path | None, overrides: Sequence[str]) -> str:
    where = str(source_file) if source_file else "params"
    override_keys = {item.partition("=")[0].strip(): item for item in overrides}
    problems: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        # drop union-member tags ("str", "list[...]", "function-after[...]") so a union fails as one key
        loc = [p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p))]
        key = _dotted(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            msg = f"unknown key; expected one of: {', '.join(allowed)}" if allowed else "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.setdefault(key, [])
        if msg not in problems[key]:
            problems[key].append(msg)
        if "input" in err and err["type"] not in (
            "value_error",
            "assertion_error",
            "missing",
            "extra_forbidden",
        ):
            got = f"(got {redacted(err['input'])})"
            if got not in problems[key]:
                problems[key].append(got)
    lines = [f"{where}: {len(problems)} invalid parameter(s)"]
    for key, msgs in problems.items():
        got = [m for m in msgs if m.startswith("(got ")]
        text = " or ".join(m for m in msgs if not m.startswith("(got "))
        plain = re.sub(
            r"\[(\d+)\]", r".\1", key
        )  # data.sources[0].path -> data.sources.0.path, as overrides spell it
        origin = next(
            (
                f" [from override -o {k + '=<not shown>' if looks_like_secret(item.partition('=')[2]) else item}]"
                for k, item in override_keys.items()
                if plain == k or plain.startswith(k + ".")
            ),
            "",
        )
        lines.append(f"  - {key or '<top level>'}: {text}{' ' + got[0] if got else ''}{origin}")
    return "\n".join(lines)


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(loc: Sequence[Any]) -> list[str]:
    """Field names of the section at ``loc``, to turn 'extra inputs' into a did-you-mean list."""
    model: Any = Params
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for arg in list(candidates):
            candidates.extend(getattr(arg, "__args__", ()))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return [name for name, f in model.model_fields.items() if not f.exclude]


def dump_params(params: Params) -> str:
    """The resolved params as YAML (what ``arabic-r1 params show`` prints and manifests keep)."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
