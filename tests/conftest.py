"""Shared fixtures: the real data (``ARABIC_R1_TEST_DATA``, default ../shared/data), and tiny notebooks for
runner tests."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# `make test` runs two pytest-xdist workers on the CI machine's two cores: each worker and every notebook kernel,
# training rank or server it starts keeps to one torch thread (OMP_NUM_THREADS caps torch's default and the
# profiles' `run.torch_threads: auto`), so that the two never oversubscribe the cores (torch's threads slow 4-12x
# beside a busy neighbour) and a run's numbers do not depend on what the other worker was doing at the time.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
# Real rows and corpora whose licences (CC BY-NC-SA, CC BY-SA) keep them out of the repository: the workspace this
# project is built in keeps them next to the checkout; elsewhere point ARABIC_R1_TEST_DATA at an equivalent folder.
DATA_ENV = "ARABIC_R1_TEST_DATA"
SHARED = REPO.parent / "shared"
SHARED_DATA = Path(os.environ.get(DATA_ENV) or SHARED / "data")
SHARED_REFERENCE = (
    SHARED / "reference"
)  # the paper's numbers as first transcribed (the package ships its own copy)
HOW_TO_GET_DATA = f"""real test data not found at {SHARED_DATA} (set {DATA_ENV}, default ../shared/data).
It holds, one JSON object per line in the datasets' own columns, nothing cleaned:
  oall/<benchmark>/<split>.jsonl  rows of arabic_mmlu (test, dev), madinah_qa (test, dev), aratrust (test),
      arabic_exams (test, validation), as the hub datasets OALL v2 reads serve them (on a machine with hub access,
      `arabic-r1 benchmarks mirror --out DIR` downloads them; copy a few subsets' rows into this layout);
  corpus/ar_pud_sentences.jsonl, corpus/en_pud_sentences.jsonl  UD Arabic-PUD / English-PUD sentences {{"text"}}
      (github.com/UniversalDependencies); corpus/ar_arcd_paragraphs.jsonl  ARCD paragraphs {{"title", "context"}}
      (github.com/husseinmozannar/SOQAL, data/arcd-test.json)."""


def in_ci() -> bool:
    """Under CI every real-data test must run: a missing folder fails instead of skipping."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(folder: Path, what: str) -> Path:
    """``folder``, or skip (fail under CI) with ``what`` says about getting it."""
    if folder.is_dir():
        return folder
    if in_ci():
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real benchmark rows and corpora, read in place."""
    need(SHARED_DATA / "oall", HOW_TO_GET_DATA)
    need(SHARED_DATA / "corpus", HOW_TO_GET_DATA)
    return SHARED_DATA


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_notebook(
    path: Path, *cells: str, params: str = "params_path = None\noverrides = []\nrun_dir = None"
) -> Path:
    """A notebook with a tagged parameters cell followed by code cells."""
    import nbformat  # not on every GPU image; only the runner tests need it

    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# Pre-trained embedded backbones are keyed by everything they depend on, so every test project can share one cache:
# the suite pre-trains the smoke backbone once (tests/test_pretrain.py exercises the cold path in its own folder).
BACKBONE_CACHE = Path(tempfile.gettempdir()) / "arabic_r1_test_backbones"


def cached_tiny_model() -> Path:
    """The default random tiny MoE (``save_tiny_moe``), saved once under BACKBONE_CACHE and keyed like a pre-trained
    backbone (tiny_model's source, the shipped texts, library versions), so a test that only reads a model does not
    pay the tokenizer's training each time: mutmut runs such a test once per mutant. Read it, never write into it."""
    import os
    import shutil

    from arabic_r1.params import TinyMoEParams
    from arabic_r1.pretrain import cache_key
    from arabic_r1.tiny_model import save_tiny_moe

    shape = TinyMoEParams()
    out = BACKBONE_CACHE / f"random-{cache_key('deepseek_v3', shape, 0)}"
    if not (out / "config.json").is_file():
        BACKBONE_CACHE.mkdir(parents=True, exist_ok=True)
        tmp = BACKBONE_CACHE / f".random.{os.getpid()}.tmp"
        save_tiny_moe(tmp, "deepseek_v3", shape, 0)
        try:
            os.replace(tmp, out)  # whole or not at all: a concurrent worker never sees half a model
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def copy_smoke_project(tmp_path: Path) -> Path:
    """The smoke profile and the notebooks in a scratch project, so runs land in tmp_path/runs."""
    import shutil

    (tmp_path / "params").mkdir()
    text = (REPO / "params" / "smoke.yaml").read_text(encoding="utf-8")
    anchor = "    pretrain:"
    assert anchor in text, "smoke.yaml has no model.tiny.pretrain section"
    text = text.replace(anchor, f"{anchor}\n      cache_dir: {BACKBONE_CACHE}", 1)
    (tmp_path / "params" / "smoke.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "arabic_r1").symlink_to(REPO / "arabic_r1")  # smoke.yaml points at the package's own data
    return tmp_path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole smoke pipeline (all notebooks, cold) in a scratch project, once per session: (project, params, summary)."""
    from arabic_r1.params_loading import load_params
    from arabic_r1.pipeline import reproduce

    project = copy_smoke_project(tmp_path_factory.mktemp("smoke"))
    params = load_params(project / "params" / "smoke.yaml")
    return project, params, reproduce(params, notebooks_dir=REPO / "notebooks")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away project folder with params/ so relative paths resolve inside tmp_path."""
    (tmp_path / "params").mkdir()
    return tmp_path


FLAT_SPLITS = {  # ../shared/data/oall folder -> {file split: hub split}
    "arabic_mmlu": {"test": "test", "dev": "dev"},
    "madinah_qa": {"test": "test", "dev": "dev"},
    "aratrust": {"test": "train"},
    "arabic_exams": {"test": "test", "validation": "validation"},
}


@pytest.fixture(scope="session")
def real_mirror(shared_data: Path, tmp_path_factory) -> Path:
    """A mirror (hub layout) of the real benchmark rows in ../shared/data/oall, built in a temp folder."""
    from collections import defaultdict

    from arabic_r1.benchmark_mirrors import write_mirror
    from arabic_r1.benchmarks import spec

    root = tmp_path_factory.mktemp("real_mirror")
    for key, splits in FLAT_SPLITS.items():
        rows: dict = defaultdict(list)
        for file_split, hub_split in splits.items():
            for row in read_jsonl(shared_data / "oall" / key / f"{file_split}.jsonl"):
                if key == "arabic_exams":
                    row = {**row, "subject": row["id"].rsplit("-", 1)[0]}
                rows[(spec(key).subset_of(row), hub_split)].append(row)
        write_mirror(root, key, rows)
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real OpenAI-compatible server: ``transformers serve`` on the tiny model, on 127.0.0.1, offline."""
    from teacher_server import ServedModel

    from arabic_r1.tiny_model import save_tiny_moe

    root = tmp_path_factory.mktemp("serve")
    srv = ServedModel(save_tiny_moe(root / "tiny"), root / "home")
    yield srv
    srv.close()


# `make test-fast` (-m "not heavy"): what builds a smoke run, starts a server, cluster, notebook or second process.
HEAVY_FIXTURES = {"smoke_run", "server", "real_mirror"}
HEAVY_FILES = {"test_kill.py", "test_ray.py", "test_train_ddp.py", "test_lab.py", "test_rendering.py",
               "test_notebooks.py", "test_pipeline.py", "test_real_checkpoint.py", "test_slurm.py", "test_sweep.py"}  # fmt: skip


HEAVY_TESTS = (  # measured at 8-22 s each (pytest --durations): subprocesses, or several trainings
    "test_gpu_check_dry_run",
    "test_doctor_",
    "test_unsloth_backend_trains",
    "imports_it_before_transformers",
    "test_killed_run_resumes",
    "test_two_mirrors_with_one_layout",
    "test_retraining_into_the_same_folder",
    "test_a_planted_break_between_training_and_generation",
    "test_phase_00_writes_the_bf16_copy",
    "test_real_text_passes_with_at_most_2_percent",
)


# Tests that run a phase's machinery in process (a training, lighteval's pipeline, the teacher replay, phase 03 over
# the shipped traces), 1-10 s each: in `make test` and `make test-fast`, left out of `make mutation`, where each would
# run once per mutant of every function it reaches; the mutated modules' unit tests stand for them there (e.g.
# tests/test_checkpoints.py for the checkpoints a training writes).
INTEGRATION_TESTS = (
    "test_checkpoints_of_other_params_are_not_resumed",
    "test_expert_adapters_left_out_of_the_optimizer_stop_the_phase",
    "test_a_broken_checkpoint_is_skipped_with_its_reason",
    "test_phase_04_trains_an_mxfp4_base_loaded_dequantized",
    "test_a_saved_adapter_that_lost_a_family_fails_the_phase",
    "test_unreadable_rows_are_reported_and_skipped_not_fatal",
    "test_an_adapter_folder_scores_like_its_merged_model",
    "test_mirror_mode_scores_equal_lighteval_pipeline",
    "test_the_trap_is_real_with_a_name_keyed_cache",
    "test_prompts_equal_lighteval_and_gold_right_on_real_rows",
    "test_each_planted_flaw_is_caught_by_its_own_check_only",
    "test_outputs_and_funnel",
    "test_smoke_pool_replays_completely_with_the_planted_flaws",
    "test_trackers_log_inside_the_phase_folder_and_sft_fields_reach_trl",
    "test_training_outputs_mask_and_merge_equivalence",
    "test_routing_counts_equal_a_brute_force_recount_for_every_family",
)


# One smoke run per session: `--dist loadgroup` sends every test that reads it to the same worker.
SMOKE_GROUP = pytest.mark.xdist_group("smoke_run")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks into the node ids
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "smoke_run" in fixtures:
            item.add_marker(SMOKE_GROUP)
        if (
            item.path.name in HEAVY_FILES
            or HEAVY_FIXTURES & fixtures
            or any(name in item.name for name in HEAVY_TESTS)
        ):
            item.add_marker(pytest.mark.heavy)
        if any(name in item.name for name in INTEGRATION_TESTS):
            item.add_marker(pytest.mark.integration)
