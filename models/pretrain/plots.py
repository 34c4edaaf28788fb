"""Loss-curve figure of a pretraining run (its ``log.jsonl``), for the model cards."""

from __future__ import annotations

import json
from pathlib import Path


def plot_log(log_file: Path, out_png: Path, title: str) -> None:
    """Plot every loss column of ``log_file`` (one JSON record per logged step) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        records = [json.loads(line) for line in log_file.read_text().splitlines() if line]
    except ValueError as exc:
        raise ValueError(f"{log_file} is not a pretraining log (one JSON object per line): {exc}") from exc
    if not records:
        raise ValueError(f"{log_file} holds no logged step yet")
    steps = [r["step"] for r in records]
    losses = [k for k in records[0] if k.endswith("loss")]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for key in losses:
        ax.plot(steps, [r[key] for r in records], label=key, linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean over 50 steps)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
