"""The contract between the training runtime and a pair model (spec §9–§10), declared once.

The trainer (:mod:`hpmcore.training.train`) and the evaluation (:mod:`hpmcore.training.evaluate`) work
with any ``nn.Module`` that satisfies :class:`PairModel`: :class:`~hpmcore.models.hpmcore.HPMCoRe` and
the CoRe-style baseline (:class:`~hpmcore.training.baselines.CoReBaseline`) do. The model says what it
needs of each video with :meth:`PairModel.input_spec` (an :class:`InputSpec`, which the feature bank
checks before anything runs), encodes videos one by one (:meth:`PairModel.encode`, cacheable per
video, §10.2), runs the pair heads on two encodings (:meth:`PairModel.forward_pair`), computes its own
training loss from a :class:`PairTargets` (:meth:`PairModel.pair_loss`) and lists its parameters in
named groups (:meth:`PairModel.parameter_groups`). Its ``config`` is a frozen dataclass: checkpoints
record it, and :func:`hpmcore.training.checkpoints.model_from_checkpoint` rebuilds the model from it.

Nothing here imports the model classes (they import this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from hpmcore.models.hpmcore import VideoInputs
    from hpmcore.training.losses import LossTerms

__all__ = ["Encoding", "InputSpec", "PairModel", "PairOutput", "PairTargets", "Role", "check_pair_model"]

Role = Literal["train", "query", "exemplar"]
"""A video's role: a training pair's member, an evaluated query, or a voter (exemplar)."""


@dataclass(frozen=True)
class InputSpec:
    """What a model needs of each video in a given role (checked by the feature bank before use)."""

    i3d_dim: int
    """Width of the I3D features ``(J, i3d_dim)``."""
    static_shape: tuple[int, int] | None = None
    """``(T, C_static)`` when static features are needed."""
    skeleton_frames: int | None = None
    """T when the pose ``(2, T, 16, 1)`` is needed."""
    transitions: bool = False
    """Ground-truth transitions are used where a dive has them (pooling, ``L_tas``); a dive without them
    is pooled with its decoded transitions and left out of ``L_tas``."""
    splash: bool = False
    """A splash size is needed (the splash-aware loss is on)."""
    dive_number_classes: int | None = None
    """Classes of a dive-number head: training gives dive-number labels when the train split's dive
    numbers fit into them."""
    dive_number_required: bool = False
    """The dive-number loss has a weight > 0: labels are required (more dive numbers than classes is an
    error)."""
    num_frames: int | None = None
    """T of the decoded frames, for a model that reads frames (end to end); ``None``: cached features."""


@dataclass(frozen=True)
class PairTargets:
    """The training targets of B (query, exemplar) pairs."""

    score_q: torch.Tensor
    """``(B,)`` regression targets of the queries (score, or completeness score / DD in DD mode)."""
    score_e: torch.Tensor
    """``(B,)`` those of the exemplars."""
    dive_number: torch.Tensor | None = None
    """``(2B,)`` dive-number class ids, queries then exemplars (with
    :attr:`InputSpec.dive_number_classes`)."""
    splash: torch.Tensor | None = None
    """``(2B,)`` splash sizes, queries then exemplars (when :attr:`InputSpec.splash`)."""


class Encoding(Protocol):
    """Per-video encodings of N videos (what :meth:`PairModel.encode` returns)."""

    @property
    def predicted(self) -> torch.Tensor | None:
        """``(N, 2)`` decoded transitions (``None`` for a model without segmentation)."""
        ...

    def __len__(self) -> int: ...

    def select(self, index: torch.Tensor) -> Any:
        """Rows ``index`` (an encoding of the same type)."""
        ...

    @staticmethod
    def cat(parts: list[Any]) -> Any:
        """The encodings of ``parts`` concatenated along the video axis."""
        ...


class PairOutput(Protocol):
    """What the pair heads give for B pairs (models add their own fields)."""

    delta_qe: torch.Tensor
    """``(B,)`` predicted ``s_q − s_e``."""
    delta_eq: torch.Tensor
    """``(B,)`` predicted ``s_e − s_q``."""


@runtime_checkable
class PairModel(Protocol):
    """A contrastive-regression model the runtime can train, checkpoint and evaluate (an ``nn.Module``)."""

    config: Any
    """A frozen dataclass of the model's configuration (recorded in checkpoints)."""
    training: bool

    def input_spec(self, role: Role) -> InputSpec:
        """What the model needs of a video in ``role``."""
        ...

    def encode(self, videos: VideoInputs, *, use_gt: bool | torch.Tensor | None = None) -> Encoding:
        """Per-video encodings of N videos; ``use_gt``: pool with the ground truth where it is known
        (``None``: in training mode)."""
        ...

    def forward_pair(self, query: Any, exemplar: Any) -> PairOutput:
        """The pair heads on B query and B exemplar encodings (row i with row i)."""
        ...

    def __call__(self, query: VideoInputs, exemplar: VideoInputs) -> PairOutput:
        """Encode both sides and run the pair heads (training: one batch of 2B videos)."""
        ...

    def pair_loss(self, out: Any, targets: PairTargets) -> LossTerms:
        """The training loss of one :meth:`__call__` output."""
        ...

    def exemplar_uses_gt(self) -> bool:
        """Whether exemplars are pooled with their ground truth now (training, or an eval option)."""
        ...

    def fit_input_norm(self, videos: VideoInputs) -> None:
        """Fit input statistics on the training videos (a no-op for a model without them)."""
        ...

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by name, every one exactly once (named optimizer groups)."""
        ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


def check_pair_model(model: object) -> PairModel:
    """``model`` itself when it has every member of :class:`PairModel`.

    Raises:
        TypeError: naming the members it lacks.
    """
    if not isinstance(model, PairModel):
        members = [
            "config",
            "training",
            "input_spec",
            "encode",
            "forward_pair",
            "pair_loss",
            "exemplar_uses_gt",
            "fit_input_norm",
            "parameter_groups",
            "state_dict",
            "load_state_dict",
        ]
        missing = [m for m in members if not hasattr(model, m)]
        raise TypeError(f"{type(model).__name__} is not a pair model: it lacks {missing}")
    return model
