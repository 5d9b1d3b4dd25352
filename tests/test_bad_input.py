"""Every bad file a user or a kill can leave gets a clear error naming the file and the key or line, or is counted.

One row per case: what is written, what is called, and what the message (or the count) must say. The source-row
and trace-log cases that need a whole phase run are in test_data.py and test_kill.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from arabic_r1.completions import ResponseCache
from arabic_r1.cot import read_traces
from arabic_r1.distill import TraceLog
from arabic_r1.jsonl import JsonlError, read_jsonl
from arabic_r1.manifest import check_fresh, read_manifest
from arabic_r1.params import REPO_DIR, ParamsError
from arabic_r1.params_loading import load_params
from arabic_r1.phases import find_phase

SECRET = "sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"


def _params_file(tmp: Path, text: bytes | str) -> Path:
    (tmp / "params").mkdir(exist_ok=True)
    path = tmp / "params" / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _smoke_with(tmp: Path, edit) -> Path:
    data = yaml.safe_load((REPO_DIR / "params" / "smoke.yaml").read_text(encoding="utf-8"))
    edit(data)
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False).replace(
        "arabic_r1/", f"{REPO_DIR}/arabic_r1/"
    )
    return _params_file(tmp, text)


PARAMS_CASES: dict[str, tuple[Any, list[str], list[str]]] = {  # name -> (file, overrides) builder, must say
    "not_utf8": (lambda t: (_params_file(t, b"run:\n  name: caf\xe9\n"), []), ["bad.yaml", "line 2", "not UTF-8"]),
    "duplicate_section": (lambda t: (_params_file(t, "run:\n  seed: 1\ndata:\n  token_budget: 5\nrun:\n  seed: 2\n"), []),
                          ["bad.yaml", "'run' appears twice", "lines 1 and 5"]),
    "duplicate_key": (lambda t: (_params_file(t, "train:\n  max_steps: 3\n  epochs: 1\n  max_steps: 4\n"), []),
                      ["bad.yaml", "'max_steps' appears twice", "lines 2 and 4"]),
    "empty_sources": (lambda t: (_smoke_with(t, lambda d: d["data"].update(sources=[])), []),
                      ["bad.yaml", "data: sources is an empty list"]),
    "steps_no_machine_runs": (lambda t: (_smoke_with(t, lambda d: d["train"].update(max_steps=10**30)), []),
                              ["bad.yaml", "train.max_steps", "params.MAX_STEPS"]),
    "tokens_no_machine_runs": (lambda t: (_smoke_with(t, lambda d: d["data"].update(token_budget=10**18)), []),
                               ["bad.yaml", "data.token_budget", "params.MAX_TOKENS"]),
    "float_steps": (lambda t: (_smoke_with(t, lambda d: None), ["train.max_steps=1e30"]), ["train.max_steps", "valid integer"]),
    "key_pasted_in_file": (lambda t: (_smoke_with(t, lambda d: d["distill"].update(api_key_env=SECRET)), []),
                           ["bad.yaml", "distill.api_key_env", "NAME of an environment variable", "not shown"]),
    "key_pasted_in_override": (lambda t: (_smoke_with(t, lambda d: None), [f"distill.api_key_env={SECRET}"]),
                               ["distill.api_key_env", "not shown"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PARAMS_CASES))
def test_bad_params_are_refused_naming_file_and_key(case: str, tmp_path: Path) -> None:
    build, must_say = PARAMS_CASES[case]
    path, overrides = build(tmp_path)
    with pytest.raises(ParamsError) as err:
        load_params(path, overrides)
    message = str(err.value)
    missing = [s for s in must_say if s not in message]
    assert not missing, f"{missing} not in: {message}"
    assert SECRET not in message and SECRET[8:] not in message


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    path = _params_file(tmp_path, "x: &d {seed: 1}\nrun:\n  <<: *d\n  seed: 2\n")
    with pytest.raises(ParamsError, match="x: unknown key"):  # parsed; only the unknown section is refused
        load_params(path, check_paths=False)


# ------------------------------------------------------------------------------------------- JSONL files
def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _rec(pid: str, status: str = "ok", text: str = "x") -> bytes:
    return (json.dumps({"prompt_id": pid, "status": status, "raw_text": text}) + "\n").encode()


def test_trace_readers_agree_with_the_writer_last_record_wins(tmp_path: Path) -> None:
    """A retried prompt (error, then ok) and a prompt written twice by two runs: one trace each, the last one."""
    path = _write(
        tmp_path / "traces.jsonl", _rec("a", "error") + _rec("b") + _rec("a", text="y") + _rec("b", text="z")
    )
    assert [(r["prompt_id"], r["raw_text"]) for r in read_traces(path)] == [("a", "y"), ("b", "z")]
    assert {k: r["raw_text"] for k, r in TraceLog(path).records.items()} == {"a": "y", "b": "z"}


def test_a_torn_last_line_is_repaired_in_logs_and_skipped_in_packs(tmp_path: Path, caplog) -> None:
    log = _write(tmp_path / "traces.jsonl", _rec("a") + b'{"prompt_id": "b", "sta')
    with caplog.at_level(logging.WARNING):
        assert [r["prompt_id"] for r in TraceLog(log).records.values()] == ["a"]
    assert "traces.jsonl: dropping a torn last line" in caplog.text
    assert log.read_bytes() == _rec("a")  # cut off, so the next append starts on a clean line
    entry = {"key": "k1", "response": {"text": "t"}}
    pack = _write(
        tmp_path / "cache" / "pack.jsonl", (json.dumps(entry) + "\n").encode() + b'{"key": "k2", "resp'
    )
    before = pack.read_bytes()
    assert ResponseCache(tmp_path / "cache").get("k1") == entry
    assert pack.read_bytes() == before  # a shipped pack is read-only


@pytest.mark.parametrize(
    "content, must_say",
    [
        (_rec("a") + b"{not json\n" + _rec("b"), "line 2: not valid JSON"),
        (_rec("a") + b"[1, 2]\n", "line 2: expected a JSON object, got a list"),
        (_rec("a") + b'{"raw_text": "no id"}\n', "line 2: the record has no 'prompt_id' field"),
        (_rec("a") + b'{"prompt_id": "caf\xe9"}\n', "line 2: not UTF-8"),
    ],
)
def test_damage_inside_a_jsonl_file_names_file_and_line(
    tmp_path: Path, content: bytes, must_say: str
) -> None:
    path = _write(tmp_path / "traces.jsonl", content)
    with pytest.raises(JsonlError) as err:
        read_traces(path)
    assert str(path) in str(err.value) and must_say in str(err.value)
    _write(tmp_path / "cache" / "pack.jsonl", content.replace(b"prompt_id", b"key"))
    with pytest.raises(JsonlError, match="pack.jsonl line 2"):
        ResponseCache(tmp_path / "cache").get("missing")


def test_read_jsonl_keeps_every_record_without_a_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", _rec("a") + b"\n" + _rec("a"))
    assert len(read_jsonl(path)) == 2


# --------------------------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("content", [b"[]", b"\x89PNG\r\n\x1a\n\x00\x00", b'"complete"', b'{"outputs": []}'])
def test_a_manifest_that_is_not_an_object_is_no_manifest(tmp_path: Path, caplog, content: bytes) -> None:
    phase = find_phase("00")
    _write(tmp_path / phase.slug / "manifest.json", content)
    params = load_params("smoke")
    with caplog.at_level(logging.WARNING):
        assert read_manifest(tmp_path, phase) is None
        assert check_fresh(phase, params, tmp_path) == (False, "no manifest (never ran)")
    assert "manifest.json" in caplog.text and "treated as no manifest" in caplog.text
