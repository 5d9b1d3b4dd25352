"""Phase 06 on a real smoke run: every number recomputed from the artifact it cites, the paper's from the CSV."""

from __future__ import annotations

import csv
import json
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
from conftest import REPO, SHARED_REFERENCE

from arabic_r1 import figures
from arabic_r1.paper_tables import oall_table
from arabic_r1.report import build_report, report_dir
from arabic_r1.report_tables import MISSING, REPORTED, ReportError, Run, Table, tex

# The paper's Table 1 as first transcribed, outside the package where the workspace has it; elsewhere the shipped
# copy (then the paper columns are checked against the file the report reads, not an independent one).
PAPER_CSV = next(p for p in (SHARED_REFERENCE / "paper_table1.csv", REPO / "arabic_r1" / "resources" / "paper_table1.csv")
                 if p.is_file() or p.parent.name == "resources")  # fmt: skip
TITLES = {"arabic_mmlu": "ArabicMMLU", "madinah_qa": "MadinahQA", "aratrust": "AraTrust",
          "arabic_exams": "Arabic EXAMS", "arabic_mmlu_ht": "ArabicMMLU-HT", "alrage": "ALRAGE", "alghafa": "AlGhafa"}  # fmt: skip
TABLE1_ORDER = tuple(TITLES)  # the paper's row order, written out here, not read from the registry


@pytest.fixture(scope="module")
def report(smoke_run):
    project, params, summary = smoke_run
    return params, params.run_dir, report_dir(params), summary


def _scores(run_dir: Path) -> dict:
    """scores.csv read by hand: {(model, benchmark, metric prefix): value}."""
    out = {}
    with (run_dir / "05_oall_evaluation" / "scores.csv").open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            out[(r["model"], r["benchmark"], r["metric"].split(" (")[0].split(" /")[0])] = float(r["value"])
    return out


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return {r[next(iter(r))]: r for r in csv.DictReader(f)}


def test_table1_equals_the_run_and_the_paper(report):
    params, run_dir, out, _ = report
    scores = _scores(run_dir)
    table = _read_csv(out / "tables" / "oall_table1.csv")
    paper = _read_csv(PAPER_CSV)
    assert list(table) == [*(TITLES[b] for b in TABLE1_ORDER), "Average"]
    for model in ("base", "finetuned"):
        lb = []
        for b in TABLE1_ORDER:
            want = scores[(model, b, "judge score" if b == "alrage" else "acc_norm")] * 100
            lb.append(want)
            assert float(table[TITLES[b]][f"{model} (leaderboard)"]) == pytest.approx(want, abs=1e-6)
            if b != "alrage":
                got = float(table[TITLES[b]][f"{model} (reasoning)"])
                assert got == pytest.approx(scores[(model, b, "accuracy")] * 100, abs=1e-6)
        assert float(table["Average"][f"{model} (leaderboard)"]) == pytest.approx(sum(lb) / 7, abs=1e-6)
        # the run's own seven-benchmark average agrees
        assert sum(lb) / 7 == pytest.approx(
            scores[(model, "average", "mean of 7 benchmarks")] * 100, abs=0.01
        )
    delta = "Δ fine-tuned − base (leaderboard)"
    for title, row in table.items():
        assert float(row[delta]) == pytest.approx(
            float(row["finetuned (leaderboard)"]) - float(row["base (leaderboard)"]),
            abs=2e-6,  # three roundings
        )
        for col in ("Arabic-DeepSeek-R1", "OALL category leader", "GPT-5.1", "DeepSeek-R1 (unadapted)"):
            assert float(row[f"{col} ({REPORTED})"]) == float(paper[title][col])  # the reference CSV
        assert row["OALL category leader model"] == paper[title]["OALL category leader model"]


