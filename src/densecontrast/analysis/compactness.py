"""Feature compactness: how tightly an instance's pixel features gather, and how far apart instances are.

The paper's Figure 4 shows, with t-SNE, that the dense contrastive loss makes the mask head's per-pixel
features of an instance more compact and better separated from the background. This module measures
that with numbers and draws the t-SNE picture.

Shapes: N pixels, C channels, G groups (e.g. RoIs), P plotted pixels.

Pixels carry an instance label (``>= 0``) or ``-1`` for background, and optionally a group (the RoI they
come from). Labels are compared only inside a group: in a Mask R-CNN, the mask head sees each RoI on its
own, and label 0 in RoI 3 and label 0 in RoI 5 are different instances. Features are compared by cosine
similarity, as the loss compares them.

Needs numpy; :func:`plot_tsne` also needs matplotlib and scikit-learn (the ``analysis`` extra).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["FeatureCompactness", "feature_compactness", "plot_tsne", "tsne_embedding"]


@dataclass(frozen=True)
class FeatureCompactness:
    """Compactness figures of a set of labelled pixel features (cosine similarities, in [-1, 1]).

    Attributes:
        intra: mean similarity of an instance's pixels to their own instance centroid, averaged over
            instances (each instance counts once). Higher means more compact.
        inter: mean similarity between the centroids of two different instances of the same group, over
            all such pairs; NaN when no group holds two instances. Lower means better separated.
        background: mean similarity between an instance centroid and the background centroid of its
            group; NaN when no group holds both. Lower means better separated.
        separation: mean cosine distance (1 - similarity) between centroids (instance-instance and
            instance-background pairs pooled) divided by the mean cosine distance of instance pixels
            to their own centroid. Higher is better; NaN when there are no pairs, inf when every
            instance is a single point.
        num_instances: instances (distinct (group, label >= 0) pairs).
        num_pixels: labelled pixels used (instance and background).

    A centroid is the mean of the L2-normalised features, normalised again.
    """

    intra: float
    inter: float
    background: float
    separation: float
    num_instances: int
    num_pixels: int

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-friendly dict (NaN and inf become None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


def _check_inputs(feats: Tensor, labels: Tensor, groups: Tensor | None) -> Tensor:
    if not isinstance(feats, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(
            f"feats and labels must be tensors; got {type(feats).__name__} and {type(labels).__name__}"
        )
    if feats.ndim != 2:
        raise ValueError(f"feats must have shape (N, C); got {tuple(feats.shape)}")
    if not feats.is_floating_point():
        raise TypeError(f"feats must be a float tensor; got {feats.dtype}")
    if labels.shape != feats.shape[:1] or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor of shape (N,) = ({feats.shape[0]},) matching feats "
            f"{tuple(feats.shape)}; got {labels.dtype} {tuple(labels.shape)}"
        )
    if groups is None:
        return torch.zeros_like(labels, dtype=torch.int64)
    if not isinstance(groups, Tensor):
        raise TypeError(f"groups must be a tensor or None; got {type(groups).__name__}")
    if groups.shape != labels.shape or groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError(
            f"groups must be an integer tensor of shape (N,) = ({labels.shape[0]},) like labels; "
            f"got {groups.dtype} {tuple(groups.shape)}"
        )
    return groups.to(torch.int64)


def _mean(values: list[Tensor]) -> float:
    flat = torch.cat([v.flatten() for v in values]) if values else torch.zeros(0)
    return float(flat.mean()) if flat.numel() else math.nan


@torch.no_grad()
def feature_compactness(feats: Tensor, labels: Tensor, *, groups: Tensor | None = None) -> FeatureCompactness:
    """Compactness and separation of per-pixel features grouped by instance.

    Args:
        feats: float tensor (N, C), one feature vector per pixel.
        labels: int tensor (N,), the pixel's instance (``>= 0``), ``-1`` for background; other negative
            values are ignored.
        groups: int tensor (N,) or None, the group (e.g. RoI) of each pixel; labels are compared only
            within a group. None puts every pixel in one group.

    Returns:
        A :class:`FeatureCompactness`. Computed in float64.

    Raises:
        TypeError: non-tensor inputs, non-float ``feats``.
        ValueError: shapes that do not agree.

    Examples:
        >>> feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> fc = feature_compactness(feats, torch.tensor([0, 0, 1, 1]))
        >>> round(fc.intra, 3), round(fc.inter, 3), fc.num_instances
        (0.998, 0.11, 2)
    """
    groups = _check_inputs(feats, labels, groups)
    keep = labels >= -1
    x = torch.nn.functional.normalize(feats[keep].double(), dim=1)
    lab, grp = labels[keep].to(torch.int64), groups[keep]
    if x.shape[0] == 0:
        return FeatureCompactness(math.nan, math.nan, math.nan, math.nan, 0, 0)
    # one key per (group, label); background is label -1
    pairs, key = torch.unique(torch.stack([grp, lab], dim=1), dim=0, return_inverse=True)
    sums = torch.zeros(pairs.shape[0], x.shape[1], dtype=x.dtype).index_add_(0, key, x)
    centroids = torch.nn.functional.normalize(sums, dim=1)
    to_own = (x * centroids[key]).sum(dim=1)  # (N,)
    counts = torch.bincount(key, minlength=pairs.shape[0]).to(x.dtype)
    per_key = torch.zeros(pairs.shape[0], dtype=x.dtype).index_add_(0, key, to_own) / counts
    is_inst = pairs[:, 1] >= 0
    intra = float(per_key[is_inst].mean()) if bool(is_inst.any()) else math.nan

    inter_sims: list[Tensor] = []
    back_sims: list[Tensor] = []
    for g in torch.unique(pairs[:, 0]).tolist():
        in_group = pairs[:, 0] == g
        inst = centroids[in_group & is_inst]
        back = centroids[in_group & ~is_inst]
        if inst.shape[0] >= 2:
            sim = inst @ inst.t()
            upper = torch.triu(torch.ones_like(sim, dtype=torch.bool), diagonal=1)
            inter_sims.append(sim[upper])
        if inst.shape[0] and back.shape[0]:
            back_sims.append(inst @ back[0])
    inter, background = _mean(inter_sims), _mean(back_sims)
    between = _mean(inter_sims + back_sims)
    within = 1.0 - intra
    if math.isnan(between) or math.isnan(within):
        separation = math.nan
    elif within <= 1e-12:
        separation = math.inf
    else:
        separation = (1.0 - between) / within
    return FeatureCompactness(
        intra=intra,
        inter=inter,
        background=background,
        separation=separation,
        num_instances=int(is_inst.sum()),
        num_pixels=int(x.shape[0]),
    )


def tsne_embedding(
    feats: Tensor,
    labels: Tensor,
    *,
    groups: Tensor | None = None,
    max_points: int = 1500,
    seed: int = 0,
) -> tuple[Any, Any, Any]:
    """A 2-D t-SNE embedding (cosine metric) of at most ``max_points`` pixels sampled uniformly.

    Args:
        feats: float tensor (N, C).
        labels: int tensor (N,), instance (``>= 0``) or background (``-1``); other values are dropped.
        groups: int tensor (N,) or None, see :func:`feature_compactness`.
        max_points: largest number of pixels embedded.
        seed: seed of the sampling and of t-SNE.

    Returns:
        ``(xy, labels, groups)``: numpy arrays (P, 2), (P,) and (P,) of the sampled pixels.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
        raise ImportError(
            "tsne_embedding needs scikit-learn; install it with `pip install 'densecontrast[analysis]'`"
        ) from err
    groups = _check_inputs(feats, labels, groups)
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an int >= 2; got {max_points!r}")
    keep = (labels >= -1).nonzero().flatten()
    gen = torch.Generator().manual_seed(seed)
    if keep.numel() > max_points:
        keep = keep[torch.randperm(keep.numel(), generator=gen)[:max_points]]
    x = torch.nn.functional.normalize(feats[keep].double(), dim=1).numpy()
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 labelled pixels; got {n}")
    tsne = TSNE(
        n_components=2, perplexity=min(30.0, (n - 1) / 3), metric="cosine", init="pca", random_state=seed
    )
    return tsne.fit_transform(x), labels[keep].numpy(), groups[keep].numpy()


