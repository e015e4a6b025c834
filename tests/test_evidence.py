"""The evidence study's code paths (benchmarks/evidence.py, render_evidence.py) on tiny configurations.

The study's figures are measured results in benchmarks/results/ and docs/evidence.md; these tests check the
machinery that produces them: pretraining and its cache, the fine-tuning start, the bookkeeping of the
sweep (order, resume, locks, choices made on the tuning split) and the statistics.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import evidence  # noqa: E402
import render_evidence  # noqa: E402

QUICK = evidence.profile_config("quick", "cpu")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The quick profile's pretraining spec, its cache folder and the checkpoint trained into it (once)."""
    spec = replace(evidence.pretraining_for(QUICK, quick=True), steps=1)
    cache = tmp_path_factory.mktemp("pretrained")
    return spec, cache, evidence.pretrained_checkpoint(spec, cache, log=lambda m: None)


def test_pretraining_is_cached_by_configuration(pretrained, monkeypatch):
    spec, cache, path = pretrained
    assert path.exists() and spec.key() in path.name
    payload = torch.load(path, weights_only=False)
    model = evidence.build_model(spec.demo_config())
    assert payload["backbone"].keys() == model.backbone.state_dict().keys()
    assert payload["spec"]["source_categories"] == evidence.SOURCE_CATEGORIES

    def no_training(*args, **kwargs):
        raise AssertionError("a cached checkpoint was trained again")

    monkeypatch.setattr(evidence, "train", no_training)
    assert evidence.pretrained_checkpoint(spec, cache, log=lambda m: None) == path  # hit
    other = replace(spec, steps=spec.steps + 1)
    assert other.key() != spec.key()
    with pytest.raises(AssertionError, match="trained again"):  # a miss trains
        evidence.pretrained_checkpoint(other, cache, log=lambda m: None)


def test_source_distribution_is_disjoint_from_the_target():
    spec = evidence.pretraining_for(QUICK, quick=True)
    source = spec.demo_config()
    assert source.num_categories != QUICK.num_categories
    assert source.seed not in range(0, evidence.TUNING_SEED_OFFSET + 100)
    train_src, _ = evidence.datasets(source)
    train_tgt, _ = evidence.datasets(QUICK)
    assert not torch.equal(train_src[0][0], train_tgt[0][0])


