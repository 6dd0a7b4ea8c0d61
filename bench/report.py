"""Publish a benchmark run: its table into docs/performance.md, and a chart.

docs/performance.md may hold other text (written by hand); only the section
between the two markers below is replaced, and it is appended when missing.
The chart shows requests per second and worker CPU per request for every
server in every scenario, side by side, from the same run.
"""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench/run.py: begin (generated, do not edit by hand) -->"
END = "<!-- bench/run.py: end -->"


def write_section(doc: Path, body: str) -> None:
    """Replace the generated section of ``doc`` with ``body`` (append it when missing)."""
    section = f"{BEGIN}\n{body.rstrip()}\n{END}\n"
    text = doc.read_text() if doc.exists() else "# Performance\n\n"
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(END) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def write_chart(path: Path, results: dict, titles: dict[str, str]) -> None:
    """Draw req/s and CPU us/request per scenario (groups) and server (bars) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display; never pick an interactive backend
    import matplotlib.pyplot as plt

    scenarios = [key for key in titles if results.get(key)]
    servers: list[str] = []
    for key in scenarios:
        servers += [name for name in results[key] if name not in servers]
    width = 0.8 / max(1, len(servers))
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(2, 1, figsize=(12, 8.5), sharex=True)
    for axis, field, label in (
        (axes[0], "rps", "requests per second (higher is better)"),
        (axes[1], "cpu_us", "worker CPU per request, us (lower is better)"),
    ):
        for index, server in enumerate(servers):
            xs, ys = [], []
            for position, key in enumerate(scenarios):
                row = results[key].get(server)
                if row:
                    xs.append(position + (index - (len(servers) - 1) / 2) * width)
                    ys.append(row[field])
            bars = axis.bar(xs, ys, width, label=server, color=colours(index % 10))
            axis.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(ncols=min(6, len(servers)), fontsize=8, loc="upper right")
    axes[1].set_xticks(range(len(scenarios)), [titles[key] for key in scenarios], rotation=12, fontsize=8)
    figure.suptitle("bench/run.py: every server and scenario, same run")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