def plot_tsne(
    panels: Mapping[str, tuple[Tensor, Tensor, Tensor | None]],
    path: str | os.PathLike[str],
    *,
    max_points: int = 1500,
    seed: int = 0,
    figures: Mapping[str, FeatureCompactness] | None = None,
) -> Any:
    """Save a PNG with one t-SNE panel per feature set, pixels coloured by instance.

    Instances are (group, label >= 0) pairs. Without groups, the first nine instances get their own
    colours; with several groups (RoIs), only label 0 of each group (the RoI's own instance) does, and
    the other instances a RoI shows are dark blue. Background pixels are light grey (the paper's Figure
    4 shows foreground against background).

    Args:
        panels: title -> ``(feats (N, C), labels (N,), groups (N,) or None)``.
        path: the PNG to write.
        max_points: pixels embedded per panel.
        seed: seed of sampling and t-SNE (the same for every panel).
        figures: title -> :class:`FeatureCompactness`, printed under the panel's title when given.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay untouched

    if not panels:
        raise ValueError("panels must hold at least one feature set; got none")
    fig = Figure(figsize=(5.2 * len(panels), 5.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    tab10 = matplotlib.colormaps["tab10"]
    colours = [tab10(i) for i in range(10) if i != 7]  # without its grey
    for ax, (title, (feats, labels, groups)) in zip(axes[0], panels.items()):
        xy, lab, grp = tsne_embedding(feats, labels, groups=groups, max_points=max_points, seed=seed)
        back = lab < 0
        ax.scatter(xy[back, 0], xy[back, 1], s=5, c="#b0b4b9", alpha=0.5, linewidths=0)
        # with several groups (RoIs), label 0 is the group's own instance: only those get colours
        grouped = len(set(grp.tolist())) > 1
        inst_keys = sorted({(int(v), int(g)) for g, v in zip(grp[~back], lab[~back])})
        coloured = [k for k in inst_keys if not grouped or k[0] == 0][: len(colours)]
        for v, g in inst_keys:
            sel = (grp == g) & (lab == v)
            if (v, g) in coloured:
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=colours[coloured.index((v, g))], alpha=0.9,
                           linewidths=0)  # fmt: skip
            else:
                ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color="#2f3b4c", alpha=0.6, linewidths=0)
        text = title
        if figures is not None and title in figures:
            f = figures[title]
            text += f"\nintra {f.intra:.3f} · inst-inst {f.inter:.3f} · inst-bg {f.background:.3f}"
            text += f" · separation {f.separation:.2f}"
        ax.set_title(text, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(
            0.01, 0.01,
            f"{len(lab)} pixels: {len(coloured)} instances in colour, "
            f"{len(inst_keys) - len(coloured)} more in dark blue, background light grey",
            transform=ax.transAxes, fontsize=8, color="#444444",
        )  # fmt: skip
    fig.suptitle("t-SNE of the mask head's pixel features (cosine)", fontsize=12)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    return fig
