"""What notebook 04 shows: coverage table, loss mask, composition, loss curve, expert-load heatmaps, TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arabic_r1.figures import shape_ar
from arabic_r1.moe_lora import coverage_table as lora_coverage
from arabic_r1.params import Params
from arabic_r1.tracking import TENSORBOARD_DIR
from arabic_r1.views import bidi_html, table


def coverage_table(result) -> Any:
    import pandas as pd

    frame = pd.DataFrame(lora_coverage(result.coverage_model, result.coverage_adapter)).set_index("family")
    return table(
        frame, "LoRA parameters per module family: in the model being trained, and in the saved adapter"
    )


def adapter_tensors(result, n: int = 3) -> Any:
    """A few adapter tensor names per family, as saved (the prefix every name shares left out)."""
    import pandas as pd

    rows = [
        {"family": fam, "tensor": name.removeprefix("base_model.model."), "of": len(f["tensors"])}
        for fam, f in result.coverage_adapter.items()
        for name in f["tensors"][:n]
    ]
    return table(
        pd.DataFrame(rows, columns=["family", "tensor", "of"]).set_index("family"),
        f"The first {n} saved adapter tensors of each family, of how many",
    )


def render_mask(mask: list[dict[str, Any]]) -> str:
    """One training example as text, the loss-bearing (assistant) runs highlighted; markup stays left-to-right
    inside the Arabic (runs are decoded whole by ``train.mask_example``, so no letter is split)."""
    spans = "".join(
        f"<span style='background:{'#56B4E9' if r['loss'] else '#eee'}'>{bidi_html(r['text'])}</span>"
        for r in mask
    )
    n, total = sum(r["tokens"] for r in mask if r["loss"]), sum(r["tokens"] for r in mask)
    return (
        f"<p dir='ltr'>{n} of {total} tokens carry the loss (highlighted: the assistant turn)</p>"
        f"<div dir='auto' style='line-height:1.9;white-space:pre-wrap;unicode-bidi:plaintext'>{spans}</div>"
    )


def composition_table(comp: dict[str, Any]) -> Any:
    import pandas as pd

    rows = [
        {
            "slice": "Arabic share",
            "achieved": comp["arabic_share"]["achieved"],
            "target": comp["arabic_share"]["target"],
        }
    ]
    rows += [
        {"slice": c, "achieved": v["achieved"], "target": v["target"], "tokens": v["tokens"]}
        for c, v in comp["categories"].items()
    ]
    frame = pd.DataFrame(rows).set_index("slice")
    return table(
        frame,
        "Training tokens (student tokenizer) per slice, against the params targets",
        formats={"achieved": "{:.1%}", "target": "{:.1%}"},
    )


def plot_loss(rows: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="#0072B2", label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token, assistant tokens)")
    ax2 = ax.twinx()
    ax2.plot(
        [r["step"] for r in rows],
        [r["lr"] for r in rows],
        color="#E69F00",
        linestyle="--",
        label="learning rate",
    )
    ax2.set_ylabel("learning rate")
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    ax.set_title("MoE LoRA SFT")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    fig.tight_layout()
    return fig


def plot_expert_load(routing: dict[str, Any]):
    """Share of routed tokens per layer (rows) and expert (columns): Arabic vs English, before vs after; one colour
    scale for the four panels (seaborn heatmaps), so a shift of load between languages reads as a shift of colour."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    fig, axes = plt.subplots(2, 2, figsize=(8, 5), sharex=True, sharey=True)
    vmax = max(
        max(max(v) for v in routing[when][lang]["share"].values())
        for when in routing
        for lang in routing[when]
    )
    cbar_ax = fig.add_axes((0.93, 0.15, 0.02, 0.7))
    for i, when in enumerate(("before", "after")):
        for j, lang in enumerate(("ar", "en")):
            share = routing[when][lang]["share"]
            grid = pd.DataFrame({f"layer {k}": share[k] for k in sorted(share, key=int)}).T
            ax = axes[i][j]
            sns.heatmap(grid, ax=ax, cmap="viridis", vmin=0, vmax=vmax, cbar=(i, j) == (0, 0), cbar_ax=cbar_ax,
                        cbar_kws={"label": "share of the layer's routed tokens"})  # fmt: skip
            name = f"Arabic ({shape_ar('العربية')})" if lang == "ar" else "English"
            ax.set_title(f"{name} tokens, {when} fine-tuning", fontsize=9)
            ax.set_xlabel("routed expert" if i == 1 else "")
            ax.grid(False)
    fig.subplots_adjust(right=0.9)
    return fig


def tensorboard_command(params: Params, phase_dir: Path) -> str:
    """The line that opens this phase's TensorBoard events, or how to get them when the run wrote none."""
    logdir = Path(phase_dir) / TENSORBOARD_DIR
    if any(logdir.glob("events.out.tfevents.*")):
        return f"tensorboard --logdir {params.shown(logdir)}"
    return (
        "no TensorBoard events in this run: train.report_to is empty; add -o 'train.report_to=[tensorboard]'"
    )
