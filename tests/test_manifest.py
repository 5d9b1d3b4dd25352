"""Manifests in process: what a phase records, how a later phase finds its inputs, and every reason a phase is
stale (the runner's skip decision rests on these; a wrong "fresh" silently reuses a stale result)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from arabic_r1 import manifest
from arabic_r1.digests import json_digest, path_digest
from arabic_r1.manifest import (
    PhaseError,
    base_model_path,
    check_fresh,
    completed_manifest,
    freshness_key,
    read_manifest,
    start_phase,
    upstream_artifact,
    upstream_outputs,
)
from arabic_r1.params_loading import load_params
from arabic_r1.phases import Phase

# alpha writes two outputs; beta reads all of alpha; gamma reads only alpha's "a" and keys a shipped resource
PH = (
    Phase("00", "alpha", ("data",)),
    Phase("01", "beta", ("train",), ("alpha",)),
    Phase("02", "gamma", ("eval", "run.seed"), ("alpha/a",), resources=("chat_template.jinja",)),
)
ALPHA, BETA, GAMMA = PH


@pytest.fixture
def params(project: Path, monkeypatch):
    # Phase code digests are the real code_digest's job (test_code_digest.py); here one dict stands for them.
    monkeypatch.setattr(manifest, "code_digests", lambda slug: {"arabic_r1/x.py": slug})
    f = project / "params" / "t.yaml"
    f.write_text(yaml.safe_dump({"data": {"token_budget": 100}, "run": {"name": "r"}}))
    return load_params(f)


def _finish(p, phase: Phase, run_dir: Path, **outputs: str) -> dict:
    pr = start_phase(phase, p, run_dir, PH)
    paths = {}
    for name, text in outputs.items():
        paths[name] = pr.dir / f"{name}.txt"
        paths[name].write_text(text)
    return pr.finish(paths, {"n": 1})


def _edit(run_dir: Path, phase: Phase, **changes) -> None:
    f = run_dir / phase.slug / "manifest.json"
    m = json.loads(f.read_text())
    for dotted, value in changes.items():
        node = m
        *path, last = dotted.split("__")
        for k in path:
            node = node[k]
        node[last] = value
    f.write_text(json.dumps(m))


def test_finish_records_outputs_relative_with_digests(params, tmp_path: Path) -> None:
    run = tmp_path / "run"
    pr = start_phase(ALPHA, params, run, PH)
    running = read_manifest(run, ALPHA)
    assert running["status"] == "running" and running["phase"] == "00_alpha" and running["run_name"] == "run"
    assert completed_manifest(run, ALPHA) is None  # a crash here leaves it stale
    folder = pr.dir / "folder"
    folder.mkdir()
    (folder / "f").write_text("x")
    (pr.dir / "a.txt").write_text("A")
    m = pr.finish({"a": pr.dir / "a.txt", "folder": str(folder)}, {"acc": 0.5})
    assert m["status"] == "complete" and m["metrics"] == {"acc": 0.5}
    assert m["outputs"] == {
        "a": {"path": "00_alpha/a.txt", "digest": path_digest(pr.dir / "a.txt")},
        "folder": {"path": "00_alpha/folder", "digest": path_digest(folder)},
    }
    assert m["outputs_digest"] == json_digest({k: v["digest"] for k, v in m["outputs"].items()})
    assert m["key"] == freshness_key(ALPHA, params, run, PH) and m["started_at"] == running["started_at"]
    assert m["duration_s"] >= 0 and m["finished_at"] >= m["started_at"]
    assert read_manifest(run, ALPHA) == m == completed_manifest(run, ALPHA)
    assert pr.finish({"a": pr.dir / "a.txt"})["metrics"] == {}


def test_finish_refuses_missing_and_outside_outputs(params, tmp_path: Path) -> None:
    pr = start_phase(ALPHA, params, tmp_path / "run", PH)
    with pytest.raises(
        PhaseError, match=r"^phase 00_alpha: output 'a' was not written \(.*/00_alpha/nope\)$"
    ):
        pr.finish({"a": pr.dir / "nope"})
    (tmp_path / "out.txt").write_text("x")
    with pytest.raises(
        PhaseError, match=r"^phase 00_alpha: output 'b' \(.*out.txt\) is outside the run folder"
    ):
        pr.finish({"b": tmp_path / "out.txt"})
    assert read_manifest(tmp_path / "run", ALPHA)["status"] == "running"


def test_unreadable_manifests_count_as_none(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "00_alpha"
    folder.mkdir()
    assert read_manifest(tmp_path, ALPHA) is None  # never ran: no warning
    for text, says in [("{", "is not readable JSON"), (b"\xff\xfe", "is not readable JSON"),
                       ("[1]", "is not a manifest"), ('{"outputs": []}', "is not a manifest")]:  # fmt: skip
        f = folder / "manifest.json"
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="arabic_r1.manifest"):
            assert read_manifest(tmp_path, ALPHA) is None
        (said,) = caplog.messages
        if says == "is not readable JSON":
            assert said.startswith(f"{f} is not readable JSON (") and said.endswith("): treated as no manifest, "
                                                                                  "the phase will run")  # fmt: skip
            reason = said.split("JSON (", 1)[1].removesuffix("): treated as no manifest, the phase will run")
            assert reason.strip() not in ("", "None")  # the parser's own words
        else:
            assert (
                said == f"{f} is not a manifest (a JSON object): treated as no manifest, the phase will run"
            )
    f.write_text('{"status": "complete"}')  # no outputs at all is a manifest without outputs
    assert read_manifest(tmp_path, ALPHA) == {"status": "complete"} == completed_manifest(tmp_path, ALPHA)


def test_upstream_lookup_reads_only_declared_inputs(params, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(PhaseError) as err:
        upstream_artifact(run, "gamma", "alpha/a", PH)
    assert str(err.value) == (
        f"phase gamma needs output 'a' of phase 00_alpha, which has not completed in {run}: run phase 00 first"
    )
    with pytest.raises(PhaseError, match=r"^phase beta needs the outputs of phase 00_alpha, which has not"):
        upstream_outputs(run, "beta", "alpha", PH)
    _finish(params, ALPHA, run, a="A", b="B")
    assert upstream_outputs(run, "beta", "alpha", PH) == {
        "a": run / "00_alpha/a.txt",
        "b": run / "00_alpha/b.txt",
    }
    assert upstream_artifact(run, "gamma", "alpha/a", PH) == run / "00_alpha/a.txt"
    assert (
        upstream_artifact(run, "beta", "alpha/b", PH) == run / "00_alpha/b.txt"
    )  # beta declares all of alpha
    with pytest.raises(ValueError, match=r"^phase gamma reads alpha/b but the phase table does not list it"):
        upstream_artifact(run, "gamma", "alpha/b", PH)
    with pytest.raises(ValueError, match=r"^phase gamma reads alpha but"):
        upstream_outputs(run, "gamma", "alpha", PH)
    with pytest.raises(ValueError, match=r"^phase alpha reads beta but"):
        upstream_outputs(run, "alpha", "beta", PH)
    with pytest.raises(PhaseError) as err:
        upstream_artifact(run, "beta", "alpha/c", PH)
    assert str(err.value) == (
        f"phase beta needs output 'c' of phase 00_alpha, which its manifest in {run} does not list: re-run that phase"
    )


def test_a_manifest_without_outputs_and_an_output_named_with_a_slash(tmp_path: Path) -> None:
    phases = (Phase("00", "alpha", ("data",)), Phase("01", "beta", ("train",), ("alpha/dir/file",)),
              Phase("02", "gamma", ("eval",), ("alpha",)))  # fmt: skip
    (tmp_path / "00_alpha").mkdir()
    (tmp_path / "00_alpha" / "manifest.json").write_text('{"status": "complete"}')
    assert upstream_outputs(tmp_path, "gamma", "alpha", phases) == {}
    with pytest.raises(
        PhaseError, match=r"reads output 'dir/file' of phase 00_alpha, which its manifest does not list"
    ):
        freshness_key(phases[1], load_params("smoke"), tmp_path, phases)
    outputs = {"dir/file": {"path": "00_alpha/f"}}
    (tmp_path / "00_alpha" / "manifest.json").write_text(
        json.dumps({"status": "complete", "outputs": outputs})
    )
    assert upstream_artifact(tmp_path, "beta", "alpha/dir/file", phases) == tmp_path / "00_alpha/f"


def test_base_model_path_is_the_hub_id_or_phase_00s_folder(project: Path, tmp_path: Path) -> None:
    f = project / "params" / "m.yaml"
    f.write_text(yaml.safe_dump({"data": {"token_budget": 1}, "model": {"name_or_path": "org/model"}}))
    assert base_model_path(load_params(f), tmp_path, "moe_lora_sft") == "org/model"
    copy = load_params(f, ["model.bf16_copy=true"])
    with pytest.raises(PhaseError, match="needs output 'base_model' of phase 00_environment"):
        base_model_path(copy, tmp_path, "moe_lora_sft")
    env = tmp_path / "00_environment"
    (env / "m").mkdir(parents=True)
    (env / "manifest.json").write_text(
        json.dumps({"status": "complete", "outputs": {"base_model": {"path": "00_environment/m"}}})
    )
    assert base_model_path(copy, tmp_path, "moe_lora_sft") == str(tmp_path / "00_environment/m")


def test_the_key_holds_what_the_result_depends_on(params, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(PhaseError) as err:
        freshness_key(BETA, params, run, PH)
    assert str(err.value) == (
        "phase 01_beta reads the outputs of phase 00_alpha, which has not completed in run; run it first: "
        "arabic-r1 run 00 --params params/t.yaml (or arabic-r1 reproduce --params params/t.yaml, which runs every "
        "phase that is missing, in order)"
    )
    alpha = _finish(params, ALPHA, run, a="A", b="B")
    key = freshness_key(GAMMA, params, run, PH)
    assert key["inputs"] == {"alpha/a": alpha["outputs"]["a"]["digest"]}
    assert freshness_key(BETA, params, run, PH)["inputs"] == {"alpha": alpha["outputs_digest"]}
    assert key["params_hash"] == params.section_hash("eval", "run.seed") != params.section_hash("eval")
    assert key["sections"] == ["eval", "run.seed"] and key["code"] == {
        "arabic_r1/x.py": "02_gamma"
    }  # its own
    assert key["files"] == {
        "arabic_r1/resources/chat_template.jinja": path_digest(manifest.RESOURCES / "chat_template.jinja")
    }
    assert key["arabic_r1"] == manifest.arabic_r1.__version__
    _edit(run, ALPHA, status="running")
    with pytest.raises(PhaseError, match="has not completed"):
        freshness_key(GAMMA, params, run, PH)
    _edit(run, ALPHA, status="complete", outputs={"b": alpha["outputs"]["b"]})
    with pytest.raises(PhaseError) as err:
        freshness_key(GAMMA, params, run, PH)
    assert (
        str(err.value)
        == "phase 02_gamma reads output 'a' of phase 00_alpha, which its manifest does not list"
    )


def test_files_the_params_point_to_are_keyed_by_content_relative_to_the_project(
    project: Path, tmp_path: Path
) -> None:
    corpus = project / "data" / "c.jsonl"
    corpus.parent.mkdir()
    corpus.write_text('{"prompt": "one"}\n')
    source = {"name": "c", "path": "data/c.jsonl", "lang": "ar", "category": "x"}
    f = project / "params" / "f.yaml"
    f.write_text(
        yaml.safe_dump({"data": {"token_budget": 1, "sources": [source], "category_shares": {"x": 1}}})
    )
    p = load_params(f)
    assert freshness_key(ALPHA, p, tmp_path, PH)["files"] == {"data/c.jsonl": path_digest(corpus)}
    assert manifest._portable_path(tmp_path / "x", project / "elsewhere") == str(tmp_path / "x")


def test_each_change_makes_the_phase_stale_with_its_reason(params, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    assert check_fresh(GAMMA, params, run, PH) == (False, "no manifest (never ran)")
    start_phase(ALPHA, params, run, PH)
    assert check_fresh(ALPHA, params, run, PH) == (False, "last run did not complete (status: running)")
    alpha = _finish(params, ALPHA, run, a="A", b="B")
    gamma = _finish(params, GAMMA, run, g="G")
    assert check_fresh(GAMMA, params, run, PH) == (True, f"fresh (completed {gamma['finished_at']})")

    def stale_after(reason: str, **changes) -> None:
        _edit(run, GAMMA, **changes)
        assert check_fresh(GAMMA, params, run, PH) == (False, reason)
        (run / GAMMA.slug / "manifest.json").write_text(json.dumps(gamma))
        assert check_fresh(GAMMA, params, run, PH)[0]

    stale_after("params changed in eval, run.seed", key__params_hash="0")
    stale_after("input 'alpha/a' changed", key__inputs={})
    stale_after("input file arabic_r1/resources/chat_template.jinja changed", key__files={})
    stale_after("code digests not recorded (a manifest written before arabic_r1 kept them)",
                key={k: v for k, v in gamma["key"].items() if k != "code"})  # fmt: skip
    stale_after("code changed: arabic_r1/x.py", key__code={"arabic_r1/x.py": "2"})
    stale_after("code changed: a.py, arabic_r1/x.py", key__code={"arabic_r1/x.py": "2", "a.py": "0"})
    old_code = {f"{c}.py": "0" for c in "abcde"} | {"arabic_r1/x.py": "02_gamma"}
    stale_after("code changed: a.py, b.py, c.py and 2 more", key__code=old_code)
    stale_after(
        f"arabic_r1 version changed (0.0.1 -> {manifest.arabic_r1.__version__})", key__arabic_r1="0.0.1"
    )
    out = run / "02_gamma" / "g.txt"
    out.write_text("edited")
    assert check_fresh(GAMMA, params, run, PH) == (False, f"output 'g' was modified ({out})")
    out.unlink()
    assert check_fresh(GAMMA, params, run, PH) == (False, f"output 'g' is missing ({out})")
    out.write_text("G")
    assert check_fresh(GAMMA, params, run, PH)[0]
    (run / "00_alpha" / "a.txt").write_text("A2")
    _finish(params, ALPHA, run, a="A2", b="B")  # alpha re-ran with another "a": gamma must follow
    assert check_fresh(GAMMA, params, run, PH) == (False, "input 'alpha/a' changed")
    _finish(params, ALPHA, run, a="A", b="B2")  # only "b" changed: gamma does not read it
    assert (
        check_fresh(GAMMA, params, run, PH)[0]
        and alpha["outputs"]["a"] == read_manifest(run, ALPHA)["outputs"]["a"]
    )
    (run / "00_alpha" / "manifest.json").unlink()
    fresh, reason = check_fresh(GAMMA, params, run, PH)
    assert not fresh and reason.startswith(
        "phase 02_gamma reads the outputs of phase 00_alpha, which has not"
    )
    monkeypatch.setattr(
        manifest, "code_digests", lambda slug: {"arabic_r1/x.py": slug, "arabic_r1/y.py": "3"}
    )
    _finish(params, ALPHA, run, a="A", b="B")
    assert check_fresh(GAMMA, params, run, PH) == (
        False,
        "code changed: arabic_r1/y.py",
    )  # a file the code gained


def test_manifests_missing_parts_read_as_changes_not_crashes(params, tmp_path: Path) -> None:
    """A manifest written by an older arabic_r1 (no key, no inputs or files in it, no outputs) is stale for the right
    reason, or fresh when nothing it lacks matters; the "and N more" of changed code counts from the fourth file."""
    run = tmp_path / "run"
    _finish(params, ALPHA, run, a="A", b="B")
    gamma = _finish(params, GAMMA, run, g="G")
    f = run / GAMMA.slug / "manifest.json"

    def with_(**top) -> tuple[bool, str]:
        f.write_text(json.dumps({**gamma, **top}))
        return check_fresh(GAMMA, params, run, PH)

    assert with_(key={}) == (False, "params changed in eval, run.seed")
    f.write_text(json.dumps({k: v for k, v in gamma.items() if k != "key"}))
    assert check_fresh(GAMMA, params, run, PH) == (False, "params changed in eval, run.seed")
    no_inputs = {k: v for k, v in gamma["key"].items() if k != "inputs"}
    assert with_(key=no_inputs) == (False, "input 'alpha/a' changed")
    no_files = {k: v for k, v in gamma["key"].items() if k != "files"}
    assert with_(key=no_files) == (False, "input file arabic_r1/resources/chat_template.jinja changed")
    three = gamma["key"] | {"code": {"a.py": "0", "b.py": "0", "arabic_r1/x.py": "2"}}
    assert with_(key=three) == (False, "code changed: a.py, arabic_r1/x.py, b.py")
    four = gamma["key"] | {"code": {"a.py": "0", "b.py": "0", "c.py": "0", "arabic_r1/x.py": "2"}}
    assert with_(key=four) == (False, "code changed: a.py, arabic_r1/x.py, b.py and 1 more")
    outputs_gone = {k: v for k, v in gamma.items() if k != "outputs"}
    f.write_text(json.dumps(outputs_gone))
    assert check_fresh(GAMMA, params, run, PH)[0]


def test_provenance_versions_commit_device_memory(tmp_path: Path) -> None:
    from importlib import metadata

    v = manifest.package_versions(
        ("no-such-package-xyz", "torch")
    )  # one missing: skipped, the rest still read
    assert v == {"python": manifest.platform.python_version(), "arabic_r1": manifest.arabic_r1.__version__,
                 "torch": metadata.version("torch")}  # fmt: skip
    assert manifest.git_commit(tmp_path) is None  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert manifest.git_commit(tmp_path) == sha
    (tmp_path / "new").write_text("untracked files do not make it dirty")
    assert manifest.git_commit(tmp_path) == sha
    (tmp_path / "f").write_text("2")
    assert manifest.git_commit(tmp_path) == f"{sha}-dirty"
    d = manifest.device_summary()
    assert (
        d["torch_threads"] == torch.get_num_threads()
        and d["cpus"] == manifest.os.cpu_count()
        and "cuda" not in d
    )
    mem = manifest.peak_memory_mb()
    assert (
        set(mem) == {"rss_self", "rss_children"} and 50 < mem["rss_self"] < 50_000
    )  # MiB: this process holds torch


def test_what_a_running_and_a_finished_manifest_record(params, tmp_path: Path, caplog, monkeypatch) -> None:
    """The provenance a report prints: profile, params file, overrides, versions, commit, device, UTC times, the
    duration and peak memory; a phase named by string and a run folder from params."""
    import time as time_module

    clock = [100.0, 101.2345]  # the phase starts at 100 s, every later reading is 101.2345 s
    monkeypatch.setattr(time_module, "monotonic", lambda: clock.pop(0) if len(clock) > 1 else clock[0])
    pr = start_phase("alpha", params, None, PH)  # by name; the run folder from params
    assert pr.phase == ALPHA and pr.run_dir == params.run_dir.resolve()
    running = read_manifest(pr.run_dir, ALPHA)
    assert {k: running[k] for k in ("phase", "status", "profile", "params_file", "overrides")} == {
        "phase": "00_alpha", "status": "running", "profile": params.profile, "params_file": str(params.source_file),
        "overrides": []}  # fmt: skip
    assert (
        running["versions"] == manifest.package_versions() and running["device"] == manifest.device_summary()
    )
    assert running["git_commit"] == manifest.git_commit() and running["started_at"].endswith("+00:00")
    (pr.dir / "a.txt").write_text("A")
    with caplog.at_level(logging.INFO, logger="arabic_r1.manifest"):
        done = pr.finish({"a": pr.dir / "a.txt"})
    assert done["duration_s"] == 1.23 and done["finished_at"].endswith("+00:00")
    assert set(done["peak_memory_mb"]) == {"rss_self", "rss_children"}
    assert caplog.messages == ["phase 00_alpha complete in 1.2s"]
    from arabic_r1.params import Params

    inline = Params(data={"token_budget": 1}, run={"name": "r"})  # built in code, from no file
    assert start_phase(ALPHA, inline, tmp_path / "inline", PH)._base("x")["params_file"] is None
    other = load_params(params.source_file, ["run.seed=3"])
    assert start_phase(ALPHA, other, tmp_path / "r", PH)._base("x")["overrides"] == ["run.seed=3"]


def test_peak_memory_on_linux_macos_and_a_gpu(monkeypatch) -> None:
    """ru_maxrss is KiB on Linux and bytes on macOS; a GPU's peak joins when CUDA was used (both simulated here)."""
    import resource

    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mem = manifest.peak_memory_mb()
    assert mem["rss_self"] == pytest.approx(round(self_kib / 1024, 1), abs=2)
    assert mem["rss_children"] == round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    monkeypatch.setattr(manifest.sys, "platform", "darwin")
    assert manifest.peak_memory_mb()["rss_self"] == pytest.approx(round(self_kib / 2**20, 1), abs=0.01)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**20 + 2**19 + 2**15)
    assert manifest.peak_memory_mb()["gpu"] == 3.5
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU {i}")
    assert manifest.device_summary() == {"host": manifest.platform.node(), "cpus": manifest.os.cpu_count(),
                                         "platform": manifest.platform.platform(), "torch_threads": torch.get_num_threads(),
                                         "cuda": ["GPU 0", "GPU 1"]}  # fmt: skip
