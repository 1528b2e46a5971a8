"""HP-MCoRe losses (spec §8).

- :func:`score_loss`: ``MSE(Δ^{qe}, s_q − s_e) + MSE(Δ^{eq}, s_e − s_q)`` (raw points, or completeness in
  DD mode: the caller passes the targets it regresses).
- :func:`transition_loss`: ``L_tas`` of §5.3, a per-channel softmax over time; channel 1 (entry) has
  target weight 2 for fidelity (``entry_weight=1`` is the clean choice, §13 item 3). Equals PyTorch
  ``CrossEntropyLoss`` with probability targets on the ``(N, T, 2)`` logits.
- :func:`stage_contrastive_loss`: the stage-wise InfoNCE of §8.3 with τ (weighted ×10 in the total).
- :func:`dive_number_loss`: CE of the HD-GCN head (computed, weight β = 0 by default).
- :func:`splash_loss`: an optional splash-aware auxiliary MSE (weight 0 = off).
- :class:`LossWeights`, :class:`LossTerms`, :func:`total_loss`: the weighted sum, every term kept for logging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hpmcore.config import ModelConfig

NUM_STAGES = 3


def _check_batch(name: str, t: torch.Tensor, n: int) -> None:
    if t.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(t.shape)}")


def score_loss(
    delta_qe: torch.Tensor, delta_eq: torch.Tensor, score_q: torch.Tensor, score_e: torch.Tensor
) -> torch.Tensor:
    """Bidirectional score loss (spec §8.1); every input ``(B,)`` → scalar."""
    b = delta_qe.shape[0]
    for name, t in (
        ("delta_qe", delta_qe),
        ("delta_eq", delta_eq),
        ("score_q", score_q),
        ("score_e", score_e),
    ):
        _check_batch(name, t, b)
    target = (score_q - score_e).to(delta_qe.dtype)
    return F.mse_loss(delta_qe, target) + F.mse_loss(delta_eq, -target)


def transition_loss(
    logits: torch.Tensor, transitions: torch.Tensor, *, entry_weight: float = 2.0
) -> torch.Tensor:
    """``L_tas`` (spec §5.3), a softmax over time per channel:

    ``(1/2N) Σ_n [−log softmax_t(P_n[:, 0])[st_n] − w·log softmax_t(P_n[:, 1])[ed_n]]``.

    Args:
        logits: ``(N, T, 2)`` segmenter output (time is the class axis).
        transitions: int ``(N, 2)`` ground truth ``(st, ed)``, first frames of stages 2 and 3.
        entry_weight: ``w``, the target value of channel 1 (2 in the reference, 1 for a clean loss).

    Returns:
        A scalar; equal to ``nn.CrossEntropyLoss()(logits, target)`` with the probability target
        ``target[n, st_n, 0] = 1``, ``target[n, ed_n, 1] = w``.
    """
    if logits.dim() != 3 or logits.shape[-1] != 2:
        raise ValueError(f"transition logits: expected (N, T, 2), got shape {tuple(logits.shape)}")
    n, t, _ = logits.shape
    if transitions.shape != (n, 2):
        raise ValueError(f"transitions: expected ({n}, 2), got shape {tuple(transitions.shape)}")
    idx = transitions.long().to(logits.device)
    if bool(((idx < 0) | (idx >= t)).any()):
        raise ValueError(f"transitions must lie in [0, {t}), got {idx.tolist()}")
    logp = F.log_softmax(logits, dim=1)  # (N, T, 2), softmax over time per channel
    picked = logp.gather(1, idx.unsqueeze(1)).squeeze(1)  # (N, 2): [log p0[st], log p1[ed]]
    weights = logits.new_tensor([1.0, entry_weight])
    return -(picked * weights).sum() / (2 * n)


def stage_descriptors(tokens: torch.Tensor, num_stages: int = NUM_STAGES) -> torch.Tensor:
    """Mean token of each stage: ``(B, K·F, D)`` → ``(B, K, D)``."""
    if tokens.dim() != 3 or tokens.shape[1] % num_stages:
        raise ValueError(f"tokens: expected (B, {num_stages}·F, D), got shape {tuple(tokens.shape)}")
    b, kf, d = tokens.shape
    return tokens.view(b, num_stages, kf // num_stages, d).mean(dim=2)


def stage_contrastive_loss(
    x: torch.Tensor, y: torch.Tensor, *, tau: float = 0.1, num_stages: int = NUM_STAGES
) -> torch.Tensor:
    """Stage-wise contrastive loss (spec §8.3), unweighted (the total multiplies it by 10).

    With stage descriptors ``x_k``, ``y_k`` (mean tokens) and cosine similarity ``c`` (norms clamped at
    1e-12): ``ℓ_k(X, Y) = −log e^{c(x_k,y_k)/τ} / (e^{c(x_k,y_k)/τ} + Σ_{j≠k} e^{c(x_k,x_j)/τ}
    + Σ_{j≠k} e^{c(x_k,y_j)/τ})``; ``L(X, Y) = mean_k ℓ_k``; per pair ``½[L(X, Y) + L(Y, X)]``, averaged
    over the batch. Over the ``2K`` descriptors of a pair this is a cross-entropy of each descriptor's
    similarities to the other ``2K − 1`` with its counterpart stage as the class.

    Shapes: ``x, y (B, K·F, D)`` → scalar.
    """
    if x.shape != y.shape:
        raise ValueError(f"contrastive loss: token shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    k = num_stages
    z = F.normalize(torch.cat([stage_descriptors(x, k), stage_descriptors(y, k)], dim=1), dim=-1, eps=1e-12)
    sim = z @ z.transpose(1, 2) / tau  # (B, 2K, 2K)
    eye = torch.eye(2 * k, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye, float("-inf"))  # a descriptor is never its own negative
    target = torch.arange(2 * k, device=sim.device).roll(k)  # x_k ↔ y_k
    b = sim.shape[0]
    return F.cross_entropy(sim.reshape(b * 2 * k, 2 * k), target.repeat(b))


def dive_number_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the HD-GCN dive-number head: ``logits (N, C)``, class ids ``(N,)`` in ``[0, C)``.

    The reference's head has 60 classes for dive ids 1..52 (§13 item 2); the caller maps ids to classes.
    """
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"dive-number loss: expected logits (N, C) and labels (N,), got shapes "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long().to(logits.device)
    if bool(((labels < 0) | (labels >= logits.shape[1])).any()):
        raise ValueError(f"dive-number labels must lie in [0, {logits.shape[1]}), got {labels.tolist()}")
    return F.cross_entropy(logits, labels)


