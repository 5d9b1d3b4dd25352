"""GPU-only checks (run with `pytest -m gpu` on a CUDA machine): the embedded MoE and the doctor on a GPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("family", ["deepseek_v3", "qwen3_moe", "mixtral"])
def test_tiny_moe_trains_and_generates_on_gpu_in_bf16(family: str) -> None:
    from arabic_r1.tiny_model import build_tiny_moe

    model, tok = build_tiny_moe(family, seed=0)
    model = model.to("cuda", dtype=torch.bfloat16)
    x = tok(["مرحبا بالعالم", "hello world"], return_tensors="pt", padding=True).to("cuda")
    out = model(**x, labels=x["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for n, p in model.named_parameters() if "experts" in n)
    gen = model.generate(**x, max_new_tokens=8)
    assert gen.shape[0] == 2


def test_doctor_reports_the_gpu() -> None:
    from arabic_r1.doctor import check_torch
    from arabic_r1.params_loading import load_params

    rows = {r.name: r for r in check_torch(load_params("paper"))}
    assert rows["gpu"].status == "ok"
    assert torch.cuda.get_device_name(0) in rows["gpu"].value and "bf16=yes" in rows["gpu"].value
