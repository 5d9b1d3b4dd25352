"""The kill harness: SIGKILL the runner, and separately the kernel, at seeded random moments of phases 02 and 04.

Each trial kills a run that is writing (the kill waits for the run's own progress: a few more traces, a few more
training steps, then a random few hundred milliseconds), checks that no process of the killed run is alive 5 s
later, and resumes. After the last kill a resume finishes the phase, and the result must equal an uninterrupted
reference: every trace once (0 lost, 0 duplicated, the same text), every training step's loss the same.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arabic_r1.cot import read_traces
from arabic_r1.jsonl import read_jsonl
from arabic_r1.pipeline import is_kernel
from arabic_r1.run_owner import read_lock, run_processes

RUNNER = [str(Path(sys.executable).parent / "arabic-r1")]
AFTER_KILL_S = 5.0
PER_KILL = 8  # traces or training steps of room per kill, so that every kill lands while the run is writing


@pytest.fixture(scope="module")
def base(smoke_run) -> Path:
    """The suite's smoke project (every phase complete), copied for each run below."""
    return smoke_run[0]


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A failing trial must not leave its runner (and so its notebook) behind for the next test."""
    yield
    for proc in STARTED:
        if proc.poll() is None:
            proc.terminate()  # the runner's watchdog then ends the notebook's processes
            proc.wait(timeout=30)
    STARTED.clear()


def _copy(base: Path, dest: Path, phase: str) -> Path:
    """The base project without the outputs of ``phase`` (the smoke run's own), which the test runs afresh."""
    shutil.copytree(base, dest, symlinks=True)
    shutil.rmtree(dest / "runs" / "smoke" / phase)
    return dest


def _runner(project: Path, phase: str, overrides: list[str]) -> subprocess.Popen:
    cmd = [*RUNNER, "run", phase, "--params", str(project / "params" / "smoke.yaml"),
           "--notebooks", str(project / "notebooks")]  # fmt: skip
    for o in overrides:
        cmd += ["-o", o]
    STARTED.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return STARTED[-1]


def _progress(path: Path, field: str | None) -> int:
    """Traces written (field None) or the last logged training step, from complete lines only."""
    try:
        lines = [x for x in path.read_text(encoding="utf-8").split("\n")[:-1] if x.strip()]
    except OSError:
        return 0
    if field is None:
        return len(lines)
    try:
        return json.loads(lines[-1])[field] if lines else 0
    except (ValueError, KeyError):
        return 0


def _kill_during_work(project: Path, proc: subprocess.Popen, progress_file: Path, field: str | None, target: int,
                      victim: str, rng: random.Random) -> str:  # fmt: skip
    """Wait for ``target`` progress, then SIGKILL the runner or the kernel; returns the run's token."""
    run_dir = project / "runs" / "smoke"
    deadline = time.monotonic() + 300
    while read_lock(run_dir).get("pid") != proc.pid or _progress(progress_file, field) < target:
        assert proc.poll() is None, f"the run ended before progress {target}: {proc.stdout.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no progress to {target} in 300 s"
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    token = read_lock(run_dir)["token"]
    if victim == "runner":
        proc.send_signal(signal.SIGKILL)
    else:
        kernels = [p for p in run_processes(token) if is_kernel(p)]
        assert len(kernels) == 1, kernels
        kernels[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    while run_processes(token) and time.monotonic() - killed < AFTER_KILL_S:
        time.sleep(0.1)
    left = [(p.pid, " ".join(p.cmdline())[:120]) for p in run_processes(token)]
    assert not left, (
        f"{AFTER_KILL_S:.0f} s after killing the {victim}, processes of the run are alive: {left}"
    )
    rc = proc.wait(timeout=60)
    assert rc != 0, f"killing the {victim} did not fail the run"
    return token


def _trials(kills: int, seed: int) -> list[str]:
    victims = ["runner", "kernel"] * kills
    random.Random(seed).shuffle(victims)
    return victims


def _finish(project: Path, phase: str, overrides: list[str]) -> None:
    proc = _runner(project, phase, overrides)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]


def _phase02_overrides(server, project: Path, traces: int) -> list[str]:
    """The served tiny model as the teacher, greedy and one request at a time (the reference's text is exact)."""
    return ["distill.backend=openai", f"distill.base_url={server.url}", f"distill.teacher={server.model}",
            "distill.temperature=0.0", "distill.max_new_tokens=8", f"distill.max_items={traces}",
            "distill.concurrency=1", f"distill.cache_dir={project / 'teacher_cache'}"]  # fmt: skip


@pytest.mark.parametrize(  # the default suite kills the runner once and the kernel once; more kills: make test-slow
    "kills", [1, pytest.param(5, marks=pytest.mark.slow), pytest.param(20, marks=pytest.mark.slow)]
)
def test_phase_02_killed_runner_and_kernel_lose_and_duplicate_nothing(base, server, tmp_path: Path, kills: int) -> None:  # fmt: skip
    n = PER_KILL * 2 * kills
    ref = _copy(base, tmp_path / "ref", "02_cot_distillation")
    _finish(ref, "02", _phase02_overrides(server, ref, n))
    project = _copy(base, tmp_path / "killed", "02_cot_distillation")
    traces = project / "runs" / "smoke" / "02_cot_distillation" / "traces.jsonl"
    overrides = _phase02_overrides(server, project, n)
    rng = random.Random(1302 + kills)
    for i, victim in enumerate(_trials(kills, seed=13 + kills)):
        proc = _runner(project, "02", overrides)
        if i == 0:  # a second run on the same folder is refused while the first one writes, naming its PID
            while read_lock(project / "runs" / "smoke").get("pid") != proc.pid:
                time.sleep(0.05)
            second = _runner(project, "02", overrides)
            out, _ = second.communicate(timeout=60)
            assert second.returncode == 1 and f"PID {proc.pid}" in out, out[-2000:]
        target = min(_progress(traces, None) + rng.randint(1, 3), n - 1)
        _kill_during_work(project, proc, traces, None, target, victim, rng)
    _finish(project, "02", overrides)
    lines = [json.loads(x) for x in traces.read_text(encoding="utf-8").splitlines()]
    ok = [r["prompt_id"] for r in lines if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) == n, f"{len(ok)} ok lines for {len(set(ok))} prompts (of {n})"
    expected = {r["prompt_id"]: r["raw_text"] for r in read_traces(ref / traces.relative_to(project))}
    assert {r["prompt_id"]: r["raw_text"] for r in read_traces(traces)} == expected


@pytest.mark.parametrize(  # the default suite kills the runner once and the kernel once; more kills: make test-slow
    "kills", [1, pytest.param(5, marks=pytest.mark.slow), pytest.param(20, marks=pytest.mark.slow)]
)
def test_phase_04_killed_runner_and_kernel_resume_loss_for_loss(base, tmp_path: Path, kills: int) -> None:
    steps = PER_KILL * 2 * kills
    overrides = [f"train.max_steps={steps}", "train.save_steps=3"]
    ref = _copy(base, tmp_path / "ref", "04_moe_lora_sft")
    _finish(ref, "04", overrides)
    project = _copy(base, tmp_path / "killed", "04_moe_lora_sft")
    log = project / "runs" / "smoke" / "04_moe_lora_sft" / "train_log.jsonl"
    rng = random.Random(1304 + kills)
    for victim in _trials(kills, seed=14 + kills):
        target = min(_progress(log, "step") + rng.randint(1, 4), steps - 1)
        _kill_during_work(project, _runner(project, "04", overrides), log, "step", target, victim, rng)
    _finish(project, "04", overrides)
    summary = json.loads((log.parent / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["resumed_from"], "the final run did not resume"
    got = [(r["step"], r["loss"]) for r in read_jsonl(log)]
    assert got == [(r["step"], r["loss"]) for r in read_jsonl(ref / log.relative_to(project))]
    assert [s for s, _ in got] == list(range(1, steps + 1))


@pytest.fixture
def neighbour():
    """Another CPU-bound process pinned to the first core this test may use (a busy shared machine)."""
    import os

    core = min(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(proc.pid, {core})
    time.sleep(1.0)
    yield core
    proc.kill()
    proc.wait()


def test_auto_threads_leave_the_busy_core_to_its_neighbour(neighbour, monkeypatch) -> None:
    import os

    from arabic_r1.notebook import auto_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # `make test`'s workers set it (tests/conftest.py)
    assert auto_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    monkeypatch.setenv(
        "OMP_NUM_THREADS", "1"
    )  # a scheduler's cap (Slurm's --cpus-per-task) wins over free cores
    assert auto_threads(sample_s=0.1) == 1


@pytest.mark.slow  # 80-110 s; the default suite keeps its parts: test_pipeline's busy-but-silent run is not
# stopped, test_train's save_on_time test asks for a checkpoint by the clock, test_train's killed run resumes
# loss for loss, and this file's kill trials
def test_phase_04_on_a_busy_machine_resumes_from_a_time_checkpoint(base, neighbour, tmp_path: Path) -> None:
    """Beside a CPU-bound neighbour, with a short stall limit: the phase is slower, not stopped; killed after its
    first checkpoint taken on time (save_steps never comes), the resumed run's losses equal an uninterrupted run's."""
    steps = 40
    overrides = [f"train.max_steps={steps}", "train.save_steps=1000", "train.save_minutes=0.05",
                 "run.stall_timeout_s=30", "run.torch_threads=1"]  # fmt: skip
    ref = _copy(base, tmp_path / "ref", "04_moe_lora_sft")
    _finish(ref, "04", overrides)
    project = _copy(base, tmp_path / "killed", "04_moe_lora_sft")
    phase_dir = project / "runs" / "smoke" / "04_moe_lora_sft"
    proc = _runner(project, "04", overrides)
    deadline = time.monotonic() + 300
    while not list((phase_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, f"the run ended before a time checkpoint: {proc.stdout.read()[-2000:]}"
        assert time.monotonic() < deadline, "no time-based checkpoint in 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(AFTER_KILL_S)
    _finish(project, "04", overrides)
    summary = json.loads((phase_dir / "train_summary.json").read_text(encoding="utf-8"))
    resumed = int(str(summary["resumed_from"]).rsplit("-", 1)[-1])
    assert 0 < resumed < steps, summary["resumed_from"]  # a checkpoint save_steps=1000 never asked for
    got = [(r["step"], r["loss"]) for r in read_jsonl(phase_dir / "train_log.jsonl")]
    ref_log = ref / "runs" / "smoke" / "04_moe_lora_sft" / "train_log.jsonl"
    assert got == [(r["step"], r["loss"]) for r in read_jsonl(ref_log)]
    assert [s for s, _ in got] == list(range(1, steps + 1))
