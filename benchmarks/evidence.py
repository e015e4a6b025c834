"""The evidence study: baseline vs +DCL in two regimes, several λ, several seeds, on synthetic data.

Usage::

    nice -n 10 python benchmarks/evidence.py --study      # the whole study, resumable (hours on 2 cores)
    python benchmarks/evidence.py --study --quick          # the same bookkeeping in seconds (smoke test)
    python benchmarks/evidence.py --regime scratch --variants dcl --weight 0.1 --seeds 3 4   # one batch
    python benchmarks/evidence.py --regime scratch --variants dcl --weight 1.2 --head-only --seeds 3 4
    python benchmarks/evidence.py --study --device cuda    # the study with the demo's GPU configuration
    python benchmarks/render_evidence.py                   # docs/evidence.md tables and the plots

Two regimes:

``scratch``
    The demo's Mask R-CNN trained from random weights (:func:`densecontrast.demo.preset`, 1200 steps).
``finetune``
    The paper's regime (an ImageNet-pretrained backbone, fine-tuned), made here without downloads: the
    same model is first **pretrained without the loss on a disjoint source distribution**
    (``SyntheticInstances`` with 10 categories, i.e. all five shape families and their elongated
    variants, base seed ``SOURCE_SEED``, so no image is shared with any target split) for
    ``PRETRAIN_STEPS`` steps, once; the checkpoint is cached under ``--cache`` (keyed by its
    configuration, never committed, regenerated when missing). Each fine-tuning run then starts from
    that checkpoint's **backbone and FPN** (the RPN, box and mask heads start from random weights, as
    in the paper where only the backbone is pretrained), freezes the stem and the first residual stage
    (detectron2's default for fine-tuning, ``FREEZE_AT``), and trains ``FINETUNE_STEPS`` steps on the
    target data (the demo's 3-category scenes).

For each seed s the seed sets the target training images, their order, the initialisation of what is
not pretrained and the loss's sampler draws; Baseline and +DCL of a seed see the same images in the same
order from the same initial weights. Runs are evaluated on 100 held-out images (split ``"val"``, seed s):
mask AP with the segmentation-error analysis, box AP, detection counts, and the compactness of the mask
head's features on ground-truth RoIs.

Nothing is chosen on the evaluation split. ``--study`` runs, in this order:

1. the pretraining (finetune regime);
2. the fine-tuning recipe: a Baseline run per candidate learning rate (``RECIPE_LRS``) on the **tuning
   split** (split ``"test"``, seed 1000); the best tuning AP fixes the recipe (``tuning/recipe.json``);
3. the λ sweep on the tuning split (one run per λ), from which the default weight is chosen;
4. the evaluation sweep: ``SEEDS`` x (Baseline, +DCL at each λ of ``WEIGHTS``), seed by seed;
5. the from-scratch regime extended to ``SEEDS`` (Baseline, λ = 1.2, λ = 0.1).

Every run writes its JSON (with regime, λ and seed in its configuration) when it finishes, under
``benchmarks/results/evidence/<profile>/`` (scratch) or ``.../finetune/<profile>/`` (fine-tuning), the
+DCL runs of λ other than 1.2 in ``weight<λ>/`` below it; lines go to ``evidence.log`` there. Finished
runs are skipped, so the study resumes after an interruption; a run in progress holds a ``.lock`` file,
so two processes can share the work (a process waits while another one computes what it depends on;
remove stale locks of killed processes by hand).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

from densecontrast.demo import DemoConfig, build_model, datasets, preset, run_one, train  # noqa: E402

RESULTS = ROOT / "results" / "evidence"
CACHE = Path(os.environ.get("DENSECONTRAST_CACHE", Path.home() / ".cache" / "densecontrast"))
VARIANTS = ("baseline", "dcl")
REGIMES = ("scratch", "finetune")
TUNING_SPLIT = "test"
TUNING_SEED_OFFSET = 1000
HISTORY_EVERY = 10
PAPER_WEIGHT = 1.2
"""λ of +DCL runs whose results sit in the profile's folder itself (the paper's Cityscapes value)."""
SEEDS = (0, 1, 2, 3, 4)
WEIGHTS = (0.1, 0.3, 0.6, 1.2)
"""The λ of the fine-tuning sweep (a subset of the paper's Table 1 plus the released COCO value 0.1)."""
SCRATCH_WEIGHTS = (1.2, 0.1)
SOURCE_SEED = 50_000
SOURCE_CATEGORIES = 10
PRETRAIN_STEPS = 2400
FINETUNE_STEPS = 600
FINETUNE_WARMUP = 50
FREEZE_AT = 2
"""Backbone stages kept frozen while fine-tuning: 1 the stem, 2 the stem and the first residual stage."""
RECIPE_LRS = (1e-3, 3e-4)
HEAD_ONLY = "headonly"
"""The folder (below a regime's) of the +DCL runs whose loss trains the mask head only (``--head-only``)."""


def profile_config(name: str, device: str) -> DemoConfig:
    """The from-scratch configuration of a profile: ``cpu`` (the demo's), ``cuda`` or ``quick`` (smoke)."""
    if name == "quick":
        return replace(
            preset("cpu"), steps=3, train_images=8, val_images=3, image_size=64, warmup=1, device=device
        )
    return preset(device)


# ----------------------------------------------------------------------------------------------------------
# pretraining and fine-tuning


@dataclass(frozen=True)
class Pretraining:
    """What the pretrained checkpoint depends on (its cache key is a hash of these fields)."""

    model: dict[str, Any]
    steps: int
    source_categories: int = SOURCE_CATEGORIES
    source_seed: int = SOURCE_SEED
    source_images: int = 8000

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def demo_config(self) -> DemoConfig:
        fields = dict(self.model)
        fields.update(
            steps=self.steps,
            num_categories=self.source_categories,
            seed=self.source_seed,
            train_images=self.source_images,
        )
        return DemoConfig(**fields)


def pretraining_for(config: DemoConfig, *, quick: bool = False) -> Pretraining:
    """The pretraining of a target configuration: same model widths and image size, source data."""
    model = asdict(config.resolved())
    for name in ("steps", "seed", "num_categories", "train_images", "val_split", "val_seed", "weight"):
        model.pop(name)
    model.update(val_images=1)
    if quick:
        return Pretraining(model=model, steps=3, source_images=8)
    return Pretraining(model=model, steps=PRETRAIN_STEPS)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pretrained_checkpoint(spec: Pretraining, cache: Path, *, log: Callable[[str], None] = print) -> Path:
    """The cached checkpoint of ``spec``; trained (without the loss) and cached when missing.

    The file holds ``backbone`` (the state dict of ``model.backbone``: ResNet body and FPN), the
    pretraining configuration and its cost. Two processes asking at once: the second waits for the first.
    """
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"pretrain-{spec.key()}.pt"
    lock = path.with_suffix(".lock")
    while not path.exists():
        if _claim(lock):
            try:
                if path.exists():
                    break
                config = spec.demo_config()
                log(f"pretraining {path.name}: {config.steps} steps on the source distribution")
                wall, cpu = time.perf_counter(), _cpu_seconds()
                torch.manual_seed(config.seed)
                model = build_model(config)
                source, _ = datasets(config)
                history = train(model, source, config, desc="pretrain", show_progress=False)
                payload = {
                    "backbone": model.backbone.state_dict(),
                    "spec": asdict(spec),
                    "final_losses": history[-1] if history else {},
                    "wall_seconds": time.perf_counter() - wall,
                    "cpu_seconds": _cpu_seconds() - cpu,
                    "machine": machine(),
                }
                tmp = path.with_suffix(".tmp")
                torch.save(payload, tmp)
                tmp.replace(path)
                wall_s, cpu_s = payload["wall_seconds"], payload["cpu_seconds"]
                log(f"pretraining done: wall {wall_s:.0f} s, cpu {cpu_s:.0f} s")
            finally:
                lock.unlink(missing_ok=True)
        else:
            time.sleep(5)
    return path


def freeze_stages(model: nn.Module, freeze_at: int) -> None:
    """Freeze the first ``freeze_at`` stages of the ResNet body (1: stem, 2: stem and ``layer1``).

    The frozen stages' batch norms become :class:`torchvision.ops.misc.FrozenBatchNorm2d` with the same
    statistics, so neither their parameters nor their running statistics change.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    def frozen(bn: nn.BatchNorm2d) -> nn.Module:
        out = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            getattr(out, buffer).copy_(getattr(bn, buffer).detach())
        return out

    def convert(parent: nn.Module, names: list[str]) -> None:
        for name in names:
            child = getattr(parent, name)
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, frozen(child))
            else:
                child.requires_grad_(False)
                convert(child, [n for n, _ in child.named_children()])

    if freeze_at <= 0:
        return
    body: Any = model.backbone.body  # type: ignore[union-attr]
    convert(body, ["conv1", "bn1"] + (["layer1"] if freeze_at >= 2 else []))


def finetune_init(checkpoint: Path, freeze_at: int) -> Callable[[nn.Module], None]:
    """The ``init`` of a fine-tuning run: load the pretrained backbone and FPN, freeze the first stages."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["backbone"]

    def init(model: nn.Module) -> None:
        model.backbone.load_state_dict(state)  # type: ignore[union-attr]
        freeze_stages(model, freeze_at)

    return init


class _HeadOnlyMaskHead(nn.Module):
    """The mask head, run a second time in training on the RoI features detached from the backbone
    (before the normal pass); the second output waits in ``predictor.detached`` for the predictor."""

    def __init__(self, head: nn.Module, predictor: _HeadOnlyPredictor) -> None:
        super().__init__()
        self.head = head
        self.predictor = [predictor]  # a list: not a submodule (it is the model's own predictor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            # The same batch statistics as the normal pass, but with a momentum of 0 the running
            # statistics stay as they are, so they are updated once per step, as in the unchanged model.
            norms = [m for m in self.head.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.momentum = 0.0
            try:
                self.predictor[0].detached = self.head(x.detach())
            finally:
                for m, momentum in zip(norms, momenta, strict=True):
                    m.momentum = momentum
                    if m.num_batches_tracked is not None:
                        m.num_batches_tracked.sub_(1)
        return self.head(x)


class _HeadOnlyPredictor(nn.Module):
    """torchvision's MaskRCNNPredictor whose mask logits, in training, read the normal features without
    calling ``mask_fcn_logits`` (so no hook sees them), and which then calls ``mask_fcn_logits`` once on
    the features of the detached pass: the loss's tap captures those, so its gradient reaches the
    predictor's deconvolution and the mask head but stops at the RoI features. In evaluation it is the
    unchanged predictor."""

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.conv5_mask = predictor.conv5_mask
        self.relu = predictor.relu
        self.mask_fcn_logits = predictor.mask_fcn_logits
        self.detached: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu(self.conv5_mask(x))
        if not self.training:  # evaluation (and the compactness figures' tap) as in the unchanged model
            return self.mask_fcn_logits(features)
        conv = self.mask_fcn_logits  # a 1x1 convolution, applied without its hooks
        logits = F.conv2d(features, conv.weight, conv.bias)
        if self.detached is not None:
            detached, self.detached = self.detached, None
            self.mask_fcn_logits(self.relu(self.conv5_mask(detached)))  # seen by the loss's tap only
        return logits


def mask_head_only(model: nn.Module) -> None:
    """An ``init`` for +DCL runs whose loss trains the mask head only: the loss's gradient stops at the
    RoI features, so it cannot reach the RPN, the FPN or the backbone (the mask loss's still does).

    Costs one more pass of the mask head and the predictor's deconvolution per training step. The
    mask logits, hence the mask loss and inference, are those of the unchanged model."""
    roi_heads = model.roi_heads
    predictor = _HeadOnlyPredictor(roi_heads.mask_predictor)
    roi_heads.mask_head = _HeadOnlyMaskHead(roi_heads.mask_head, predictor)
    roi_heads.mask_predictor = predictor


def checkpoint_digest(path: Path) -> str:
    """The first 16 hex digits of the checkpoint file's SHA-256.

    A checkpoint regenerated on another processor can differ in its last bits (floating-point reductions
    differ between instruction sets), so runs record the digest of the file they started from, and the
    paired differences of the evidence page pair only runs that started from the same one.
    """
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_extra(spec: Pretraining, checkpoint: Path | None = None) -> dict[str, Any]:
    """What a fine-tuning run's configuration records about its starting point."""
    fields = asdict(spec)
    fields.pop("model")
    digest = {"checkpoint_sha256": checkpoint_digest(checkpoint)} if checkpoint is not None else {}
    return {"pretraining": {"key": spec.key(), **fields, **digest}, "freeze_at": FREEZE_AT}


def finetune_config(config: DemoConfig, lr: float, *, quick: bool = False) -> DemoConfig:
    """The fine-tuning schedule: ``FINETUNE_STEPS`` steps, ``FINETUNE_WARMUP`` warm-up, base rate ``lr``."""
    if quick:
        return replace(config, lr=lr)
    return replace(config, steps=FINETUNE_STEPS, warmup=FINETUNE_WARMUP, lr=lr)


# ----------------------------------------------------------------------------------------------------------
# one run


def machine() -> dict[str, Any]:
    """CPU model, core count, Python, torch and thread count of this process."""
    cpu = platform.processor() or ""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), cpu
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
    }