def test_finetune_init_loads_the_backbone_and_freezes_the_first_stages(pretrained):
    from torchvision.ops.misc import FrozenBatchNorm2d

    _, _, path = pretrained
    state = torch.load(path, weights_only=False)["backbone"]
    torch.manual_seed(123)
    model = evidence.build_model(QUICK)
    evidence.finetune_init(path, 2)(model)
    loaded = model.backbone.state_dict()
    for name, value in state.items():
        if name.endswith("num_batches_tracked") and name not in loaded:  # frozen batch norms do not count
            continue
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    body = model.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert all(not p.requires_grad for p in body.conv1.parameters())
    assert all(not p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert all(p.requires_grad for p in model.roi_heads.parameters())
    frozen = {k: v.clone() for k, v in body.layer1.state_dict().items()}
    free = body.layer2[0].conv1.weight.detach().clone()
    train_set, _ = evidence.datasets(replace(QUICK, steps=2))
    evidence.train(model, train_set, replace(QUICK, steps=2), show_progress=False)
    for k, v in body.layer1.state_dict().items():
        torch.testing.assert_close(v, frozen[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(body.layer2[0].conv1.weight, free)


def test_freeze_at_zero_changes_nothing():
    model = evidence.build_model(QUICK)
    before = [type(m) for m in model.modules()]
    evidence.freeze_stages(model, 0)
    assert [type(m) for m in model.modules()] == before
    assert all(p.requires_grad for p in model.parameters())


def _fake_record(config, seed, variant, *, regime, tuning, init=None, extra=None):
    # AP depends on lr, λ and seed so that the choices on the tuning split are known in advance
    ap = 0.30 + (0.02 if config.lr == 3e-4 else 0.0) + (0.01 * config.weight if variant == "dcl" else 0.0)
    ap += 0.002 * seed
    return {
        "seed": seed, "variant": variant, "regime": regime,
        "weight": config.weight if variant == "dcl" else 0.0,
        "config": {**evidence.asdict(config), "regime": regime, **(extra or {})},
        "eval_split": {"split": "test" if tuning else "val", "seed": seed, "images": 1},
        "ap": ap, "ap50": ap, "ap75": ap, "delta": {"fFP": 0.01, "bFP": 0.02, "FN": 0.03},
        "box": {"ap": ap + 0.05, "ap50": 0.5, "ap75": 0.4, "recall50": 0.6},
        "detections": {"total": 5, "score_at_least_0.5": 3, "matched": 3, "unmatched": 2, "ground_truth": 4},
        "compactness": {"intra": 0.7, "inter": 0.5, "background": 0.6, "separation": 1.0},
        "wall_seconds": 1.0, "cpu_seconds": 1.0,
    }  # fmt: skip


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    calls: list[tuple] = []

    def record(config, seed, variant, **kwargs):
        calls.append((kwargs["regime"], kwargs["tuning"], seed, variant, config.weight, config.lr))
        return _fake_record(config, seed, variant, **kwargs)

    monkeypatch.setattr(evidence, "run_record", record)
    monkeypatch.setattr(
        evidence, "pretrained_checkpoint", lambda spec, cache, log=print: tmp_path / "ckpt.pt"
    )
    monkeypatch.setattr(evidence, "finetune_init", lambda path, freeze_at: None)
    return calls


def test_study_runs_in_order_chooses_on_the_tuning_split_and_resumes(tmp_path, fake_runs):
    results = tmp_path / "results"
    argv = ["--study", "--quick", "--results", str(results), "--cache", str(tmp_path), "--seeds", "0", "1"]
    assert evidence.main(argv) == 0
    tuning = [c for c in fake_runs if c[1]]
    # the recipe candidates first, then the λ sweep, all on the tuning split
    assert [(c[3], c[5]) for c in tuning[:2]] == [("baseline", 1e-3), ("baseline", 3e-4)]
    assert [c[4] for c in tuning[2:]] == list(evidence.WEIGHTS)
    recipe = json.loads((results / "finetune" / "quick" / "tuning" / "recipe.json").read_text())
    assert recipe["lr"] == 3e-4  # the fake tuning AP is higher there
    evaluation = [c for c in fake_runs if c[0] == "finetune" and not c[1]]
    assert len(evaluation) == 2 * (1 + len(evidence.WEIGHTS))
    assert {c[5] for c in evaluation} == {3e-4}
    assert [c[2] for c in evaluation] == [0] * 5 + [1] * 5  # seed by seed
    scratch = [c for c in fake_runs if c[0] == "scratch"]
    expected = [(0, "dcl", 0.1), (0, "dcl", 1.2), (1, "dcl", 0.1), (1, "dcl", 1.2)]
    assert sorted((c[2], c[3], c[4]) for c in scratch if c[3] == "dcl") == expected
    fine = results / "finetune" / "quick"
    assert (fine / "seed1_dcl.json").exists() and (fine / "weight0.3" / "seed1_dcl.json").exists()
    saved = json.loads((fine / "weight0.6" / "seed0_dcl.json").read_text())
    assert (saved["regime"], saved["config"]["weight"], saved["seed"]) == ("finetune", 0.6, 0)
    n = len(fake_runs)
    assert evidence.main(argv) == 0
    assert len(fake_runs) == n  # everything finished: nothing is trained again


def test_a_claimed_run_is_skipped_and_logged(tmp_path, fake_runs):
    folder = tmp_path / "res"
    target = evidence.run_path(folder, 0, "dcl", 0.1)
    target.parent.mkdir(parents=True)
    target.with_suffix(".lock").write_text("12345\n")
    study = evidence.Study(folder)
    job = evidence.Job(target, "seed 0 dcl", lambda: pytest.fail("a claimed run was computed"))
    assert study.run(job) is None
    assert "another process holds seed0_dcl.lock" in (folder / "evidence.log").read_text()
    assert target.with_suffix(".lock").exists()  # someone else's lock stays


def test_run_paths():
    root = Path("r")
    assert evidence.run_path(root, 3, "baseline", 0.1) == root / "seed3_baseline.json"
    assert evidence.run_path(root, 3, "dcl", 1.2) == root / "seed3_dcl.json"
    assert evidence.run_path(root, 3, "dcl", 0.3) == root / "weight0.3" / "seed3_dcl.json"


def test_choices():
    assert evidence.choose_recipe({1e-3: {"ap": 0.3}, 3e-4: {"ap": 0.3}}) == 3e-4  # tie: smaller lr
    choice = evidence.choose_weight({"ap": 0.2}, {0.1: {"ap": 0.25}, 0.3: {"ap": 0.21}})
    assert choice == {"weight": 0.1, "beats_baseline": True, "ap": 0.25, "baseline_ap": 0.2}


def test_paired_interval_on_known_numbers():
    mean, low, high = render_evidence.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    # sd 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.303 / 1.732 = 2.4842
    assert (low, high) == pytest.approx((-0.4842, 4.4842), abs=1e-4)
    assert math.isnan(render_evidence.paired_interval([1.0])[1])
    assert math.isnan(render_evidence.paired_interval([])[0])
    with pytest.raises(ValueError, match="df"):
        render_evidence.t_quantile(0)


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        assert render_evidence.t_quantile(df) == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4)


def test_render_reports_every_run_and_the_paired_intervals(tmp_path, fake_runs):
    results = tmp_path / "results"
    argv = ["--study", "--quick", "--results", str(results), "--cache", str(tmp_path), "--seeds", "0", "1"]
    evidence.main(argv)
    body, summary = render_evidence.render(results, "quick", tmp_path, [0, 1])
    assert "| 1 | +DCL λ=0.6 | 32.8 |" in body  # fine-tuning: 0.30 + 0.02 (lr) + 0.006 (λ) + 0.002 (seed)
    assert "| 1 | +DCL λ=0.1 | 30.3 |" in body  # from scratch: lr 1e-3
    # fake AP: Baseline 32.0 + 0.2 s, +DCL λ=0.6 32.6 + 0.2 s: the paired difference is +0.6 in each seed
    assert "| +DCL λ=0.6 − Baseline | 2 | +0.6 [+0.6, +0.6]" in body
    assert summary["finetune"]["+DCL λ=0.6"]["mean"] == pytest.approx(0.6)
    assert "| 1.2 | 2 | 33.3 | 38.3 | 36.5 | 39.8 |" in body  # Table 1 layout with the paper's values
    assert "Recipe: lr 0.0003" in body
    assert "best λ = 1.2" in body
    assert (tmp_path / "evidence_lambda.png").exists()
    assert body.count("](img/evidence_lambda.png)") == 1  # one plot holds both regimes: shown once


def test_plot_has_one_series_per_regime(tmp_path, fake_runs):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    results = tmp_path / "results"
    evidence.main(
        ["--study", "--quick", "--results", str(results), "--cache", str(tmp_path), "--seeds", "0", "1"]
    )
    figures: list[Figure] = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    try:
        Figure.savefig = keep  # type: ignore[method-assign]
        render_evidence.render(results, "quick", tmp_path, [0, 1])
    finally:
        Figure.savefig = original  # type: ignore[method-assign]
    (fig,) = figures
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes][:2] == ["mask AP", "box AP"]
    labels = axes[0].get_legend_handles_labels()[1]
    assert sorted(labels) == ["finetune", "scratch"]


def test_runs_from_different_checkpoints_are_not_paired(tmp_path, fake_runs):
    results = tmp_path / "results"
    evidence.main(
        ["--study", "--quick", "--results", str(results), "--cache", str(tmp_path), "--seeds", "0", "1"]
    )
    fine = results / "finetune" / "quick"
    for path, digest in ((fine / "seed0_baseline.json", "aaaa"), (fine / "seed0_dcl.json", "bbbb")):
        record = json.loads(path.read_text())
        record["config"].setdefault("pretraining", {})["checkpoint_sha256"] = digest
        path.write_text(json.dumps(record))
    runs = render_evidence.load(fine)
    seeds, _ = render_evidence.paired(runs, "dcl")
    assert seeds == [1]  # seed 0's Baseline and +DCL λ=1.2 started from different checkpoints
    assert render_evidence.paired(runs, "dcl@0.3")[0] == [1]  # seed 0's Baseline has a digest, λ=0.3's not


def test_the_page_names_each_checkpoint_and_its_seeds(tmp_path, fake_runs):
    results = tmp_path / "results"
    evidence.main(
        ["--study", "--quick", "--results", str(results), "--cache", str(tmp_path), "--seeds", "0", "1"]
    )
    fine = results / "finetune" / "quick"
    body, _ = render_evidence.render(results, "quick", None, [0, 1])
    assert "checkpoint was made" not in body  # one checkpoint: nothing to say
    for seed, digest, cpu in ((0, "aaaa", "One CPU"), (1, "bbbb", "Other CPU")):
        for path in fine.glob(f"**/seed{seed}_*.json"):
            record = json.loads(path.read_text())
            record["config"].setdefault("pretraining", {})["checkpoint_sha256"] = digest
            record["machine"] = {"cpu": cpu}
            path.write_text(json.dumps(record))
    body, _ = render_evidence.render(results, "quick", None, [0, 1])
    assert "The pretrained checkpoint was made 2 times" in body
    assert "`aaaa` for seed 0 (run on One CPU); `bbbb` for seed 1 (run on Other CPU)" in body


def test_checkpoint_digest_names_the_file_content(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert evidence.checkpoint_digest(a) != evidence.checkpoint_digest(b)
    assert len(evidence.checkpoint_digest(a)) == 16
    extra = evidence.run_extra(evidence.pretraining_for(QUICK, quick=True), a)
    assert extra["pretraining"]["checkpoint_sha256"] == evidence.checkpoint_digest(a)


def _tiny_batch(seed: int = 0):
    data, _ = evidence.datasets(replace(QUICK, seed=seed).resolved())
    images, targets = zip(*(data[i] for i in range(2)))
    return list(images), list(targets)


def test_mask_head_only_stops_the_losss_gradient_at_the_roi_features():
    """The loss's gradient reaches the mask head and the predictor's deconvolution, nothing before the
    RoI features; the mask loss's gradient still reaches the backbone."""
    from densecontrast.adapters.torchvision import attach

    torch.manual_seed(0)
    model = evidence.build_model(QUICK)
    evidence.mask_head_only(model)
    attach(model, weight=1.2)
    model.train()
    images, targets = _tiny_batch()
    losses = model(images, targets)
    assert losses["loss_dcl"].item() > 0
    head = [p for p in model.roi_heads.mask_head.parameters()]
    deconv = list(model.roi_heads.mask_predictor.conv5_mask.parameters())
    before = [p for p in model.backbone.parameters()] + [p for p in model.rpn.parameters()]
    grads = torch.autograd.grad(losses["loss_dcl"], head + deconv + before, allow_unused=True)
    n = len(head) + len(deconv)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:n])
    assert all(g is None or not g.any() for g in grads[n:])
    mask_grads = torch.autograd.grad(losses["loss_mask"], before, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in mask_grads)


