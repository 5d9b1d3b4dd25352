"""Phase 01 throughput and accuracy: the Arabic-aware pipeline vs datatrove's default configuration.

    python benchmarks/bench_data_mixture.py [--mb 50] [--workers 2] [--out runs/bench_data]

Builds an Arabic+English corpus (80/20 by bytes) of at least ``--mb`` MB from the real sentences in
../shared/data/corpus, plants exact duplicates, diacritised duplicates, near duplicates (2.5% of words edited) and
benchmark overlaps (every real row of ../shared/data/oall, its question alone and its question followed by its
options, embedded exact, with tashkeel, with alef/ya/ta-marbuta/tatweel variants and all at once), then runs, in the
same process and on the same files:

- ours: arabic_r1.data (Arabic-folding word tokenizer everywhere, Arabic-normalised exact dedup, our 13-gram
  decontamination with short-question matching);
- datatrove default: the same stages with datatrove's default word tokenizer for Arabic (spaCy), its default
  text normalisation (``simplify_text``) for exact dedup and MinHash, and its own ``NGramsDecontFilter`` over an
  index built by ``NGramsDecontIndexer.compute_hashes`` (13-grams of each benchmark question). Both use our
  offline language check (datatrove's ``LanguageFilter`` downloads a fastText model at run time).

Prints MB/s end to end, the speed ratio, decontamination recall per form, question length (< 8, 8-12, >= 13
words) and variant, false positives, and near-duplicate recall; writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from arabic_r1.arabic_text import SPELLING_VARIANTS, STOP_WORDS, normalized_words  # noqa: E402
from arabic_r1.benchmark_mirrors import BenchmarkRow, fixture_mirror_dir, iter_mirror_rows, write_mirror  # noqa: E402
from arabic_r1.benchmarks import spec  # noqa: E402
from arabic_r1.decontam import content_words, segment_words  # noqa: E402
from arabic_r1.params import DecontaminationParams, validate_params  # noqa: E402

FLAT = {
    "arabic_mmlu": {"test": "test"},
    "madinah_qa": {"test": "test"},
    "aratrust": {"test": "train"},
    "arabic_exams": {"test": "test"},
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_mirror(root: Path) -> list[BenchmarkRow]:
    """Real rows for four benchmarks, the package fixtures for the other three (not available here)."""
    for key, splits in FLAT.items():
        rows = defaultdict(list)
        for file_split, hub_split in splits.items():
            for row in read_jsonl(SHARED / "oall" / key / f"{file_split}.jsonl"):
                rows[(spec(key).subset_of(row), hub_split)].append(row)
        write_mirror(root, key, rows)
    for key in ("alghafa", "arabic_mmlu_ht", "alrage"):
        shutil.copytree(fixture_mirror_dir() / iter_repo(key), root / iter_repo(key), dirs_exist_ok=True)
    return [r for key in FLAT for r in iter_mirror_rows(root, key)]


def iter_repo(key: str) -> str:
    return spec(key).hf_repo


def sentences() -> tuple[list[str], list[str]]:
    ar = [r["text"] for r in read_jsonl(SHARED / "corpus" / "ar_pud_sentences.jsonl")]
    for r in read_jsonl(SHARED / "corpus" / "ar_arcd_paragraphs.jsonl"):
        ar += [s.strip() + "." for s in r["context"].split(".") if len(s.split()) >= 5]
    en = [r["text"] for r in read_jsonl(SHARED / "corpus" / "en_pud_sentences.jsonl")]
    return ar, en


def edit_words(text: str, frac: float, vocab: list[str], rng: random.Random) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, round(frac * len(words)))):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def plant_kind(r: BenchmarkRow) -> dict:
    """Question length bucket, and whether the question alone carries the information floor (3 content words)."""
    n = len(normalized_words(r.question()))
    below = content_words(segment_words(r.question())) < DecontaminationParams().min_content_words
    return {"length": "<8" if n < 8 else "8-12" if n < 13 else ">=13", "below_floor": below}


def make_corpus(out: Path, mb: float, rows: list[BenchmarkRow], seed: int = 0) -> dict:
    """Write ar/ and en/ shard folders; return what was planted (ids) for scoring."""
    rng = random.Random(seed)
    ar, en = sentences()
    vocab = [w for s in ar[:300] for w in s.split()]
    docs: dict[str, list[tuple[str, str]]] = {"ar": [], "en": []}
    size = {"ar": 0, "en": 0}
    target = {"ar": 0.8 * mb * 1e6, "en": 0.2 * mb * 1e6}
    for lang, pool in (("ar", ar), ("en", en)):
        i = 0
        while size[lang] < target[lang]:
            text = " ".join(rng.sample(pool, rng.randint(8, 16)))
            docs[lang].append((f"{lang}{i}", text))
            size[lang] += len(text.encode())
            i += 1
    planted: dict = {"exact": [], "tashkeel_dup": [], "near": [], "decont": []}
    from arabic_r1.arabic_text import add_tashkeel

    base = docs["ar"]
    for k in range(300):
        src_id, text = base[rng.randrange(len(base))]
        docs["ar"].append((f"exact{k}", text))
        planted["exact"].append((src_id, f"exact{k}"))
        src_id, text = base[rng.randrange(len(base))]
        docs["ar"].append((f"tashkeel{k}", add_tashkeel(text)))
        planted["tashkeel_dup"].append((src_id, f"tashkeel{k}"))
        src_id, text = base[rng.randrange(len(base))]
        docs["ar"].append((f"near{k}", edit_words(text, 0.025, vocab, rng)))
        planted["near"].append((src_id, f"near{k}"))
    hosts = [x for x in ar if "..." not in x and "…" not in x and len(x.split()) >= 8]
    for variant, vary in SPELLING_VARIANTS.items():
        for k, r in enumerate(rows):
            for form in ("question", "question+options"):
                quote = vary(r.question())
                if form == "question+options":
                    quote += "\n" + "\n".join(f"- {vary(o)}" for o in r.options())
                sep = "\n" if form == "question+options" else " "  # one line, or an exam dump's lines
                host = " ".join(rng.sample(hosts, 2)) + sep + quote + sep + " ".join(rng.sample(hosts, 2))
                doc_id = f"decont_{variant}_{form}_{k}"
                docs["ar"].append((doc_id, host))
                planted["decont"].append({"id": doc_id, "variant": variant, "form": form, **plant_kind(r)})
    for lang in ("ar", "en"):
        folder = out / lang
        folder.mkdir(parents=True, exist_ok=True)
        rng.shuffle(docs[lang])
        half = len(docs[lang]) // 2
        for name, chunk in (("0.jsonl", docs[lang][:half]), ("1.jsonl", docs[lang][half:])):
            with (folder / name).open("w", encoding="utf-8") as f:
                for doc_id, text in chunk:
                    f.write(json.dumps({"id": doc_id, "prompt": text}, ensure_ascii=False) + "\n")
    planted["bytes"] = sum(p.stat().st_size for p in out.rglob("*.jsonl"))
    return planted


def params_for(root: Path, corpus: Path, mirror: Path, workers: int):
    data = {
        "token_budget": 1000, "arabic_share": 0.8, "category_shares": {"bench": 1.0}, "on_shortfall": "warn",
        "sources": [
            {"name": "ar", "path": str(corpus / "ar"), "lang": "ar", "category": "bench", "id_field": "id"},
            {"name": "en", "path": str(corpus / "en"), "lang": "en", "category": "bench", "id_field": "id"},
        ],
        "quality": {"max_words": 100000}, "tasks": workers, "workers": workers,
        "decontamination": {"benchmarks": ["arabic_mmlu", "madinah_qa", "aratrust", "arabic_exams", "alghafa", "arabic_mmlu_ht", "alrage"]},
    }  # fmt: skip
    (root / "params").mkdir(parents=True, exist_ok=True)
    return validate_params(
        {"data": data, "eval": {"source": "mirror", "mirror_dir": str(mirror)}},
        source_file=root / "params" / "bench.yaml",
    )


def baseline_stages(params, work: Path, tokenizer_path: str, rows: list[BenchmarkRow]):
    """The same stages, configured as a datatrove user would by default for an Arabic corpus."""
    import numpy as np
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
    from datatrove.pipeline.dedup import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    from arabic_r1 import data as d

    lang = "ar"  # datatrove picks spaCy's Arabic tokenizer for it
    cfg = NGramsDecontConfig(n_grams=13, find_query_ngrams=False, find_overlap_ngrams=False)
    indexer = NGramsDecontIndexer(str(work / "dt_index"), config=cfg, language=lang)
    hashes = set()
    for r in rows:
        hashes.update(indexer.compute_hashes(r.question()))
    (work / "dt_index").mkdir(parents=True, exist_ok=True)
    np.array(sorted(hashes), dtype=cfg.hash_config.np_descr).tofile(work / "dt_index" / "oall.index.hashes")
    q, dd, tasks = params.data.quality, params.data.dedup, params.data.tasks
    removed = work / "removed"

    def excl(step):
        return JsonlWriter(str(removed / step), output_filename="${rank}.jsonl", compression=None)

    exact_cfg = ExactDedupConfig(content_getter=dt_default_content, hash_config=HashConfig(precision=64))
    mh = MinhashConfig(
        n_grams=dd.minhash_ngram,
        num_buckets=dd.minhash_buckets,
        hashes_per_bucket=dd.minhash_hashes_per_bucket,
    )
    first = [d.source_reader(s) for s in params.data.sources] + [
        d.RejectFilter(exclusion_writer=excl("source_rows")),
        d.DeclaredLanguageFilter(exclusion_writer=excl("language")),
        GopherQualityFilter(min_doc_words=q.min_words, max_doc_words=q.max_words, min_avg_word_length=q.min_avg_word_length,
                            max_avg_word_length=q.max_avg_word_length, min_stop_words=q.min_stop_words, stop_words=sorted(STOP_WORDS),
                            max_non_alpha_words_ratio=q.max_non_alpha_words_ratio, language=lang, exclusion_writer=excl("quality")),
        GopherRepetitionFilter(language=lang, exclusion_writer=excl("repetition")),
        NGramsDecontFilter(str(work / "dt_index"), config=cfg, language=lang, exclusion_writer=excl("decontamination")),
        JsonlWriter(str(work / "filtered"), output_filename="${rank}.jsonl", compression=None),
        ExactDedupSignature(str(work / "exact_sigs"), config=exact_cfg),
    ]  # fmt: skip
    return [
        ("filter", first, tasks),
        ("exact_find", [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), config=exact_cfg)], 1),
        ("exact_filter+minhash_sigs", [
            d.RankFileJsonlReader(str(work / "filtered"), compression=None),
            ExactDedupFilter(str(work / "exact_dups"), config=exact_cfg, exclusion_writer=excl("exact_dedup")),
            JsonlWriter(str(work / "deduped_exact"), output_filename="${rank}.jsonl", compression=None),
            MinhashDedupSignature(str(work / "mh_sigs"), config=mh, language=lang),
        ], tasks),
        ("minhash_buckets", [MinhashDedupBuckets(str(work / "mh_sigs"), str(work / "mh_buckets"), config=mh)], mh.num_buckets),
        ("minhash_clusters", [MinhashDedupCluster(str(work / "mh_buckets"), str(work / "mh_clusters"), config=mh)], 1),
        ("near_filter+tokens", [
            d.RankFileJsonlReader(str(work / "deduped_exact"), compression=None),
            MinhashDedupFilter(str(work / "mh_clusters"), exclusion_writer=excl("near_dedup")),
            d.StudentTokenCounter(tokenizer_path),
            JsonlWriter(str(work / "candidates"), output_filename="${rank}.jsonl", compression=None),
        ], tasks),
    ]  # fmt: skip


def dt_default_content(doc) -> str:
    from datatrove.utils.text import simplify_text

    return simplify_text(doc.text)


def score(work: Path, planted: dict) -> dict:
    """Recall over the planted items that reached the step (a plant an earlier filter removed is counted apart)."""
    from arabic_r1.data import read_jsonl_dir

    def ids(step):
        return {r["id"].split("/", 1)[1] for r in read_jsonl_dir(work / "removed" / step)}

    earlier = ids("source_rows") | ids("language") | ids("quality") | ids("repetition")
    decont = ids("decontamination")
    dedup = ids("exact_dedup") | ids("near_dedup")
    out: dict = {"decontamination_recall": {}, "planted_removed_by_earlier_filters": 0}
    groups: dict = defaultdict(list)
    for p in planted["decont"]:
        if p["id"] in earlier:
            out["planted_removed_by_earlier_filters"] += 1
        elif p["form"] == "question" and p["below_floor"]:
            groups[("below_floor_question_alone", "all", p["variant"])].append(p["id"] in decont)
        else:
            groups[(p["form"], p["length"], p["variant"])].append(p["id"] in decont)
    for (form, length, variant), hits in sorted(groups.items()):
        cell = out["decontamination_recall"].setdefault(form, {}).setdefault(length, {})
        cell[variant] = {"recall": round(sum(hits) / len(hits), 4), "items": len(hits)}
    out["decontamination_false_positives"] = len(decont - {p["id"] for p in planted["decont"]})
    for kind in ("exact", "tashkeel_dup", "near"):
        pairs = [(a, b) for a, b in planted[kind] if a not in earlier | decont and b not in earlier | decont]
        out[f"{kind}_recall"] = round(sum(a in dedup or b in dedup for a, b in pairs) / len(pairs), 4)
        out["planted_removed_by_earlier_filters"] += len(planted[kind]) - len(pairs)
    return out


def recall_table(results: dict) -> str:
    """Markdown: one row per pipeline, form and question length; one column per spelling variant."""
    variants = list(SPELLING_VARIANTS)
    lines = [
        "| pipeline | embedded as | question words | items | " + " / ".join(variants) + " |",
        "|---|---|---|---|---|",
    ]
    for name in ("ours", "datatrove_default"):
        for form, by_length in results[name]["decontamination_recall"].items():
            for length, cells in by_length.items():
                recall = " / ".join(f"{cells[v]['recall']:.2f}" if v in cells else "-" for v in variants)
                lines.append(f"| {name} | {form} | {length} | {cells[variants[0]]['items']} | {recall} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_data")
    args = ap.parse_args()
    if not (SHARED / "corpus").is_dir():
        sys.exit(f"needs the real corpora at {SHARED}")
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    from arabic_r1.data import build_decontamination_index, run_stages, stage_pipelines
    from arabic_r1.tiny_model import save_tiny_moe

    rows = build_mirror(args.out / "mirror")
    planted = make_corpus(args.out / "corpus", args.mb, rows)
    mb = planted["bytes"] / 1e6
    print(f"corpus: {mb:.1f} MB in {sum(1 for _ in (args.out / 'corpus').rglob('*.jsonl'))} shards")
    tok = str(save_tiny_moe(args.out / "tokenizer"))
    params = params_for(args.out, args.out / "corpus", args.out / "mirror", args.workers)
    results = {"corpus_mb": round(mb, 2), "workers": args.workers}
    for name in ("ours", "datatrove_default"):
        work = args.out / name
        work.mkdir()
        t0 = time.monotonic()
        if name == "ours":
            build_decontamination_index(params, work / "decontamination_index.pkl")
            stages = stage_pipelines(params, work, work / "decontamination_index.pkl", tok)
        else:
            stages = baseline_stages(params, work, tok, rows)
        timings = run_stages(params, stages, work)
        seconds = time.monotonic() - t0
        results[name] = {
            "seconds": round(seconds, 1),
            "mb_per_s": round(mb / seconds, 2),
            "stages_s": timings,
            **score(work, planted),
        }
        print(name, json.dumps(results[name]))
    results["speedup"] = round(results["ours"]["mb_per_s"] / results["datatrove_default"]["mb_per_s"], 2)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "recall.md").write_text(recall_table(results) + "\n")
    print(json.dumps(results, indent=2))
    print(recall_table(results))


if __name__ == "__main__":
    main()
