"""The embedding space's rules, pure (numpy only): fit a basis from moments, and judge drift.

A space is a k-dimensional basis fitted once; every batch is projected into it as it arrives, so
vectors of different days are comparable. It is refitted (a new space, every batch re-projected)
only when a run asks for it or when the data has drifted, on two signals computed from moments
(never from the vectors):

- residual ratio: the share of the new photos' variance (around the space's fitted mean) that the
  basis loses, over the share it loses of photos like its own that it was not fitted on (estimated
  when it is fitted, from the two halves of its moments: fit on one, measure the other, both ways).
  Photos of fruit the space has never seen lose more, whatever their share of the lake.
- new classes: the share of the new labelled photos whose label the space was not fitted on (labels
  are the landing folder's class folders; unlabelled photos rely on the ratio above).
- basis gap: how much less of the variance of ALL photos so far the basis keeps than the best
  k-dimensional basis for them would (1 - kept / best), from the running moments: slow drift.

Thresholds, measured on MobileNetV2 features of the Fruits-360 sample (docs/spark-jobs.md, "Spaces"): held-out
photos of known classes lose 0.89-0.97x what the halves predict, a day of many unseen classes
1.18-1.34x; one unseen class among known ones stays at ~1.0x, so labels decide there. Adding held-out
photos of known classes moves the basis gap by 0.012-0.019 on a lake of ~1,000 photos, less on larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fruits_jobs.moments import BatchMoments, Moments

RESIDUAL_RATIO_MAX = 1.10  # refit when new photos lose 10 % more of their variance than expected
NEW_CLASS_SHARE_MAX = 0.05  # refit when 5 % or more of the new labelled photos are of unseen classes
BASIS_GAP_MAX = 0.05  # refit when the best basis for all photos keeps 5 % more than the current one
REFIT_CHOICES = ("auto", "always", "never")


class SpaceError(ValueError):
    """What the data or the arguments do not allow; the message says what to change."""


@dataclass(frozen=True)
class Basis:
    components: np.ndarray  # d x k, the principal axes as columns
    spectrum: np.ndarray  # explained variance ratio of every axis, descending (length d)
    mean: np.ndarray  # the fitted photos' mean: where kept_by_new measures spread from

    @property
    def k(self) -> int:
        return int(self.components.shape[1])

    @property
    def kept_at_fit(self) -> float:
        return float(self.spectrum[: self.k].sum())


def k_rule(k: int | None, variance: float | None) -> dict:
    """How a space's k was chosen, as stored in its commit: a value that differs means a refit."""
    return {"k": k, "variance": None if k is not None else variance}


def describe_rule(rule: dict) -> str:
    return f"k={rule['k']}" if rule["k"] is not None else f"cumulative explained variance >= {rule['variance']}"