def test_mask_head_only_changes_neither_the_mask_loss_nor_the_outputs():
    """The mask loss in training and the outputs in evaluation equal those of the unchanged model with
    the same weights, bit for bit."""
    torch.manual_seed(0)
    plain = evidence.build_model(QUICK)
    routed = evidence.build_model(QUICK)
    routed.load_state_dict(plain.state_dict())
    evidence.mask_head_only(routed)
    images, targets = _tiny_batch()
    for model in (plain, routed):
        model.train()
    torch.manual_seed(1)
    expected = plain(images, targets)
    torch.manual_seed(1)
    got = routed(images, targets)
    assert torch.equal(got["loss_mask"], expected["loss_mask"])
    plain.eval(), routed.eval()
    with torch.no_grad():
        for a, b in zip(plain(images), routed(images), strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_head_only_runs_go_to_their_own_folder_and_need_scratch_dcl(tmp_path, fake_runs):
    head = ["--quick", "--regime", "scratch", "--variants", "dcl", "--weight", "1.2", "--head-only"]
    code = evidence.main([*head, "--seeds", "3", "--results", str(tmp_path)])
    assert code == 0
    record = json.loads((tmp_path / "quick" / "headonly" / "seed3_dcl.json").read_text())
    assert record["config"]["dcl_gradient"] == "mask head only" and record["weight"] == 1.2
    with pytest.raises(SystemExit):
        evidence.main(["--quick", "--regime", "finetune", "--variants", "dcl", "--head-only"])
    with pytest.raises(SystemExit):
        evidence.main(["--quick", "--regime", "scratch", "--head-only"])  # the Baseline too


def test_render_puts_head_only_runs_beside_their_baseline_and_full_run(tmp_path, fake_runs):
    results = tmp_path / "results"
    evidence.main(
        ["--study", "--quick", "--results", str(results), "--cache", str(tmp_path), "--seeds", "0", "1"]
    )
    body, _ = render_evidence.render(results, "quick", None, [0, 1])
    assert "Mask head only" not in body  # no head-only run yet: no section
    head = ["--quick", "--regime", "scratch", "--variants", "dcl", "--weight", "1.2", "--head-only"]
    evidence.main([*head, "--seeds", "0", "1", "--results", str(results)])
    body, _ = render_evidence.render(results, "quick", None, [0, 1])
    # fake AP from scratch: Baseline 30.0 + 0.2 s, +DCL λ=1.2 (either way) 31.2 + 0.2 s
    assert "| 1 | Baseline | 30.2 |" in body and "| 1 | +DCL λ=1.2, mask head only | 31.4 |" in body
    assert "| mask head only − Baseline | 2 | +1.2 [+1.2, +1.2]" in body
    assert "| mask head only − full +DCL λ=1.2 | 2 | +0.0 [+0.0, +0.0]" in body
