from __future__ import annotations

import math

import pytest
import torch

from densecontrast.analysis.compactness import FeatureCompactness, feature_compactness, plot_tsne


def _reference(feats: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float, float]:
    """Plain float64 loops over one group: intra, inter, background, separation."""
    x = [f / f.norm() for f in feats.double()]
    ids = sorted({int(v) for v in labels if v >= 0})

    def centroid(v: int) -> torch.Tensor:
        members = [x[i] for i in range(len(x)) if int(labels[i]) == v]
        c = sum(members) / len(members)
        return c / c.norm()

    intra_per = []
    for v in ids:
        c = centroid(v)
        sims = [float(x[i] @ c) for i in range(len(x)) if int(labels[i]) == v]
        intra_per.append(sum(sims) / len(sims))
    intra = sum(intra_per) / len(intra_per)
    inter = [float(centroid(a) @ centroid(b)) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    back = [float(centroid(v) @ centroid(-1)) for v in ids] if (labels == -1).any() else []
    between = inter + back
    sep = (1 - sum(between) / len(between)) / (1 - intra)
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return intra, mean(inter), mean(back), sep


def _clusters(spread: float, n: int = 200, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:3] * 5.0  # orthogonal directions: instance 0, instance 1, background
    labels = torch.tensor([-1, 0, 1]).repeat_interleave(n)
    which = torch.tensor([2, 0, 1]).repeat_interleave(n)
    feats = centres[which] + spread * torch.randn(3 * n, dim, generator=gen)
    return feats, labels


def test_two_tight_clusters_are_compact_and_separated() -> None:
    feats, labels = _clusters(spread=0.05)
    fc = feature_compactness(feats, labels)
    assert fc.intra > 0.99
    assert abs(fc.inter) < 0.02 and abs(fc.background) < 0.02  # orthogonal centres
    assert fc.separation > 50
    assert fc.num_instances == 2 and fc.num_pixels == 600


def test_one_blob_is_neither_compact_nor_separated() -> None:
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(600, 16, generator=gen)  # one isotropic blob around the origin
    labels = torch.randint(-1, 2, (600,), generator=gen)
    fc = feature_compactness(feats, labels)
    assert fc.intra < 0.4  # pixels of an instance point anywhere
    # centroids of random subsets of one blob are not orthogonal-apart: separation ~ 1 or less
    tight = feature_compactness(*_clusters(spread=0.05))
    assert fc.separation < 1.5 < tight.separation


def test_matches_float64_loops() -> None:
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(40, 5, generator=gen)
    labels = torch.randint(-1, 3, (40,), generator=gen)
    labels[:4] = torch.tensor([-1, 0, 1, 2])  # every label present
    fc = feature_compactness(feats, labels)
    intra, inter, back, sep = _reference(feats, labels)
    assert fc.intra == pytest.approx(intra, abs=1e-12)
    assert fc.inter == pytest.approx(inter, abs=1e-12)
    assert fc.background == pytest.approx(back, abs=1e-12)
    assert fc.separation == pytest.approx(sep, rel=1e-10)


def test_groups_keep_labels_apart() -> None:
    """Label 0 of group 0 and label 0 of group 1 are two instances, never compared across groups."""
    feats, labels = _clusters(spread=0.05)
    doubled = torch.cat([feats, -feats])  # group 1 is the mirror image
    fc = feature_compactness(
        doubled, torch.cat([labels, labels]), groups=torch.arange(2).repeat_interleave(600)
    )
    single = feature_compactness(feats, labels)
    assert fc.num_instances == 4
    assert fc.intra == pytest.approx(single.intra, abs=1e-12)
    assert fc.inter == pytest.approx(single.inter, abs=1e-12)  # the mirrored pairs (-1) are not counted
    merged = feature_compactness(doubled, torch.cat([labels, labels]))
    assert merged.intra < 0.1  # without groups the mirrored halves cancel


def test_ignored_pixels_and_empty_input() -> None:
    feats, labels = _clusters(spread=0.05)
    noisy = torch.cat([feats, torch.randn(50, 16)])
    fc = feature_compactness(noisy, torch.cat([labels, torch.full((50,), -2)]))
    assert fc == feature_compactness(feats, labels)
    empty = feature_compactness(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert empty.num_pixels == 0 and math.isnan(empty.intra)
    alone = feature_compactness(torch.randn(5, 3), torch.zeros(5, dtype=torch.int64))
    assert math.isnan(alone.inter) and math.isnan(alone.background) and math.isnan(alone.separation)
    assert alone.to_dict()["separation"] is None


@pytest.mark.parametrize(
    ("feats", "labels", "groups", "error", "match"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64), None, ValueError, r"feats must have shape"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.int64), None, ValueError, "labels must be"),
        (torch.zeros(4, 2), torch.zeros(4), None, ValueError, "labels must be an integer"),
        (torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), None, TypeError, "float"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), ValueError,
         "groups must be"),
        ([[0.0]], torch.zeros(1, dtype=torch.int64), None, TypeError, "must be tensors"),
    ],
)  # fmt: skip
def test_bad_inputs(feats, labels, groups, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        feature_compactness(feats, labels, groups=groups)


def test_plot_tsne_one_panel_per_feature_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    feats, labels = _clusters(spread=0.05, n=30)
    figures = {"tight": feature_compactness(feats, labels)}
    path = tmp_path / "tsne.png"
    panels = {"tight": (feats, labels, None), "again": (feats, labels, None)}
    fig = plot_tsne(panels, path, max_points=60, figures=figures)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["tight", "again"]
    assert "separation" in fig.axes[0].get_title() and "\n" not in fig.axes[1].get_title()
    # one scatter for the background, one per instance; every sampled pixel drawn once
    n_instances = int(labels.max()) + 1
    assert len(fig.axes[0].collections) == 1 + n_instances
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == min(60, len(labels))
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="panels"):
        plot_tsne({}, tmp_path / "none.png")


def test_single_point_instances_are_infinitely_separated() -> None:
    fc = feature_compactness(torch.eye(2), torch.tensor([0, -1]))
    assert isinstance(fc, FeatureCompactness)
    assert fc.intra == 1.0 and fc.background == 0.0 and fc.separation == math.inf
    assert fc.to_dict()["separation"] is None
