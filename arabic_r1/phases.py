"""The phases of a run: which notebook, which params it reads, which earlier phases' artifacts it consumes.

This table is the contract the runner and the manifests share: a phase is stale when one of its params
sections or one of its inputs changed. Each phase writes into ``runs/<run_name>/<NN>_<name>/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class UnknownPhase(KeyError):
    """A phase name/number that is not in the table; the message lists the known ones."""


@dataclass(frozen=True)
class Phase:
    number: str
    name: str
    sections: tuple[str, ...]  # params sections (or dotted keys) whose change makes this phase stale
    inputs: tuple[str, ...] = ()  # earlier phases ("name") or single outputs ("name/output") this phase reads
    title: str = ""
    resources: tuple[str, ...] = ()  # files of arabic_r1/resources the phase's work depends on

    @property
    def slug(self) -> str:
        """``00_environment``: the notebook stem and the phase folder name."""
        return f"{self.number}_{self.name}"

    @property
    def notebook(self) -> str:
        return f"{self.slug}.ipynb"


PHASES: tuple[Phase, ...] = (
    Phase(
        "00",
        "environment",
        ("model", "run.seed"),
        (),
        "Environment and backbone",
        ("tokenizer_corpus.txt", "pretrain_corpus.txt", "pretrain_questions.jsonl", "chat_template.jinja"),
    ),
    Phase(
        "01",
        "data_mixture",
        ("data", "eval.source", "eval.mirror_dir", "run.seed"),
        ("environment/base_model",),
        "80/20 data mixture",
    ),
    Phase(
        "02",
        "cot_distillation",
        ("distill",),
        ("data_mixture/pool", "environment/base_model"),
        "Four-phase CoT distillation",
        ("templates",),
    ),
    Phase(
        "03",
        "trace_verification",
        ("verify", "model.reasoning_format"),
        ("cot_distillation/traces",),
        "Trace verification",
    ),
    Phase(
        "04",
        "moe_lora_sft",
        ("train", "run.seed"),
        ("environment/base_model", "trace_verification"),
        "MoE LoRA SFT",
    ),
    Phase(
        "05",
        "oall_evaluation",
        ("eval", "verify", "model.dtype", "model.reasoning_format"),  # verify: the student audit's checks
        ("environment/base_model", "moe_lora_sft"),
        "OALL v2 evaluation",
    ),
    Phase(
        "06",
        "paper_report",
        ("report.formats", "report.figure_formats", "report.dpi"),  # not report.dir: the output folder
        ("data_mixture", "cot_distillation", "trace_verification", "moe_lora_sft", "oall_evaluation"),
        "Paper-style report",
    ),
)


def find_phase(key: str, phases: Sequence[Phase] = PHASES) -> Phase:
    """Accept ``00``, ``0``, ``environment`` or ``00_environment``."""
    k = key.strip().removesuffix(".ipynb")
    for p in phases:
        if k in (p.number, p.name, p.slug) or (k.isdigit() and int(k) == int(p.number)):
            return p
    known = ", ".join(p.slug for p in phases)
    raise UnknownPhase(f"unknown phase {key!r}; expected one of: {known}")


def select_phases(
    phases: Sequence[Phase], only: Iterable[str] = (), start_from: str | None = None
) -> list[Phase]:
    """The phases to consider, in order: ``only`` restricts to those named, ``start_from`` drops earlier ones."""
    chosen = list(phases)
    if start_from is not None:
        first = find_phase(start_from, phases)
        chosen = chosen[chosen.index(first) :]
    only = list(only)
    if only:
        wanted = {find_phase(k, phases).slug for k in only}
        chosen = [p for p in chosen if p.slug in wanted]
    return chosen
