"""Freshness follows the code: a phase's manifest keys its notebook's code and the package modules it reaches."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from arabic_r1 import code_digest, manifest
from arabic_r1.code_digest import code_digests
from arabic_r1.manifest import check_fresh
from arabic_r1.phases import PHASES, find_phase


def _notebook(folder: Path, code: str, prose: str = "# a phase") -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(prose), nbformat.v4.new_code_cell(code)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "04_moe_lora_sft.ipynb")
    return folder


def test_the_closure_follows_imports_through_modules_and_functions(tmp_path: Path) -> None:
    nbs = _notebook(tmp_path, "from arabic_r1 import train_views as views\n%matplotlib inline\n")
    files = code_digests("04_moe_lora_sft", nbs)
    # train_views imports moe_lora at module level; moe_lora imports params; the package __init__ always runs
    for f in ("notebooks/04_moe_lora_sft.ipynb", "arabic_r1/train_views.py", "arabic_r1/moe_lora.py",
              "arabic_r1/params.py", "arabic_r1/__init__.py"):  # fmt: skip
        assert f in files, f"{f} missing from {sorted(files)}"
    assert "arabic_r1/report.py" not in files  # phase 06's code is not phase 04's
    assert code_digests("99_nothing", nbs) == {}  # no shipped notebook: nothing to key


def test_code_edits_change_the_digest_prose_edits_do_not(tmp_path: Path) -> None:
    base = code_digests("04_moe_lora_sft", _notebook(tmp_path / "a", "import arabic_r1.train_views"))
    prose = code_digests(
        "04_moe_lora_sft", _notebook(tmp_path / "b", "import arabic_r1.train_views", "# reworded")
    )
    code = code_digests("04_moe_lora_sft", _notebook(tmp_path / "c", "import arabic_r1.train_views\nx = 1"))
    nb = "notebooks/04_moe_lora_sft.ipynb"
    assert prose == base and code[nb] != base[nb]
    assert {k: v for k, v in code.items() if k != nb} == {k: v for k, v in base.items() if k != nb}


def test_a_shipped_notebook_reaches_its_phase_module() -> None:
    for phase, module in [("01_data_mixture", "data"), ("03_trace_verification", "verify"), ("04_moe_lora_sft", "train"),
                          ("05_oall_evaluation", "evaluate"), ("06_paper_report", "report")]:  # fmt: skip
        assert f"arabic_r1/{module}.py" in code_digests(phase), phase


def test_a_changed_module_makes_its_phases_stale_and_says_which(smoke_run, monkeypatch) -> None:
    _, params, _ = smoke_run
    for p in PHASES:
        fresh, reason = check_fresh(p, params, params.run_dir)
        assert fresh, f"{p.slug}: {reason}"
        recorded = json.loads((params.run_dir / p.slug / "manifest.json").read_text())["key"]["code"]
        assert recorded == code_digests(p.slug), p.slug
    real = code_digest.code_digests

    def edited(slug: str, *a) -> dict[str, str]:  # as if arabic_r1/train.py had been edited since the run
        return {f: ("0" * 16 if f == "arabic_r1/train.py" else d) for f, d in real(slug, *a).items()}

    monkeypatch.setattr(manifest, "code_digests", edited)
    stale = {p.slug: check_fresh(p, params, params.run_dir) for p in PHASES}
    assert stale["04_moe_lora_sft"] == (False, "code changed: arabic_r1/train.py")
    for slug in (
        "00_environment",
        "01_data_mixture",
        "02_cot_distillation",
        "03_trace_verification",
        "05_oall_evaluation",
    ):
        assert stale[slug][0], f"{slug} does not run train.py: {stale[slug]}"
    # the phases after it re-run through their inputs: once phase 04 has re-run, its outputs have a new digest
    real_read = manifest.read_manifest

    def retrained(run_dir, phase):
        m = real_read(run_dir, phase)
        return {**m, "outputs_digest": "0" * 16} if m and phase.name == "moe_lora_sft" else m

    monkeypatch.setattr(manifest, "read_manifest", retrained)
    for slug in ("05_oall_evaluation", "06_paper_report"):
        assert check_fresh(find_phase(slug), params, params.run_dir) == (
            False,
            "input 'moe_lora_sft' changed",
        ), slug


def test_a_manifest_without_code_digests_is_stale(smoke_run, tmp_path: Path) -> None:
    import shutil

    _, params, _ = smoke_run
    phase = find_phase("environment")
    run_copy = tmp_path / "run"
    shutil.copytree(params.run_dir / phase.slug, run_copy / phase.slug)
    path = run_copy / phase.slug / "manifest.json"
    m = json.loads(path.read_text())
    del m["key"]["code"]
    path.write_text(json.dumps(m))
    fresh, reason = check_fresh(phase, params, run_copy)
    assert not fresh and reason.startswith("code digests not recorded"), reason


@pytest.mark.parametrize("slug", [p.slug for p in PHASES])
def test_every_shipped_notebook_parses(slug: str) -> None:
    assert f"notebooks/{slug}.ipynb" in code_digests(slug)
