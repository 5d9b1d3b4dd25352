"""One figure style for notebooks and reports: colour-blind-safe palette, a font with Arabic glyphs, shaped Arabic.

Arabic letters change form with their neighbours and run right to left. matplotlib >= 3.11 lays text out with
libraqm, which does both; older matplotlib (still common on Colab/Kaggle images) draws code points one by one, left
to right, so Arabic comes out as isolated letters in reverse order. :func:`shape_ar` gives each matplotlib the
string it needs: unchanged for libraqm, joined presentation forms in visual order (arabic-reshaper + python-bidi)
otherwise. :func:`arabic_font` finds a font whose glyphs cover the shaped text (DejaVu Sans, shipped with
matplotlib, does).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
_ARABIC_SAMPLE = "العربية الفصحى لهجات"
_CANDIDATES = ("Noto Naskh Arabic", "Noto Sans Arabic", "Amiri", "DejaVu Sans")


def matplotlib_shapes_text() -> bool:
    """True when matplotlib lays text out with libraqm (shaping and bidi included)."""
    from matplotlib import ft2font

    return bool(getattr(ft2font, "__libraqm_version__", None))


def reshape_visual(text: str) -> str:
    """Joined letter forms (presentation forms) in right-to-left visual order: what a naive renderer needs."""
    import arabic_reshaper
    from bidi.algorithm import get_display

    return get_display(arabic_reshaper.reshape(text))


def shape_ar(text: str) -> str:
    """Arabic (or mixed) text as this matplotlib must receive it to draw joined letters, right to left."""
    return text if matplotlib_shapes_text() else reshape_visual(text)


def font_covers(path: str | Path, text: str) -> bool:
    """Whether the font file has a glyph for every non-space character of ``text``."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(path), fontNumber=0, lazy=True).getBestCmap()
    return all(ord(c) in cmap for c in text if not c.isspace())


@functools.cache
def arabic_font() -> tuple[str, str]:
    """(family, file) of the first installed font that covers shaped Arabic; a clear error if there is none."""
    from matplotlib import font_manager

    shaped = reshape_visual(_ARABIC_SAMPLE)  # the presentation forms, whichever path draws them
    for family in _CANDIDATES:
        try:
            path = font_manager.findfont(
                font_manager.FontProperties(family=family), fallback_to_default=False
            )
        except ValueError:
            continue
        if font_covers(path, shaped):
            return family, path
    raise RuntimeError(
        f"no installed font covers Arabic presentation forms (tried {', '.join(_CANDIDATES)}): "
        "reinstall matplotlib (it ships DejaVu Sans) or install fonts-noto"
    )


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The project's figure style, for the duration of a ``with`` block."""
    import matplotlib.pyplot as plt

    family, _ = arabic_font()
    rc = {
        "font.family": family,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "axes.prop_cycle": plt.cycler(color=PALETTE),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.fontsize": 8,
        "legend.frameon": False,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,  # TrueType in the PDF: text stays selectable and editable
    }
    with plt.rc_context(rc):
        yield


def save(fig, out_stem: Path, formats: list[str], dpi: int) -> list[Path]:
    """Write ``fig`` as ``out_stem.<fmt>`` for each format; close it (reports draw many figures)."""
    import matplotlib.pyplot as plt

    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=dpi, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    plt.close(fig)
    return paths
