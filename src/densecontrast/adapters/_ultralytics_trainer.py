"""Ultralytics' segmentation trainer with the dense contrastive loss: options, EMA, checkpoints, resume.

Re-exported as :class:`densecontrast.adapters.ultralytics.DenseContrastSegmentationTrainer`; this
module is private.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

from torch import nn
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG

from ..loss import DEFAULT_K, DEFAULT_TAU, DenseContrastiveLoss
from ._base import DEFAULT_WEIGHT
from ._checkpoint import keep_criterion_state
from ._checks import check_choice, check_ignore_band, check_margin, check_output_size, check_weight
from .ultralytics import _FEATURES, LOSS_KEY, Features, attach, get_handle

_TRAINER_OPTIONS = ("weight", "k", "tau", "features", "output_size", "margin", "ignore_band")


def _check_trainer_options(options: Mapping[str, Any]) -> None:
    """Check the trainer's options as :func:`attach` would, before Ultralytics builds anything."""
    check_weight(options["weight"])
    check_choice("features", options["features"], _FEATURES)
    check_output_size(options["output_size"])
    check_margin(options["margin"])
    check_ignore_band(options["ignore_band"])
    k, tau = options["k"], options["tau"]
    if k is not None or tau is not None:  # the default criterion checks its own k and tau
        DenseContrastiveLoss(DEFAULT_K if k is None else k, DEFAULT_TAU if tau is None else tau)


class DenseContrastSegmentationTrainer(SegmentationTrainer):
    """Ultralytics' ``SegmentationTrainer`` with the dense contrastive loss attached to its model.

    Use it as ``YOLO("yolo11n-seg.yaml").train(data=..., trainer=DenseContrastSegmentationTrainer)``:
    ``dcl_loss`` then shows in the progress bar and in ``results.csv`` (``train/dcl_loss``; validation
    does not compute it, so ``val/dcl_loss`` reads 0). The options are class attributes; set them on a
    subclass, or get one from :meth:`with_options`:

    - ``dcl_weight`` (``DEFAULT_WEIGHT``, 0.3), ``dcl_k`` (None: 32), ``dcl_tau`` (None: 0.07),
      ``dcl_features`` (``"proto"``), ``dcl_output_size`` (28), ``dcl_margin`` (0.0),
      ``dcl_ignore_band`` (None): as in :func:`attach`.

    The model built by :meth:`get_model` gets the loss; the EMA copy that Ultralytics validates and saves
    in ``last.pt``/``best.pt`` does not (no hooks, no ``dense_contrast`` submodule), so checkpoints load
    in plain Ultralytics without densecontrast. The projection head's weights and optimizer moments are
    saved with the optimizer's state in the checkpoint, apart from the model's parameter groups (under
    the key ``"densecontrast"``), so:

    - ``YOLO("last.pt").train(resume=True, trainer=<this class or the same subclass>)`` resumes the run
      with the projection head and its moments restored;
    - ``YOLO("last.pt").train(resume=True)`` without ``trainer=`` resumes as plain Ultralytics training
      (no ``dcl_loss`` from then on; the saved projection head is left unused);
    - resuming a run trained without the loss with this trainer starts the projection head afresh and
      warns once.

    The options are checked by :meth:`with_options` and again when the trainer is built (before
    Ultralytics creates its run directory), with the errors :func:`attach` raises.

    Raises:
        TypeError: an option of the wrong type.
        ValueError: a bad option value, or ``compile=True`` (Ultralytics then calls the network and the
            loss separately, which the hooks cannot see).
    """

    dcl_weight: ClassVar[float] = DEFAULT_WEIGHT
    dcl_k: ClassVar[int | None] = None
    dcl_tau: ClassVar[float | None] = None
    dcl_features: ClassVar[Features] = "proto"
    dcl_output_size: ClassVar[int | tuple[int, int]] = 28
    dcl_margin: ClassVar[float] = 0.0
    dcl_ignore_band: ClassVar[float | None] = None

    def __init__(
        self, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: Any = None
    ) -> None:
        _check_trainer_options({name: getattr(self, f"dcl_{name}") for name in _TRAINER_OPTIONS})
        super().__init__(cfg, overrides, _callbacks)
        if self.args.compile:
            raise ValueError(
                f"compile={self.args.compile!r} is not supported with the dense contrastive loss: with it "
                "Ultralytics calls the network and the loss separately, so the loss would silently be "
                "missing. Train with compile=False"
            )

    @classmethod
    def with_options(cls, **options: Any) -> type[DenseContrastSegmentationTrainer]:
        """A subclass with other options, e.g. ``with_options(weight=2.0, margin=0.1)``.

        Keys are :func:`attach`'s keyword names (``weight``, ``k``, ``tau``, ``features``,
        ``output_size``, ``margin``, ``ignore_band``). Ultralytics' multi-GPU (DDP) launch pickles the
        trainer class by value (cloudpickle), so the options reach every worker process.
        """
        unknown = set(options) - set(_TRAINER_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown options {sorted(unknown)}; expected some of {sorted(_TRAINER_OPTIONS)}"
            )
        _check_trainer_options(
            {name: options.get(name, getattr(cls, f"dcl_{name}")) for name in _TRAINER_OPTIONS}
        )
        attrs = {f"dcl_{name}": value for name, value in options.items()}
        return cast(type[DenseContrastSegmentationTrainer], type(cls.__name__, (cls,), attrs))

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> nn.Module:
        """Ultralytics' segmentation model, with the dense contrastive loss attached."""
        model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        attach(
            model,
            weight=self.dcl_weight,
            k=self.dcl_k,
            tau=self.dcl_tau,
            features=self.dcl_features,
            output_size=self.dcl_output_size,
            margin=self.dcl_margin,
            ignore_band=self.dcl_ignore_band,
        )
        return model

    def get_validator(self) -> Any:
        """Ultralytics' validator; where the trainer names its losses here, ``dcl_loss`` is named too."""
        validator = super().get_validator()
        names = getattr(self, "loss_names", None)
        if isinstance(names, tuple) and names and LOSS_KEY not in names:
            self.loss_names = (*names, LOSS_KEY)  # older Ultralytics: fixed names, items as a tensor
        return validator

    def build_optimizer(
        self,
        model: nn.Module,
        name: str = "auto",
        lr: float = 0.001,
        momentum: float = 0.9,
        decay: float = 1e-5,
        iterations: float = 1e5,
    ) -> Any:
        """Ultralytics' optimizer, with the loss's parameters in trailing groups saved apart (see above)."""
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        handle = get_handle(cast(nn.Module, getattr(model, "module", model)))  # DDP wraps the model
        if handle is not None:
            keep_criterion_state(optimizer, handle.criterion, what=f"the checkpoint {self.args.resume}")
        return optimizer

    # Ultralytics builds its EMA as a deep copy of the model, which would carry the hooks and the loss
    # into the validated model and into every checkpoint. Whenever an EMA is set, strip them from it.
    @property
    def ema(self) -> Any:
        return self.__dict__.get("_dcl_ema")

    @ema.setter
    def ema(self, value: Any) -> None:
        copy = getattr(value, "ema", None)
        if isinstance(copy, nn.Module):
            handle = get_handle(copy)
            if handle is not None:
                handle.remove()
        self.__dict__["_dcl_ema"] = value
