"""MoE LoRA training speed: Unsloth vs plain transformers+PEFT on the same MoE, same LoRA (experts included).

    python benchmarks/bench_moe_lora.py                       # CPU: the embedded tiny MoE, both backends
    python benchmarks/bench_moe_lora.py --shape gpu --steps 8  # GPU: real layer sizes (benchmarks/gpu_check.sh)

Each backend runs in its own subprocess (importing unsloth patches transformers for the whole process; each
UNSLOTH_MOE_BACKEND needs a fresh one). A run builds the model from a saved folder, adds LoRA with
``arabic_r1.train.add_lora`` (attention + routed experts; + shared experts and dense MLP for DeepSeek-V3), trains
``--steps`` AdamW steps on batches of real Arabic/English text, and reports seconds per step and tokens/s (after 2
warm-up steps), peak memory, and the gradient norms of the expert adapters (must be non-zero). Prints a table
and writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --shape gpu: layers the size of the real models' (Qwen3-30B-A3B: hidden 2048, 128 experts of 768, top-8;
# DeepSeek-V3: 256 experts, top-8, one shared expert, dense first layer), three of them (DeepSeek-V3: one dense + two
# MoE), so that each backend loads and runs 8 steps within the GPU check's 8 minutes.
SHAPES = {
    "tiny": {},
    "gpu": dict(num_layers=3, hidden_size=2048, num_heads=16, num_experts=64, experts_per_token=8,
                expert_intermediate_size=768, dense_intermediate_size=6144, shared_experts=1, dense_layers=1),
}  # fmt: skip


def shape_of(name: str):
    from arabic_r1.params import TinyMoEParams

    return TinyMoEParams(**SHAPES[name])


def build_model(out: Path, family: str, shape: str) -> Path:
    from arabic_r1.tiny_model import save_tiny_moe

    return save_tiny_moe(out, family, shape_of(shape), seed=0)


def describe(family: str, shape: str) -> str:
    """The model a run would build, counted on the meta device (nothing allocated): --dry-run's check."""
    import torch
    from transformers import AutoModelForCausalLM

    from arabic_r1.tiny_model import build_config, build_tokenizer

    s = shape_of(shape)
    config = build_config(family, s, build_tokenizer(s.vocab_size))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    return f"{family} {shape}: {config.model_type}, {n / 1e6:.0f}M parameters, {s.num_experts} experts top-{s.experts_per_token}"


