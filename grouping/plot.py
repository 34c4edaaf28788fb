"""Bar chart of a recommendation's candidate scores (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_scores(result: dict, path: Path) -> Path:
    """Horizontal bars, best candidate on top; selected sets highlighted; returns ``path``."""
    rows = result["candidates"]
    names = [r["dataset"] for r in rows][::-1]
    scores = [r["score"] for r in rows][::-1]
    colors = ["tab:green" if r["selected"] else "tab:gray" for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(rows), 3) + 1.2))
    ax.barh(names, scores, color=colors)
    ax.set_xlabel("score (gate for molgroup, nearest-neighbour Tanimoto otherwise)")
    ax.set_title(f"{result['target']['name']}: {result['method']} (green = recommended)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
