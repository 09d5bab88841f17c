"""The PNG: latency distributions of the one-at-a-time cases, and throughput of every case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def draw(path: Path, latencies: dict[str, list[float]], summaries: dict[str, dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 7), gridspec_kw={"width_ratios": [1.1, 1]})
    for name, lat in latencies.items():
        values = np.sort(np.asarray(lat))
        if values.size == 0:
            continue
        ecdf = np.arange(1, values.size + 1) / values.size
        step = max(1, values.size // 4000)  # enough points for the eye, a small file
        left.plot(values[::step], ecdf[::step], label=f"{name} (p50 {np.percentile(values, 50):.0f} µs)")
    left.set_xscale("log")
    left.set_xlabel("latency per call, µs (log)")
    left.set_ylabel("fraction of calls at or below")
    left.axhline(0.5, color="grey", lw=0.5)
    left.axhline(0.99, color="grey", lw=0.5)
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    left.set_title("one call at a time, one client")

    rows = [(n, s["items_per_s"]) for n, s in summaries.items() if s.get("items_per_s")]
    rows.sort(key=lambda r: r[1])
    right.barh([r[0] for r in rows], [r[1] for r in rows],
               color=["tab:orange" if r[0].startswith("openbao") else "tab:grey" if r[0].startswith(("echo", "floor"))
                      else "tab:blue" for r in rows])
    right.set_xscale("log")
    right.set_xlabel("signatures (or HMACs, or echoes) per second (log)")
    right.tick_params(axis="y", labelsize=7)
    right.grid(True, axis="x", which="both", alpha=0.3)
    right.set_title("throughput")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
