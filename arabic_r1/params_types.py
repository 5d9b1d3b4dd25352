"""The building blocks of the params schema: the strict base of every section, the constrained number types,
the bounds no machine could exceed, and path resolution against the project root. The sections are in params.py
(the whole :class:`Params`, run, model, eval, report) and params_data.py, params_distill.py, params_train.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
)

from arabic_r1.benchmarks import check_names as check_benchmark_names
from arabic_r1.errors import ExplainedError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

EMBEDDED_MODEL = "embedded"


class ParamsError(ExplainedError, ValueError):
    """A params file or override that cannot drive a run; the message is meant for the user as is."""


# --------------------------------------------------------------------------------------------------- paths
def project_root_for(params_file: Path) -> Path:
    """Where relative paths of ``params_file`` point: the folder above ``params/``, else the file's folder."""
    folder = params_file.resolve().parent
    return folder.parent if folder.name == "params" else folder


def resolve_path(value: Any, info: ValidationInfo, what: str, *, must_exist: bool = True) -> Path | None:
    """Validate a path value from a params file: a string, made absolute against the project root, and checked."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        raise ValueError(f"expected a path to a {what} (a string)")
    context = info.context or {}
    path = Path(value).expanduser()
    if not path.is_absolute() and context.get("base_dir") is not None:
        path = Path(context["base_dir"]) / path
    path = path.resolve()
    if must_exist and context.get("check_paths", True) and not path.exists():
        raise ValueError(f"{what} does not exist: {path}")
    return path


class Section(BaseModel):
    """Strict base: unknown keys and silent type coercion (e.g. "3" -> 3) are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]

# Counts no machine could run, so that a typo (``max_steps: 1e30``) fails here and not hours into a run.
MAX_STEPS = 10**9  # 10 optimizer steps a second for three years; the paper's SFT takes a few thousand
MAX_TOKENS = 10**14  # 100T tokens: several times the largest public pre-training corpus (FineWeb, 15T)


def at_most(limit: int, why: str) -> AfterValidator:
    def check(v: int | None) -> int | None:
        if v is not None and v > limit:
            raise ValueError(f"{v:,} is more than {limit:,}, {why}")
        return v

    return AfterValidator(check)


STEPS_BOUND = at_most(
    MAX_STEPS, "more steps than any machine could run (params.MAX_STEPS: 10 a second for 3 years)"
)
Steps = Annotated[int, Field(gt=0), STEPS_BOUND]
Tokens = Annotated[
    int,
    Field(gt=0),
    at_most(
        MAX_TOKENS,
        "more tokens than any machine could process (params.MAX_TOKENS: "
        "several times FineWeb's 15T, the largest public corpus)",
    ),
]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
# names from the benchmark registry (arabic_r1/benchmarks.py), which may grow after this module is imported
BenchmarkNames = Annotated[list[str], AfterValidator(check_benchmark_names)]