def splash_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Splash-aware auxiliary loss: ``MSE(pred, target)``, both ``(B,)`` → scalar.

    ``target`` is the entry-stage splash size (from the synthetic generator, or FineDiving-splash masks);
    the reference never uses it (spec §13 item 21), so its weight defaults to 0.
    """
    if pred.dim() != 1 or target.shape != pred.shape:
        raise ValueError(
            f"splash loss: expected pred (B,) and target (B,), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    return F.mse_loss(pred, target.to(pred.dtype))


@dataclass(frozen=True)
class LossWeights:
    """Weights of the total loss (spec §8.5); the defaults reproduce the reference."""

    tas: float = 1.0
    """Weight of ``L_tas`` (0 when there is no segmenter)."""
    entry_weight: float = 2.0
    """Channel-1 target weight inside ``L_tas`` (2 = reference, 1 = clean; §13 item 3)."""
    contrastive: float = 10.0
    """Weight of each stage-wise contrastive term (fused and static); 0 turns it off."""
    tau: float = 0.1
    """Temperature of the contrastive loss."""
    dive_number: float = 0.0
    """β, weight of the dive-number CE (computed and logged even at 0 when labels are given)."""
    splash: float = 0.0
    """Weight of the splash auxiliary loss (0 = off)."""

    @classmethod
    def of(cls, cfg: ModelConfig) -> LossWeights:
        """The weights an HP-MCoRe config implies (no ``L_tas`` without a segmenter)."""
        return cls(
            tas=1.0 if cfg.use_segmentation else 0.0,
            entry_weight=cfg.tas_entry_weight,
            contrastive=cfg.contrastive_weight,
            tau=cfg.tau,
            dive_number=cfg.dive_number_weight,
            splash=cfg.splash_weight,
        )


@dataclass(frozen=True)
class LossTerms:
    """The total loss and each (unweighted) term; a term that was not computed is ``None``."""

    total: torch.Tensor
    aqa: torch.Tensor
    tas: torch.Tensor | None = None
    contrastive_fu: torch.Tensor | None = None
    contrastive_st: torch.Tensor | None = None
    dive_number: torch.Tensor | None = None
    splash: torch.Tensor | None = None

    def scalars(self) -> dict[str, float]:
        """Every computed term as a Python float (for logging)."""
        return {
            name: float(value.detach())
            for name, value in vars(self).items()
            if isinstance(value, torch.Tensor)
        }


def total_loss(
    *,
    delta_qe: torch.Tensor,
    delta_eq: torch.Tensor,
    score_q: torch.Tensor,
    score_e: torch.Tensor,
    weights: LossWeights,
    seg_logits: torch.Tensor | None = None,
    gt_transitions: torch.Tensor | None = None,
    fused: tuple[torch.Tensor, torch.Tensor] | None = None,
    static: tuple[torch.Tensor, torch.Tensor] | None = None,
    dn_logits: torch.Tensor | None = None,
    dn_labels: torch.Tensor | None = None,
    splash_pred: torch.Tensor | None = None,
    splash_target: torch.Tensor | None = None,
) -> LossTerms:
    """``L = L_aqa + L_tas + 10·L_con^fu + 10·L_con^st (+ β·L_dn) (+ γ·L_splash)`` (spec §8.5).

    Args:
        delta_qe, delta_eq, score_q, score_e: ``(B,)``, see :func:`score_loss`.
        weights: the term weights.
        seg_logits, gt_transitions: ``(2B, T, 2)`` and ``(2B, 2)`` for queries then exemplars; ``L_tas`` is
            skipped when either is ``None`` (the "without segmentation" ablation).
        fused, static: ``(X_q, X_e)`` token pairs ``(B, 3F, D)``; each contrastive term is skipped when its
            pair is ``None`` or ``weights.contrastive == 0``.
        dn_logits, dn_labels: ``(2B, C)`` and class ids ``(2B,)``; computed when both are given.
        splash_pred, splash_target: ``(M,)`` each; required when ``weights.splash > 0``.
    """
    aqa = score_loss(delta_qe, delta_eq, score_q, score_e)
    total = aqa
    tas = con_fu = con_st = dn = spl = None
    if seg_logits is not None and gt_transitions is not None:
        tas = transition_loss(seg_logits, gt_transitions, entry_weight=weights.entry_weight)
        total = total + weights.tas * tas
    if weights.contrastive > 0:
        if fused is not None:
            con_fu = stage_contrastive_loss(*fused, tau=weights.tau)
            total = total + weights.contrastive * con_fu
        if static is not None:
            con_st = stage_contrastive_loss(*static, tau=weights.tau)
            total = total + weights.contrastive * con_st
    if dn_logits is not None and dn_labels is not None:
        dn = dive_number_loss(dn_logits, dn_labels)
        if weights.dive_number > 0:
            total = total + weights.dive_number * dn
    elif weights.dive_number > 0:
        raise ValueError("dive_number weight > 0 needs dive-number logits and labels")
    if weights.splash > 0:
        if splash_pred is None or splash_target is None:
            raise ValueError(
                "splash weight > 0 needs splash predictions (a model with a splash head) and targets"
            )
        spl = splash_loss(splash_pred, splash_target)
        total = total + weights.splash * spl
    return LossTerms(
        total=total,
        aqa=aqa,
        tas=tas,
        contrastive_fu=con_fu,
        contrastive_st=con_st,
        dive_number=dn,
        splash=spl,
    )
