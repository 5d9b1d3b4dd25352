"""docs/params.md is generated from the schema and must not go stale."""

from __future__ import annotations

from arabic_r1.params_doc import DOC_PATH, keys, readers, render


def test_docs_params_md_is_current() -> None:
    assert DOC_PATH.is_file(), f"{DOC_PATH} is missing: run `make params-doc`"
    assert DOC_PATH.read_text(encoding="utf-8") == render(), f"{DOC_PATH} is stale: run `make params-doc`"


def test_every_key_is_listed_with_its_readers() -> None:
    text = render()
    listed = [k for k, _, _ in keys()]
    assert len(listed) == len(set(listed)) > 150
    for key in ("train.lora.per_family", "eval.benchmarks", "verify.checks", "distill.request_timeout_s"):
        assert f"| `{key}` |" in text
    enclosing = dict((k, e) for k, _, e in keys())
    assert "trace_checks" in readers("verify.max_tatweel_run", enclosing["verify.max_tatweel_run"])
    assert "plan" in readers("eval.benchmarks", enclosing["eval.benchmarks"])  # through `ep = params.eval`
    assert "moe_lora" in readers("train.lora.per_family", enclosing["train.lora.per_family"])
