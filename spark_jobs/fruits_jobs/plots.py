"""The two PNGs a person looks at after a PCA run. matplotlib with the Agg backend (no display)."""

import colorsys
from collections import defaultdict

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_explained_variance(cumulative, k: int, target, out_path: str) -> None:
    """Cumulative explained variance against k, the chosen k marked."""
    plt = _pyplot()
    cumulative = np.asarray(cumulative, dtype=float)
    # Show where the curve bends: up to a little past k, not all 1280 flat components.
    shown = min(len(cumulative), max(2 * k, 50))
    xs = np.arange(1, shown + 1)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ax.plot(xs, cumulative[:shown] * 100, color="#1f77b4", lw=2, label="cumulative explained variance")
    ax.axvline(k, color="#d62728", ls="--", lw=1.2)
    ax.scatter([k], [cumulative[k - 1] * 100], color="#d62728", zorder=3)
    ax.annotate(
        f"k = {k}: {cumulative[k - 1] * 100:.1f} %",
        (k, cumulative[k - 1] * 100),
        textcoords="offset points",
        xytext=(8, -16),
        color="#d62728",
    )
    if target is not None:
        ax.axhline(target * 100, color="grey", ls=":", lw=1, label=f"target {target * 100:.0f} %")
    ax.set_xlabel("number of principal components k")
    ax.set_ylabel("cumulative explained variance (%)")
    ax.set_ylim(0, 101)
    ax.set_xlim(0, shown + 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("PCA of MobileNetV2 features")
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def label_colors(labels):
    """A distinct-enough colour per label, for any number of labels (golden-ratio hue steps)."""
    colors = {}
    for i, label in enumerate(sorted(set(labels))):
        hue = (i * 0.61803398875) % 1.0
        lightness = (0.35, 0.5, 0.65)[i % 3]
        colors[label] = colorsys.hls_to_rgb(hue, lightness, 0.75)
    return colors


def plot_scatter(labels, xs, ys, ratios, out_path: str, legend_max: int = 20) -> None:
    """PC1 vs PC2 coloured by label. Past `legend_max` classes a legend is useless: each class's
    name is written at its centroid instead, so 100+ classes stay readable."""
    plt = _pyplot()
    colors = label_colors(labels)
    by_label = defaultdict(list)
    for label, x, y in zip(labels, xs, ys, strict=True):
        by_label[label].append((x, y))
    many = len(by_label) > legend_max
    fig, ax = plt.subplots(figsize=(14, 11) if many else (9, 7), dpi=110)
    for label in sorted(by_label):
        pts = np.asarray(by_label[label])
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=10 if many else 18,
            alpha=0.6,
            color=colors[label],
            label=None if many else label,
            edgecolors="none",
        )
        if many:
            cx, cy = pts.mean(axis=0)
            ax.annotate(
                label,
                (cx, cy),
                fontsize=6,
                ha="center",
                va="center",
                color=colors[label],
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.6),
            )
    pct = [f"{r * 100:.1f} %" for r in ratios] + ["n/a", "n/a"]
    ax.set_xlabel(f"PC1 ({pct[0]} of variance)")
    ax.set_ylabel(f"PC2 ({pct[1]} of variance)")
    ax.set_title(
        f"First two principal components, {len(labels)} images, {len(by_label)} classes"
        + (" (class names at their centroids)" if many else "")
    )
    ax.grid(alpha=0.3)
    if not many:
        ax.legend(fontsize=8, markerscale=1.5, loc="best")
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def plot_class_quality(quality: dict, out_path: str, shown: int = 30) -> None:
    """The classes the features separate worst (nearest-centroid accuracy, lowest first), with the
    overall accuracy and the most confused pairs: what a scatter of 100+ classes cannot show."""
    from fruits_jobs.quality import worst_classes

    plt = _pyplot()
    worst = worst_classes(quality, shown)
    fig, (bars, pairs) = plt.subplots(
        1, 2, figsize=(15, max(5.0, 0.28 * len(worst) + 1.5)), dpi=110, gridspec_kw={"width_ratios": [3, 2]}
    )
    names = [name for name, _ in worst][::-1]
    values = [acc for _, acc in worst][::-1]
    bars.barh(names, values, color=["#c0392b" if v < quality["overall_accuracy"] else "#2e86c1" for v in values])
    bars.axvline(
        quality["overall_accuracy"],
        color="black",
        linestyle="--",
        label=f"all classes: {quality['overall_accuracy']:.1%}",
    )
    bars.set_xlim(0, 1)
    bars.tick_params(axis="y", labelsize=7)
    bars.set_xlabel("share of the class's photos nearest to their own class centroid")
    bars.set_title(f"The {len(worst)} least separated of {quality['n_classes']} classes")
    bars.legend(loc="lower right", fontsize=8)
    pairs.axis("off")
    lines = [f"{p['photos']:>4}  {p['class']}  ->  {p['taken_for']}" for p in quality["most_confused"]]
    pairs.text(
        0,
        1,
        "Most confused (photos, class -> taken for):\n\n" + ("\n".join(lines) or "none"),
        va="top",
        family="monospace",
        fontsize=8,
    )
    pairs.text(
        0,
        0,
        f"{quality['method']}\ncentroids: {quality['centroids_from']}\nevaluated on: "
        f"{quality['evaluated_on']} ({quality['n_evaluated']})",
        va="bottom",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