def test_missing_numbers_render_as_a_dash_never_invented(report, tmp_path: Path):
    params, run_dir, _, _ = report
    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy, ignore=shutil.ignore_patterns("lighteval*", "merged", "base_model"))
    scores = run_copy / "05_oall_evaluation" / "scores.csv"
    rows = scores.read_text(encoding="utf-8").splitlines()
    scores.write_text(
        "\n".join(r for r in rows if not r.startswith("finetuned,alghafa,")) + "\n", encoding="utf-8"
    )
    t = oall_table(Run.open(run_copy))
    for col in ("finetuned (leaderboard)", "finetuned (reasoning)", "Δ fine-tuned − base (leaderboard)"):
        assert t.value("AlGhafa", col) is None and t.value("Average", col) is None
    assert t.value("AlGhafa", "base (leaderboard)") is not None
    md_row = next(ln for ln in t.markdown().splitlines() if ln.startswith("| AlGhafa"))
    assert md_row.count(MISSING) == 4  # leaderboard, reasoning and the two deltas
    assert re.search(r"\nAlGhafa & [\d.]+ & --- & [\d.]+ & --- & --- & --- &", t.latex())
    assert ",," in next(ln for ln in t.csv().splitlines() if ln.startswith("AlGhafa"))


def test_other_tables_equal_their_artifacts(report):
    params, run_dir, out, _ = report
    stats = json.loads((run_dir / "01_data_mixture" / "mixture_stats.json").read_text())
    comp = _read_csv(out / "tables" / "composition.csv")
    assert int(comp["Total"]["tokens"]) == stats["tokens"]
    assert int(comp["Total"]["ar tokens"]) == sum(c["tokens"] for c in stats["cells"] if c["lang"] == "ar")
    assert float(comp["Literature & critical analysis"]["paper tokens (M)"]) == 103.2
    cleaning = _read_csv(out / "tables" / "cleaning.csv")
    assert int(cleaning["rows read"]["total"]) == sum(s["rows_read"] for s in stats["sources"].values())
    assert int(cleaning["selected (in budget)"]["ar"]) == sum(
        s["selected"] for s in stats["sources"].values() if s["lang"] == "ar"
    )
    funnel = json.loads((run_dir / "03_trace_verification" / "funnel.json").read_text())
    ftable = _read_csv(out / "tables" / "distillation_funnel.csv")
    assert int(ftable["norms"]["remaining (all)"]) == funnel["overall"]["kept"]
    assert int(ftable["generated"]["remaining (ar)"]) == funnel["by_group"]["ar"]["steps"][0]["remaining"]
    summary = json.loads((run_dir / "04_moe_lora_sft" / "train_summary.json").read_text())
    train = _read_csv(out / "tables" / "training.csv")
    assert int(train["optimizer steps"]["value"]) == summary["steps"]
    assert int(train["tokens seen"]["value"]) == summary["tokens"]
    assert int(train["trainable parameters: routed experts"]["value"]) == summary["trainable_parameters"]["routed_experts"]  # fmt: skip


def test_student_table_equals_the_audit_and_report_shows_both_models(report):
    params, run_dir, out, _ = report
    audit = json.loads((run_dir / "05_oall_evaluation" / "student_audit.json").read_text())
    table = _read_csv(out / "tables" / "student.csv")
    for model, m in audit["models"].items():
        for b, s in [*m["benchmarks"].items(), ("All benchmarks", m["overall"])]:
            row = table[TITLES.get(b, b)]
            assert float(row[f"{model}: four-phase (%)"]) == pytest.approx(100 * s["four_phase"], abs=1e-6)
            # outputs cut off by the budget are counted apart from parse failures (their own column)
            assert float(row[f"{model}: parse failures (%)"]) == pytest.approx(
                100 * (1 - s["parsed"] - s["truncated"]), abs=1e-6
            )
            assert float(row[f"{model}: truncated (%)"]) == pytest.approx(100 * s["truncated"], abs=1e-6)
            assert float(row[f"{model}: Arabic language (%)"]) == pytest.approx(
                100 * s["pass_rate"]["language"], abs=1e-6
            )
    md = (out / "report.md").read_text(encoding="utf-8")
    section = md.split("## What the student learned", 1)[1].split("## Data", 1)[0]
    assert "**base**:" in section and "**finetuned**:" in section and "<think>" in section
    assert "at chance by construction" in section