def box_metrics(gt: dict[str, Any], outputs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Box AP, AP50, AP75 and recall at IoU 0.5 (100 detections) of eval outputs, with pycocotools."""
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = []
    for i, out in enumerate(outputs):
        for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
            x0, y0, x1, y1 = box
            results.append(
                {"image_id": i + 1, "category_id": int(label), "score": float(score),
                 "bbox": [x0, y0, x1 - x0, y1 - y0]}
            )  # fmt: skip
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "recall50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        dt = coco.loadRes(results)
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all", 100 detections

    def mean(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else 0.0

    recall = ev.eval["recall"][0, :, 0, -1]
    return {
        "ap": mean(precision),
        "ap50": mean(precision[0]),
        "ap75": mean(precision[5]),
        "recall50": mean(recall),
    }


def run_record(
    config: DemoConfig,
    seed: int,
    variant: str,
    *,
    regime: str,
    tuning: bool,
    init: Callable[[nn.Module], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one (seed, variant) of a regime; returns the JSON record."""
    config = replace(config, seed=seed)
    if tuning:
        config = replace(config, val_split=TUNING_SPLIT, val_seed=TUNING_SEED_OFFSET + seed)
    config = config.resolved()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    train_set, val_set = datasets(config)
    info = run_one(
        config, dcl=variant == "dcl", out=None, show_progress=False, datasets_=(train_set, val_set), init=init
    )
    report = info["report"]
    outputs = info["outputs"]
    drawn = sum(int((o["scores"] >= 0.5).sum()) for o in outputs)
    return {
        "seed": seed,
        "variant": variant,
        "regime": regime,
        "weight": config.weight if variant == "dcl" else 0.0,
        "config": {**asdict(config), "regime": regime, **(extra or {})},
        "eval_split": {"split": config.val_split, "seed": config.val_seed, "images": config.val_images},
        "ap": report.ap,
        "ap50": report.ap50,
        "ap75": report.ap75,
        "delta": dict(report.delta),
        "box": box_metrics(val_set.coco_ground_truth(), outputs),
        "detections": {
            "total": sum(int(o["scores"].numel()) for o in outputs),
            "score_at_least_0.5": drawn,
            "matched": report.num_matched,
            "unmatched": report.num_unmatched,
            "ground_truth": sum(int(val_set[i][1]["labels"].numel()) for i in range(len(val_set))),
        },
        "report": report.to_dict(),
        "compactness": info["compactness"].to_dict(),
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": _cpu_seconds() - cpu,
        "torch_threads": torch.get_num_threads(),
        "final_losses": info["history"][-1] if info["history"] else {},
        "history_every": HISTORY_EVERY,
        "history": info["history"][::HISTORY_EVERY],
        "machine": machine(),
    }


# ----------------------------------------------------------------------------------------------------------
# bookkeeping


def _claim(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def run_path(folder: Path, seed: int, variant: str, weight: float) -> Path:
    """Where the run's JSON goes: ``seed<s>_<variant>.json``, +DCL of λ != 1.2 under ``weight<λ>/``."""
    if variant == "dcl" and weight != PAPER_WEIGHT:
        folder = folder / f"weight{weight:g}"
    return folder / f"seed{seed}_{variant}.json"


@dataclass
class Job:
    """One run of the study: where it goes and how to compute it (None: only wait for the file)."""

    target: Path
    label: str
    compute: Callable[[], dict[str, Any]] | None
    log: Path | None = None
    """The folder of the ``evidence.log`` this job writes to (default: the study's)."""


class Study:
    """Walks a list of jobs: skips finished ones, claims the rest with lock files, logs each result."""

    def __init__(self, log_folder: Path) -> None:
        self.log_folder = log_folder

    def say(self, message: str, folder: Path | None = None) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} {message}"
        print(line, flush=True)
        target = folder or self.log_folder
        target.mkdir(parents=True, exist_ok=True)
        with (target / "evidence.log").open("a") as handle:
            handle.write(line + "\n")

    def run(self, job: Job, *, wait: bool = False) -> dict[str, Any] | None:
        """Compute ``job`` unless it is done or claimed; with ``wait``, wait for a claimed one to finish."""
        folder = job.log or self.log_folder
        job.target.parent.mkdir(parents=True, exist_ok=True)
        lock = job.target.with_suffix(".lock")
        while True:
            if job.target.exists():
                return json.loads(job.target.read_text())
            if _claim(lock):
                break
            if not wait:
                self.say(f"{job.label}: another process holds {lock.name}, skipped", folder)
                return None
            time.sleep(10)
        try:
            if job.target.exists():
                return json.loads(job.target.read_text())
            assert job.compute is not None
            self.say(f"{job.label}: training", folder)
            record = job.compute()
            tmp = job.target.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(job.target)
            self.say(f"{job.label}: {summary(record)}", folder)
            return record
        finally:
            lock.unlink(missing_ok=True)


def summary(record: dict[str, Any]) -> str:
    d = record["delta"]
    box = record.get("box", {}).get("ap", float("nan"))
    return (
        f"AP {100 * record['ap']:.1f} AP50 {100 * record['ap50']:.1f} boxAP {100 * box:.1f} "
        f"dfFP {100 * d['fFP']:.1f} dbFP {100 * d['bFP']:.1f} dFN {100 * d['FN']:.1f} "
        f"intra {record['compactness']['intra']:.3f}; wall {record['wall_seconds']:.0f} s, "
        f"cpu {record['cpu_seconds']:.0f} s"
    )


def choose_recipe(records: dict[float, dict[str, Any]]) -> float:
    """The candidate learning rate whose tuning-split Baseline scored the highest mask AP (ties: smaller lr).

    Examples:
        >>> choose_recipe({1e-3: {"ap": 0.30}, 3e-4: {"ap": 0.32}})
        0.0003
    """
    return max(sorted(records), key=lambda lr: records[lr]["ap"])


def choose_weight(baseline: dict[str, Any], dcl: dict[float, dict[str, Any]]) -> dict[str, Any]:
    """The λ with the highest tuning-split mask AP, and whether it beat the tuning-split Baseline.

    Examples:
        >>> choose_weight({"ap": 0.3}, {0.1: {"ap": 0.29}, 1.2: {"ap": 0.25}})
        {'weight': 0.1, 'beats_baseline': False, 'ap': 0.29, 'baseline_ap': 0.3}
    """
    best = max(sorted(dcl), key=lambda w: dcl[w]["ap"])
    return {
        "weight": best,
        "beats_baseline": dcl[best]["ap"] > baseline["ap"],
        "ap": dcl[best]["ap"],
        "baseline_ap": baseline["ap"],
    }


def study_jobs(
    base: DemoConfig,
    profile: str,
    results: Path,
    cache: Path,
    *,
    seeds: tuple[int, ...] = SEEDS,
    weights: tuple[float, ...] = WEIGHTS,
    quick: bool = False,
) -> Iterator[tuple[Job, bool]]:
    """The study's jobs in order, as (job, wait): ``wait`` marks a job later jobs depend on.

    A generator, so the recipe chosen from the tuning runs is read only once they are done.
    """
    fine = results / "finetune" / profile
    tuning = fine / "tuning"
    spec = pretraining_for(base, quick=quick)
    study = Study(fine)
    checkpoint = pretrained_checkpoint(spec, cache, log=lambda m: study.say(m, fine))
    extra = run_extra(spec, checkpoint if checkpoint.exists() else None)

    def finetune_job(folder: Path, config: DemoConfig, seed: int, variant: str, *, on_tuning: bool) -> Job:
        target = run_path(folder, seed, variant, config.weight)
        label = f"finetune {'tuning ' if on_tuning else ''}seed {seed} {variant}" + (
            f" λ={config.weight:g}" if variant == "dcl" else f" lr={config.lr:g}"
        )

        def compute() -> dict[str, Any]:
            return run_record(
                config, seed, variant, regime="finetune", tuning=on_tuning,
                init=finetune_init(checkpoint, FREEZE_AT), extra=extra,
            )  # fmt: skip

        return Job(target, label, compute, log=fine)

    # 2. the recipe, on the tuning split
    candidates = {}
    for lr in RECIPE_LRS:
        config = finetune_config(base, lr, quick=quick)
        yield finetune_job(tuning / f"lr{lr:g}", config, 0, "baseline", on_tuning=True), True
        candidates[lr] = json.loads(run_path(tuning / f"lr{lr:g}", 0, "baseline", 0).read_text())
    lr = choose_recipe(candidates)
    recipe_path = tuning / "recipe.json"
    if not recipe_path.exists():
        recipe = {"lr": lr, "candidates": {f"{k:g}": v["ap"] for k, v in candidates.items()},
                  "steps": finetune_config(base, lr, quick=quick).steps, "freeze_at": FREEZE_AT,
                  "rule": "highest tuning-split mask AP of the Baseline"}  # fmt: skip
        recipe_path.write_text(json.dumps(recipe, indent=1))
    config = finetune_config(base, lr, quick=quick)
    # 3. the λ sweep on the tuning split (its Baseline is the chosen candidate's run)
    for weight in weights:
        yield finetune_job(tuning, replace(config, weight=weight), 0, "dcl", on_tuning=True), False
    # 4. the evaluation sweep, seed by seed
    for seed in seeds:
        yield finetune_job(fine, config, seed, "baseline", on_tuning=False), False
        for weight in weights:
            yield finetune_job(fine, replace(config, weight=weight), seed, "dcl", on_tuning=False), False
    # 5. the from-scratch regime on the same seeds
    scratch = results / profile
    for seed in seeds:
        for variant, weight in [("baseline", 0.0), *(("dcl", w) for w in SCRATCH_WEIGHTS)]:
            yield scratch_job(scratch, replace(base, weight=weight or base.weight), seed, variant), False


def scratch_job(
    folder: Path,
    config: DemoConfig,
    seed: int,
    variant: str,
    *,
    tuning: bool = False,
    head_only: bool = False,
) -> Job:
    """A from-scratch run; ``head_only``: +DCL whose gradient trains the mask head only
    (:func:`mask_head_only`), written under ``headonly/`` with the λ in its file name's folder rules."""
    if head_only:
        folder = folder / HEAD_ONLY
    target = run_path(folder, seed, variant, config.weight)
    label = (
        f"scratch {'tuning ' if tuning else ''}seed {seed} {variant}"
        + (f" λ={config.weight:g}" if variant == "dcl" else "")
        + (" (mask head only)" if head_only else "")
    )
    init = mask_head_only if head_only else None
    extra = {"dcl_gradient": "mask head only"} if head_only else None

    def compute() -> dict[str, Any]:
        return run_record(config, seed, variant, regime="scratch", tuning=tuning, init=init, extra=extra)

    return Job(target, label, compute, log=folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", action="store_true", help="run the whole study (both regimes), resumably")
    parser.add_argument("--regime", choices=REGIMES, default="scratch", help="without --study: the regime")
    parser.add_argument("--quick", action="store_true", help="a tiny profile for smoke tests")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds (default 0-4)")
    parser.add_argument("--tuning", action="store_true", help="without --study: evaluate on the tuning split")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument(
        "--weight", type=float, default=PAPER_WEIGHT, help=f"λ of the +DCL runs (default {PAPER_WEIGHT})"
    )
    parser.add_argument("--lr", type=float, help="finetune regime without --study: the learning rate")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="variants to run"
    )
    parser.add_argument(
        "--head-only",
        action="store_true",
        help="without --study, scratch regime, +DCL only: the loss's gradient trains the mask head only "
        "(stops at the RoI features); runs go under headonly/",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"pretrained checkpoints (default {CACHE})")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but CUDA is not available")
    torch.set_num_threads(args.threads)
    profile = "quick" if args.quick else ("cuda" if args.device.startswith("cuda") else "cpu")
    base = profile_config(profile, args.device)
    if args.study:
        study = Study(args.results / profile)
        study.say(
            f"study: profile {profile}, seeds {args.seeds}, threads {args.threads}, machine {machine()}"
        )
        for job, wait in study_jobs(base, profile, args.results, args.cache, seeds=tuple(args.seeds),
                                    quick=args.quick):  # fmt: skip
            study.run(job, wait=wait)
        study.say("study: finished")
        return 0
    if args.head_only and (args.regime != "scratch" or args.variants != ["dcl"]):
        parser.error("--head-only runs +DCL from scratch: pass --regime scratch --variants dcl")
    if args.regime == "scratch":
        folder = args.results / profile / ("tuning" if args.tuning else "")
        study = Study(folder)
        for seed in args.seeds:
            for variant in args.variants:
                config = replace(base, weight=args.weight)
                job = scratch_job(folder, config, seed, variant, tuning=args.tuning, head_only=args.head_only)
                study.run(job)
        return 0
    # one batch of fine-tuning runs, with the recorded recipe unless --lr is given
    fine = args.results / "finetune" / profile
    recipe = fine / "tuning" / "recipe.json"
    if args.lr is None and not recipe.exists():
        parser.error(f"no fine-tuning recipe yet ({recipe}); run --study first or pass --lr")
    lr = args.lr if args.lr is not None else json.loads(recipe.read_text())["lr"]
    spec = pretraining_for(base, quick=args.quick)
    checkpoint = pretrained_checkpoint(spec, args.cache)
    folder = fine / ("tuning" if args.tuning else "")
    study = Study(folder)
    for seed in args.seeds:
        for variant in args.variants:
            config = replace(finetune_config(base, lr, quick=args.quick), weight=args.weight)
            target = run_path(folder, seed, variant, config.weight)

            def compute(
                config: DemoConfig = config, seed: int = seed, variant: str = variant
            ) -> dict[str, Any]:
                return run_record(config, seed, variant, regime="finetune", tuning=args.tuning,
                                  init=finetune_init(checkpoint, FREEZE_AT),
                                  extra=run_extra(spec, checkpoint))  # fmt: skip

            study.run(Job(target, f"finetune seed {seed} {variant}", compute))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