def one_run(model_dir: str, backend: str, steps: int, batch: int, seq: int, threads: int | None) -> dict:
    """Runs inside the subprocess."""
    import torch

    from arabic_r1.params_loading import validate_params
    from arabic_r1.train_backends import add_lora, load_model_and_tokenizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda else "fp32"
    family_targets = ["attention", "routed_experts"]
    params = validate_params({"data": {"token_budget": 1}, "model": {"max_seq_length": seq},
                              "train": {"backend": "unsloth" if backend.startswith("unsloth") else "transformers", "gradient_checkpointing": False,
                                        "lora": {"r": 16, "alpha": 32, "targets": family_targets}}})  # fmt: skip
    model, tok = load_model_and_tokenizer(params, model_dir, precision)
    if model.config.model_type == "deepseek_v3":
        params = params.model_copy(
            update={
                "train": params.train.model_copy(
                    update={
                        "lora": params.train.lora.model_copy(
                            update={"targets": ["attention", "routed_experts", "shared_experts", "dense_mlp"]}
                        )
                    }
                )
            }
        )
    model = add_lora(params, model)
    model.train()
    from arabic_r1.tiny_model import corpus_lines

    text = " ".join(corpus_lines()) * 50
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    device = "cuda" if cuda else "cpu"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, expert_grad = [], None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps):
        start = (step * batch * seq) % (len(ids) - batch * seq - 1)
        x = ids[start : start + batch * seq].view(batch, seq).to(device)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        if expert_grad is None:
            expert_grad = {n.split("model.layers.")[-1]: float(p.grad.norm()) for n, p in model.named_parameters()
                           if p.requires_grad and "mlp.experts" in n and "lora_B" in n and p.grad is not None}  # fmt: skip
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    steady = (
        times[2:] or times
    )  # the first two include compiling (Triton kernels, torch.compile): reported apart
    sec = sum(steady) / len(steady)
    import resource

    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "backend": backend, "moe_backend": os.environ.get("UNSLOTH_MOE_BACKEND", "-") if backend.startswith("unsloth") else "-",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "seconds_per_step": round(sec, 4),
        "warmup_seconds": round(sum(times[:2]), 3),
        "tokens_per_s": round(batch * seq / sec, 1), "peak_memory_mb": round(peak, 1), "last_loss": round(float(loss), 4),
        "expert_lora_B_grad_norms": expert_grad, "expert_grads_nonzero": bool(expert_grad) and all(v > 0 for v in expert_grad.values()),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="qwen3_moe", choices=["qwen3_moe", "deepseek_v3", "mixtral"])
    ap.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="tiny",
        help="tiny: the embedded MoE; gpu: real layer sizes",
    )
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="build the model's config on the meta device and print the runs",
    )
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads on CPU (1 is fastest for the tiny MoE)"
    )
    ap.add_argument(
        "--backends",
        default="transformers,unsloth",
        help="comma list; unsloth@grouped_mm etc. picks UNSLOTH_MOE_BACKEND",
    )
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_moe_lora")
    ap.add_argument(
        "--backend-timeout", type=int, default=240, help="seconds per backend before it is reported as failed"
    )
    ap.add_argument("--_child", nargs=2, metavar=("MODEL_DIR", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(
            "RESULT "
            + json.dumps(
                one_run(args._child[0], args._child[1], args.steps, args.batch, args.seq, args.threads)
            ),
            flush=True,
        )
        return
    if args.dry_run:
        print(
            describe(args.family, args.shape)
            + f"; backends {args.backends}, {args.steps} steps of {args.batch}x{args.seq}"
        )
        return
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args.out / f"model_{args.family}_{args.shape}", args.family, args.shape)
    results = []
    for spec in args.backends.split(","):
        backend, _, moe = spec.partition("@")
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if moe:
            env["UNSLOTH_MOE_BACKEND"] = moe
        cmd = [sys.executable, __file__, "--_child", str(model_dir), spec, "--steps", str(args.steps), "--batch", str(args.batch),
               "--seq", str(args.seq), "--threads", str(args.threads)]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.backend_timeout)
        except subprocess.TimeoutExpired:  # e.g. Triton compiling its kernels for the first time
            results.append({"backend": spec, "error": f"no result within {args.backend_timeout}s"})
            print(f"{spec}: no result within {args.backend_timeout}s")
            continue
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            results.append({"backend": spec, "error": (proc.stderr or proc.stdout)[-1500:]})
            print(f"{spec}: FAILED\n{results[-1]['error']}")
            continue
        r = json.loads(line[len("RESULT ") :])
        results.append(r)
        (args.out / "results.json").write_text(
            json.dumps({"family": args.family, "results": results}, indent=1)
        )
        print(f"{spec:28s} {r['device']:>24s}  {r['seconds_per_step']:.3f} s/step  {r['tokens_per_s']:>9.0f} tok/s  "
              f"peak {r['peak_memory_mb']:.0f} MB  expert grads non-zero: {r['expert_grads_nonzero']}")  # fmt: skip
    ok = [r for r in results if "tokens_per_s" in r]
    base = next((r for r in ok if r["backend"] == "transformers"), None)
    if base:
        for r in ok:
            r["speed_vs_transformers"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
            print(f"{r['backend']}: {r['speed_vs_transformers']}x transformers+PEFT")
    (args.out / "results.json").write_text(json.dumps({"family": args.family, "shape": args.shape, "steps": args.steps,
                                                       "batch": args.batch, "seq": args.seq, "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