def _balanced_braces(s: str) -> bool:
    depth = 0
    for m in re.finditer(r"(?<!\\)[{}]", s):
        depth += 1 if m.group(0) == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def test_latex_tables_are_well_formed_and_arabic_safe(report):
    _, _, out, _ = report
    for path in sorted((out / "tables").glob("*.tex")):
        text = path.read_text(encoding="utf-8")
        body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("%"))
        assert re.findall(r"\\begin\{(\w+)\}", body) == ["table", "tabular"], path.name
        assert re.findall(r"\\end\{(\w+)\}", body) == ["tabular", "table"], path.name
        assert all(k in body for k in (r"\toprule", r"\midrule", r"\bottomrule")), path.name
        assert _balanced_braces(body), path.name
        code = "\n".join(ln.removesuffix("{%") for ln in body.splitlines())  # "{%" ends the resizebox line
        code = re.sub(r"\\label\{[^}]*\}", "", code)  # labels may hold underscores
        for ch in "%#_":
            assert all(code[m.start() - 1] == "\\" for m in re.finditer(ch, code)), f"{path.name}: bare {ch}"
        assert "~" not in code and "^" not in code, path.name
        rows = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
        ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", body).group(1))
        assert all(len(re.findall(r"(?<!\\)&", r)) == ncols - 1 for r in rows), path.name
        assert "—" not in body and "<" not in body.replace(r"\textless{}", "")
    assert tex("تقرير 50% A_B <x>") == r"\textarabic{تقرير} 50\% A\_B \textless{}x\textgreater{}"
    assert tex("اللغة العربية & more") == r"\textarabic{اللغة العربية} \& more"


def test_intervals_and_paired_tests_equal_the_item_scores(report):
    """The smoke report's uncertainty tables, recomputed from phase 05's item_scores.jsonl: honest (wide) intervals
    on a few dozen items, the average's interval inside the range of the benchmarks'."""
    from arabic_r1.intervals import bootstrap, paired
    from arabic_r1.uncertainty_tables import p_text, read_item_scores

    params, run_dir, out, _ = report
    scores = read_item_scores(run_dir / "05_oall_evaluation" / "item_scores.jsonl")
    seed, n = params.run.seed, params.report.bootstrap_resamples
    iv_table = _read_csv(out / "tables" / "oall_intervals.csv")
    for model in ("base", "finetuned"):
        iv = bootstrap(scores[(model, "leaderboard")]["aratrust"], resamples=n, seed=seed)
        row = iv_table["AraTrust"]
        assert float(row[f"{model} (leaderboard)"]) == pytest.approx(100 * iv.value, abs=1e-4)
        assert float(row[f"{model} (leaderboard) 95% low"]) == pytest.approx(100 * iv.low, abs=1e-4)
        assert (
            float(row[f"{model} (leaderboard) 95% high"]) - float(row[f"{model} (leaderboard) 95% low"]) > 10
        )
        assert (
            float(iv_table["Average"][f"{model} (leaderboard)"])
            == pytest.approx(
                float(_read_csv(out / "tables" / "oall_table1.csv")["Average"][f"{model} (leaderboard)"]),
                abs=0.01,
            )
        )  # the interval table's average is Table 1's (which averages scores.csv's values, rounded to 4 decimals)
    diff = paired(scores[("finetuned", "reasoning")]["arabic_mmlu"], scores[("base", "reasoning")]["arabic_mmlu"],
                  resamples=n, seed=seed)  # fmt: skip
    row = _read_csv(out / "tables" / "oall_paired.csv")["ArabicMMLU"]
    assert float(row["Δ finetuned − base (reasoning)"]) == pytest.approx(100 * diff.diff.value, abs=1e-4)
    assert row["(reasoning) p"] == p_text(diff.p_value) and int(row["(reasoning) items"]) == diff.diff.n
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "How sure these numbers are" in md and "resolvable at 95%" in md