def spectrum_and_components(moments: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Explained variance ratios (descending) and the principal axes (columns) of the covariance."""
    eigenvalues, eigenvectors = np.linalg.eigh(moments.m2)  # ascending, for a symmetric matrix
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)  # rounding can leave tiny negatives
    return eigenvalues / eigenvalues.sum(), eigenvectors[:, order]


def choose_k(explained_variance, k: int | None = None, variance: float | None = None) -> int:
    """k as asked, or the smallest k whose cumulative explained variance reaches `variance`."""
    ratios = np.asarray(explained_variance, dtype=np.float64)
    if k is not None:
        if k > len(ratios):
            raise SpaceError(f"--k {k}: the features have only {len(ratios)} components")
        return int(k)
    cumulative = np.cumsum(ratios)
    # float sums may end a hair under 1.0: a target of 1.0 then means "all components"
    reached = np.nonzero(cumulative >= (variance or 1.0) - 1e-9)[0]
    return int(reached[0]) + 1 if len(reached) else len(ratios)


def fit_basis(moments: Moments, rule: dict) -> Basis:
    """The space's basis from the moments of the photos it is fitted on."""
    n, dim = moments.n, len(moments.mean)
    if n < 2:
        raise SpaceError(f"{n} feature vector(s); PCA needs at least 2")
    if not moments.m2.diagonal().any():
        raise SpaceError(f"all {n} feature vectors are identical; there is no variance to explain")
    if rule["k"] is not None and rule["k"] > min(dim, n - 1):
        raise SpaceError(
            f"--k {rule['k']}: {n} feature vectors of {dim} values have at most "
            f"{min(dim, n - 1)} principal components; pass a smaller --k or use --variance"
        )
    spectrum, components = spectrum_and_components(moments)
    k = choose_k(spectrum, rule["k"], rule["variance"])
    return Basis(components[:, :k], spectrum, moments.mean.copy())


def kept_heldout(halves: tuple[Moments, Moments], k: int) -> float:
    """What a k-axis basis keeps of photos it was not fitted on: fitted on each half of the photos,
    measured on the other, averaged (the halves are half the size: a slightly pessimistic figure)."""
    shares = []
    for fit, other in (halves, halves[::-1]):
        if fit.n < 2 or other.n < 1:
            continue
        _, components = spectrum_and_components(fit)
        shares.append(kept_share(Basis(components[:, :k], np.zeros(0), fit.mean), other))
    return float(np.mean(shares)) if shares else 1.0


def residual_ratio(kept_by_new: float, heldout: float) -> float:
    """How much more of their variance the new photos lose than held-out photos like the space's own."""
    return (1.0 - kept_by_new) / max(1.0 - heldout, 1e-12)


def kept_share(basis: Basis, moments: Moments) -> float:
    """The share of the rows' spread around the basis' mean that the basis keeps."""
    scatter = moments.scatter_about(basis.mean)
    total = float(np.trace(scatter))
    v = basis.components
    return float(np.einsum("ij,ik,kj->", v, scatter, v)) / total if total > 0 else 1.0


def basis_gap(basis: Basis, total: Moments) -> float:
    """1 - (variance of all photos the basis keeps) / (what the best k axes for them would keep)."""
    eigenvalues = np.linalg.eigvalsh(total.m2)[::-1]
    best = float(np.clip(eigenvalues[: basis.k], 0.0, None).sum())
    v = basis.components
    kept = float(np.einsum("ij,ik,kj->", v, total.m2, v))
    return max(0.0, 1.0 - kept / best) if best > 0 else 0.0


@dataclass(frozen=True)
class Drift:
    """The drift signals of a run (None: not measured, e.g. no new photos or no labels)."""

    kept_by_new: float | None = None
    residual_ratio: float | None = None
    new_class_share: float | None = None
    basis_gap: float | None = None

    def as_dict(self) -> dict:
        return {
            "kept_by_new": _round(self.kept_by_new),
            "residual_ratio": _round(self.residual_ratio),
            "new_class_share": _round(self.new_class_share),
            "basis_gap": _round(self.basis_gap),
            "residual_ratio_max": RESIDUAL_RATIO_MAX,
            "new_class_share_max": NEW_CLASS_SHARE_MAX,
            "basis_gap_max": BASIS_GAP_MAX,
        }


def measure_drift(space: dict | None, basis: Basis | None, new: BatchMoments, totals: BatchMoments) -> Drift:
    """The signals, from the new photos' moments and the running totals (space: the current commit)."""
    if space is None or basis is None:
        return Drift()
    kept = kept_share(basis, new.moments) if new.moments.n else None
    labelled = new.labelled_photos()
    unseen = labelled - new.labelled_photos(set(space["fitted_labels"]))
    return Drift(
        kept_by_new=kept,
        residual_ratio=None if kept is None else residual_ratio(kept, space["kept_heldout"]),
        new_class_share=unseen / labelled if labelled else None,
        basis_gap=basis_gap(basis, totals.moments) if totals.moments.n > 1 else None,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def refit_reason(space: dict | None, refit: str, rule: dict, drift: Drift) -> str | None:
    """Why this run fits a new space (None: it projects into the current one). space: the current
    space's commit."""
    if space is None:
        return "the lake's first space"
    if rule != space["k_rule"]:
        if refit == "never":
            raise SpaceError(
                f"{describe_rule(rule)} differs from the current space's {describe_rule(space['k_rule'])}, "
                "which means a new space, and pca_refit is 'never': pass the space's value "
                "or set pca_refit to 'auto'"
            )
        return f"{describe_rule(rule)} instead of the space's {describe_rule(space['k_rule'])}"
    if refit == "always":
        return "pca_refit=always"
    if refit == "never":
        return None
    if drift.residual_ratio is not None and drift.residual_ratio > RESIDUAL_RATIO_MAX:
        return (
            f"the new photos lose {drift.residual_ratio:.2f}x the variance held-out photos like the space's "
            f"own would (> {RESIDUAL_RATIO_MAX})"
        )
    if drift.new_class_share is not None and drift.new_class_share >= NEW_CLASS_SHARE_MAX:
        return f"{drift.new_class_share:.1%} of the new labelled photos are of classes the space has not seen"
    if drift.basis_gap is not None and drift.basis_gap > BASIS_GAP_MAX:
        return f"the best basis for all photos keeps {drift.basis_gap:.3f} more of their variance (> {BASIS_GAP_MAX})"
    return None