def test_figures_are_written_and_not_blank(report):
    import matplotlib.image as mpimg

    params, _, out, _ = report
    names = ["oall_benchmarks", "oall_deltas", "student", "composition", "funnel", "loss", "expert_load",
             "oall_intervals", "oall_forest"]  # fmt: skip
    for name in names:
        for fmt in params.report.figure_formats:
            path = out / "figures" / f"{name}.{fmt}"
            assert path.stat().st_size > 5_000, path
        img = mpimg.imread(out / "figures" / f"{name}.png")
        assert img.shape[0] > 200 and img.std() > 0.05, name  # drawn, not an empty canvas
    assert (out / "figures" / "oall_benchmarks.pdf").read_bytes().startswith(b"%PDF")


def test_arabic_labels_are_shaped_right_to_left():
    from matplotlib import _text_helpers
    from matplotlib.font_manager import FontProperties, findfont, get_font

    word = "تعلم بيت"  # every letter joins: no isolated forms, whose code points map to twin glyphs
    visual = figures.reshape_visual(word)
    assert visual != word  # presentation forms, visual order
    assert all(0xFB50 <= ord(c) <= 0xFEFF for c in visual if not c.isspace())
    logical_again = unicodedata.normalize("NFKC", visual[::-1])  # back to logical order and base letters
    assert logical_again == word
    family, path = figures.arabic_font()
    assert figures.font_covers(path, visual)
    font = get_font(findfont(FontProperties(family=family)))
    drawn = [it.glyph_index for it in _text_helpers.layout(figures.shape_ar(word), font)]
    joined = [font.get_char_index(ord(c)) for c in visual]
    isolated = [font.get_char_index(ord(c)) for c in word]
    assert drawn == joined != isolated  # matplotlib draws the joined, right-to-left glyphs


def test_shape_ar_falls_back_to_the_reshaper_without_libraqm(monkeypatch):
    monkeypatch.setattr(figures, "matplotlib_shapes_text", lambda: False)
    assert figures.shape_ar("العربية") == figures.reshape_visual("العربية") != "العربية"
    monkeypatch.setattr(figures, "matplotlib_shapes_text", lambda: True)
    assert figures.shape_ar("العربية") == "العربية"


def test_report_md_states_profile_provenance_and_measured_budget(report):
    params, run_dir, out, summary = report
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "at chance" in md and "pre-trained" in md and REPORTED in md
    from arabic_r1.manifest import git_commit

    assert f"git commit: `{git_commit(params.base_dir) or 'none (not a git checkout)'}`" in md
    assert "params/smoke.yaml` (sha256 " in md
    for rel in ("05_oall_evaluation/scores.csv", "01_data_mixture/mixture_stats.json",
                "03_trace_verification/funnel.json", "04_moe_lora_sft/train_summary.json"):  # fmt: skip
        assert f"`{rel}`" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    record = summary.record()
    assert record["cold"]
    stamped = re.search(r"\*\*(\d+) s\*\* wall, peak memory \*\*(\d+) MB\*\*", md)
    assert stamped and int(stamped.group(1)) == round(record["wall_s"])
    assert int(stamped.group(2)) == round(record["peak_rss_mb"]) and "cold: all 7 phases ran" in md
    assert str(params.base_dir) not in md  # a committed report names no one's folders


def test_a_run_that_has_not_finished_is_named(tmp_path: Path, report):
    params, run_dir, _, _ = report
    shutil.copytree(run_dir / "00_environment", tmp_path / "run" / "00_environment", ignore=shutil.ignore_patterns("base_model"))  # fmt: skip
    with pytest.raises(ReportError, match=r"phase 05_oall_evaluation has not completed"):
        build_report(params, tmp_path / "run", tmp_path / "out")


def test_table_rendering_rules():
    t = Table("t", "T", ["row", "a", "b"], [["x|y", 1234, None], ["z", 0.5, True]], decimals=1)
    md = t.markdown()
    assert "| x\\|y | 1,234 | — |" in md and "| z | 0.5 | yes |" in md
    assert t.csv().splitlines() == ["row,a,b", "x|y,1234,", "z,0.5,True"]
