"""The assembled HP-MCoRe model on cached features (spec §5–§8, §10.2).

One :class:`HPMCoRe` owns every trainable part; the frozen visual encoders are not part of it, because it
works from **cached features** per video:

- I3D clip features ``(N, J, 1024)`` (J = 9 for 96 frames),
- static per-frame RegNet features ``(N, T, 368)`` (T = 96),
- poses ``(N, 2, T, 16, 1)``.

The computation splits in two, so evaluation can cache per video (§10.2):

- :meth:`HPMCoRe.encode` — everything that depends on one video only: the segmenter and its decoded
  transitions, HD-GCN, stage pooling, the per-stage reducers and PoseAttn fusion. It returns a
  :class:`VideoEncoding` with the stage tokens ``F_fu`` and ``F_st`` ``(N, 3F, D)``. (None of these parts
  looks at the other video of a pair, so caching the fused tokens is exact; HD-GCN's BatchNorm uses
  batch statistics in training mode only, where :meth:`HPMCoRe.forward` encodes all 2B videos together as
  the reference does.)
- :meth:`HPMCoRe.forward_pair` — the pair heads: stage-wise cross-attention decoders in both directions,
  score regressors, stage weights and the λ-combination → :class:`PairOutput`.

:meth:`HPMCoRe.forward` does both for a batch of pairs. Transitions used for pooling (§5.5): in training
mode the ground truth of both videos; in eval mode the decoded ones, or the exemplar's ground truth when
``ModelConfig.exemplar_gt_at_test`` (§13 item 5).

Ablations (constructor config): ``use_skeleton=False`` (no HD-GCN, no pose term in PoseAttn),
``use_static=False`` (no static branch: Δ = Δ_fu), ``use_segmentation=False`` (fixed thirds, no
segmenter, no ``L_tas``), ``contrastive_weight=0``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from hpmcore.config import ModelConfig
from hpmcore.models.decoder import build_decoder, decode_stages
from hpmcore.models.fusion import build_pose_fusion, build_reducers
from hpmcore.models.hdgcn import NUM_JOINTS, build_hdgcn
from hpmcore.models.kinematics import NUM_ANGLE_CHANNELS, body_kinematics
from hpmcore.models.normalize import FeatureStandardizer
from hpmcore.models.pooling import seg_pool_1d
from hpmcore.models.regressor import StageWeights, build_score_mlp, combine_deltas
from hpmcore.models.segmentation import build_spot_model, decode_transitions, fixed_thirds, to_clip_index
from hpmcore.training.losses import LossTerms, LossWeights, total_loss
from hpmcore.training.protocol import InputSpec, PairTargets, Role

NUM_STAGES = 3
POSE_CHANNELS = 2


@dataclass(frozen=True)
class VideoInputs:
    """Cached features of N videos (queries or exemplars), and their ground-truth transitions if known."""

    i3d: torch.Tensor
    """``(N, J, i3d_dim)`` I3D clip features."""
    static: torch.Tensor | None = None
    """``(N, T, static_dim)`` per-frame static features (needed by the segmenter and the static branch)."""
    skeleton: torch.Tensor | None = None
    """``(N, 2, T, 16, 1)`` poses (needed with ``use_skeleton``)."""
    transitions: torch.Tensor | None = None
    """``(N, 2)`` int ground truth ``(st, ed)`` in frames (needed to pool with GT or to train ``L_tas``);
    a row ``(-1, -1)`` marks a video whose ground truth is unknown."""

    def __len__(self) -> int:
        return self.i3d.shape[0]

    def to(self, device: torch.device | str) -> VideoInputs:
        """A copy with every tensor on ``device``."""
        return VideoInputs(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    @staticmethod
    def cat(parts: list[VideoInputs]) -> VideoInputs:
        """Concatenate along the video axis (a field must be present in all parts or in none)."""
        return VideoInputs(
            **{f.name: _cat([getattr(p, f.name) for p in parts], f.name) for f in fields(VideoInputs)}
        )


@dataclass(frozen=True)
class VideoEncoding:
    """Per-video encoder outputs (spec §10.2); everything the pair heads need, cacheable per video."""

    fused: torch.Tensor
    """``(N, 3F, D)`` F_fu, fused stage tokens (tokens ``kF … kF+F−1`` are stage k)."""
    static: torch.Tensor | None
    """``(N, 3F, D)`` F_st, static-branch stage tokens; ``None`` without the static branch."""
    transitions: torch.Tensor
    """``(N, 2)`` int64 frame transitions used for pooling."""
    predicted: torch.Tensor
    """``(N, 2)`` int64 decoded transitions (fixed thirds without a segmenter)."""
    gt: torch.Tensor | None
    """``(N, 2)`` the ground truth that came with the inputs, if any (for ``L_tas`` and tIoU)."""
    seg_logits: torch.Tensor | None
    """``(N, T, 2)`` segmenter logits; ``None`` without a segmenter."""
    dn_logits: torch.Tensor | None
    """``(N, dn_classes)`` HD-GCN dive-number logits; ``None`` without the skeleton."""
    splash: torch.Tensor | None
    """``(N,)`` predicted splash size; ``None`` without a splash head."""

    def __len__(self) -> int:
        return self.fused.shape[0]

    def select(self, index: torch.Tensor | list[int] | slice) -> VideoEncoding:
        """Rows ``index`` of every field (e.g. an exemplar per pair from a cache of all train videos)."""
        return VideoEncoding(**{f.name: _index(getattr(self, f.name), index) for f in fields(self)})

    def detach(self) -> VideoEncoding:
        """A copy with every tensor detached (for caching)."""
        return VideoEncoding(
            **{f.name: None if (t := getattr(self, f.name)) is None else t.detach() for f in fields(self)}
        )

    def to(self, device: torch.device | str) -> VideoEncoding:
        """A copy with every tensor on ``device``."""
        return VideoEncoding(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    @staticmethod
    def cat(parts: list[VideoEncoding]) -> VideoEncoding:
        """Concatenate along the video axis."""
        return VideoEncoding(
            **{f.name: _cat([getattr(p, f.name) for p in parts], f.name) for f in fields(VideoEncoding)}
        )


@dataclass(frozen=True)
class PairOutput:
    """Outputs of the pair heads for B (query, exemplar) pairs; 2B-row fields hold queries, then exemplars."""

    delta_qe: torch.Tensor
    """``(B,)`` Δ^{qe}: predicted ``s_q − s_e``; the prediction is ``ŝ_q = Δ^{qe} + s_e``."""
    delta_eq: torch.Tensor
    """``(B,)`` Δ^{eq}: predicted ``s_e − s_q``."""
    delta_fu: torch.Tensor
    """``(2B,)`` fused-branch Δ_fu (rows q→e, then e→q)."""
    delta_st: torch.Tensor | None
    """``(2B,)`` static-branch Δ_st, or ``None``."""
    query: VideoEncoding
    exemplar: VideoEncoding

    @property
    def seg_logits(self) -> torch.Tensor | None:
        """``(2B, T, 2)`` segmenter logits, or ``None``."""
        return _cat([self.query.seg_logits, self.exemplar.seg_logits], "seg_logits")

    @property
    def transitions(self) -> torch.Tensor:
        """``(2B, 2)`` frame transitions used for pooling."""
        return torch.cat([self.query.transitions, self.exemplar.transitions])

    @property
    def predicted(self) -> torch.Tensor:
        """``(2B, 2)`` decoded transitions."""
        return torch.cat([self.query.predicted, self.exemplar.predicted])

    @property
    def dn_logits(self) -> torch.Tensor | None:
        """``(2B, dn_classes)`` dive-number logits, or ``None``."""
        return _cat([self.query.dn_logits, self.exemplar.dn_logits], "dn_logits")

    @property
    def splash(self) -> torch.Tensor | None:
        """``(2B,)`` predicted splash sizes, or ``None``."""
        return _cat([self.query.splash, self.exemplar.splash], "splash")

    @property
    def fused_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F_fu^q, F_fu^e)``, each ``(B, 3F, D)``: the fused contrastive pair."""
        return self.query.fused, self.exemplar.fused

    @property
    def static_tokens(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(F_st^q, F_st^e)``, or ``None`` without the static branch."""
        if self.query.static is None or self.exemplar.static is None:
            return None
        return self.query.static, self.exemplar.static


class HPMCoRe(nn.Module):
    """HP-MCoRe heads on cached features (see the module docstring).

    Parts (each ``None`` when its ablation removes it):

    - ``segmenter``: BiGRU + FC (§5), ``skeleton``: HD-GCN (§4),
    - ``reducers["i3d"]``, ``reducers["static"]``: 3 per-stage reducers each (§7.1),
    - ``fusion``: 3 PoseAttnNet (§7.2),
    - ``decoders["fu"]``, ``decoders["st"]``: cross-attention decoders (§7.3),
    - ``regressors["fu"]``, ``regressors["st"]``: MLP_score (§7.4), ``stage_weights`` (§7.5),
    - ``splash_head``: optional.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        cfg.validate()
        self.config = cfg
        d = cfg.dim
        self.input_norm = (
            nn.ModuleDict(
                {"i3d": FeatureStandardizer(cfg.i3d_dim), "static": FeatureStandardizer(cfg.static_dim)}
            )
            if cfg.input_norm
            else None
        )
        self.segmenter = (
            build_spot_model(in_dim=self.segmenter_dim(cfg), hidden=cfg.gru_hidden, dropout=cfg.gru_dropout)
            if cfg.use_segmentation
            else None
        )
        self.skeleton = (
            build_hdgcn(
                in_channels=POSE_CHANNELS,
                num_classes=cfg.dn_classes,
                reference_groups=cfg.reference_groups,
                base_channels=cfg.skeleton_channels,
            )
            if cfg.use_skeleton
            else None
        )
        self.reducers = nn.ModuleDict()
        if cfg.use_i3d:
            self.reducers["i3d"] = build_reducers(in_dim=cfg.i3d_dim, out_dim=d, extra=cfg.reducer_extra)
        if cfg.use_static:
            self.reducers["static"] = build_reducers(
                in_dim=cfg.static_dim, out_dim=d, extra=cfg.reducer_extra
            )
        self.fusion = build_pose_fusion(
            dim=d,
            heads=cfg.heads,
            pose_dim=self.skeleton_dim(cfg) if cfg.use_skeleton else None,
            mlp_ratio=cfg.mlp_ratio,
            pose_tokens=cfg.use_skeleton and cfg.pose_fusion == "tokens",
        )
        branches = ("fu", "st") if cfg.use_static else ("fu",)
        self.decoders = nn.ModuleDict(
            {
                b: build_decoder(dim=d, heads=cfg.heads, depth=cfg.decoder_depth, mlp_ratio=cfg.mlp_ratio)
                for b in branches
            }
        )
        self.regressors = nn.ModuleDict({b: build_score_mlp(dim=d) for b in branches})
        self.stage_weights = StageWeights(NUM_STAGES)
        self.skeleton_skip_bn = (
            nn.BatchNorm1d(self.skip_dim(cfg)) if cfg.use_skeleton and cfg.skeleton_skip else None
        )
        self.splash_head = nn.Linear(d, 1) if cfg.splash_head else None

    @staticmethod
    def skeleton_dim(cfg: ModelConfig) -> int:
        """Channels of the per-frame skeleton features: ``F_sk`` (2c), plus the joint coordinates with
        ``skeleton_skip`` (and the body angles with ``skeleton_kinematics``)."""
        return 2 * cfg.skeleton_channels + (HPMCoRe.skip_dim(cfg) if cfg.skeleton_skip else 0)

    @staticmethod
    def skip_dim(cfg: ModelConfig) -> int:
        """Channels of the skeleton skip: the joint coordinates, plus the body angles with
        ``skeleton_kinematics``."""
        return POSE_CHANNELS * NUM_JOINTS + (NUM_ANGLE_CHANNELS if cfg.skeleton_kinematics else 0)

    @staticmethod
    def segmenter_dim(cfg: ModelConfig) -> int:
        """Input width of the segmenter: the static features, plus the skeleton features with
        ``static+skeleton``."""
        extra = HPMCoRe.skeleton_dim(cfg) if cfg.segmenter_input == "static+skeleton" else 0
        return cfg.static_dim + extra

    # -----------------------------------------------------------------------------------------------------
    # Per-video encoding

    def _check_inputs(self, videos: VideoInputs) -> None:
        cfg = self.config
        n = len(videos)
        if videos.i3d.dim() != 3 or videos.i3d.shape[2] != cfg.i3d_dim or videos.i3d.shape[1] < 2:
            raise ValueError(
                f"i3d features: expected (N, J >= 2, {cfg.i3d_dim}), got shape {tuple(videos.i3d.shape)}"
            )
        needs_static = cfg.use_static or cfg.use_segmentation
        if needs_static:
            if videos.static is None:
                raise ValueError("static features are required (static branch or segmenter), got None")
            if videos.static.shape != (n, cfg.num_frames, cfg.static_dim):
                raise ValueError(
                    f"static features: expected ({n}, {cfg.num_frames}, {cfg.static_dim}), "
                    f"got shape {tuple(videos.static.shape)}"
                )
        if cfg.use_skeleton:
            want = (n, POSE_CHANNELS, cfg.num_frames, NUM_JOINTS, 1)
            if videos.skeleton is None or videos.skeleton.shape != want:
                got = None if videos.skeleton is None else tuple(videos.skeleton.shape)
                raise ValueError(f"skeleton: expected {want}, got {got}")
        if videos.transitions is not None and videos.transitions.shape != (n, 2):
            raise ValueError(f"transitions: expected ({n}, 2), got shape {tuple(videos.transitions.shape)}")

    def encode(self, videos: VideoInputs, *, use_gt: bool | torch.Tensor | None = None) -> VideoEncoding:
        """Run the per-video parts: segmenter, HD-GCN, stage pooling, reducers and fusion.

        Args:
            videos: cached features of N videos.
            use_gt: pool with ``videos.transitions`` (the ground truth) instead of the decoded transitions;
                a bool for all videos or a bool ``(N,)`` per video. ``None``: the ground truth in training
                mode, decoded in eval mode (spec §5.5). Ignored without a segmenter (fixed thirds). A video
                whose ground-truth row is ``(-1, -1)`` (unknown) is pooled with its decoded transitions.

        Returns:
            :class:`VideoEncoding` with ``fused``/``static`` tokens ``(N, 3F, D)``.

        Raises:
            ValueError: a tensor has the wrong shape, or ground truth is needed but absent.
        """
        self._check_inputs(videos)
        if self.input_norm is not None:
            videos = replace(
                videos,
                i3d=self.input_norm["i3d"](videos.i3d),
                static=None if videos.static is None else self.input_norm["static"](videos.static),
            )
        cfg = self.config
        if self.training and cfg.feature_dropout > 0:
            videos = replace(
                videos,
                i3d=nn.functional.dropout(videos.i3d, cfg.feature_dropout),
                static=None
                if videos.static is None
                else nn.functional.dropout(videos.static, cfg.feature_dropout),
            )
        n = len(videos)
        device = videos.i3d.device
        gt = None if videos.transitions is None else videos.transitions.long().to(device)

        sk_features = None  # (N, C_sk, T): F_sk, plus the normalised joint coordinates with skeleton_skip
        if self.skeleton is not None:
            sk = self.skeleton(videos.skeleton)
            sk_features = sk.features
            if self.skeleton_skip_bn is not None:
                if cfg.skeleton_kinematics:
                    joints = body_kinematics(videos.skeleton)  # (N, 32 + NUM_ANGLE_CHANNELS, T)
                else:
                    joints = (
                        videos.skeleton[..., 0].permute(0, 3, 1, 2).reshape(n, -1, cfg.num_frames)
                    )  # (N, 32, T)
                sk_features = torch.cat([sk_features, self.skeleton_skip_bn(joints)], dim=1)
        seg_logits = None
        if self.segmenter is not None:
            seg_in = videos.static  # (N, T, C_static)
            if cfg.segmenter_input == "static+skeleton" and sk_features is not None:
                seg_in = torch.cat([seg_in, sk_features.transpose(1, 2)], dim=-1)  # (N, T, C_static + C_sk)
            seg_logits = self.segmenter(seg_in)  # (N, T, 2)
            with torch.no_grad():
                predicted = decode_transitions(seg_logits.detach(), cfg.decode)  # (N, 2)
            use = torch.as_tensor(self.training if use_gt is None else use_gt, device=device).expand(n)
            if bool(use.any()):
                if gt is None:
                    raise ValueError(
                        "ground-truth transitions are needed for pooling (training or GT exemplars)"
                    )
                use = use & (gt >= 0).all(dim=1)  # unknown ground truth: the decoded transitions
                transitions = torch.where(use[:, None], gt, predicted)
            else:
                transitions = predicted
        else:
            predicted = fixed_thirds(n, cfg.num_frames, device=device)
            transitions = predicted

        pose_tokens, dn_logits = None, None
        if sk_features is not None:
            dn_logits = sk.dn_logits  # (N, dn_classes)
            pose_tokens = seg_pool_1d(
                sk_features.transpose(1, 2), transitions, fix_size=cfg.fix_size
            )  # (N, 3F, C_sk)

        f = cfg.fix_size
        if cfg.use_i3d:
            clip_transitions = to_clip_index(transitions, cfg.clip_stride)  # (N, 2) in clip units
            i3d_tokens = seg_pool_1d(videos.i3d, clip_transitions, fix_size=f)  # (N, 3F, C_i3d)
        fused, static = [], []
        for k in range(NUM_STAGES):
            sl = slice(k * f, (k + 1) * f)
            if cfg.use_i3d:
                reduced = self.reducers["i3d"][k](i3d_tokens[:, sl])  # (N, F, D)
            else:  # use_i3d false: the fusion block adds the embedded skeleton tokens to zeros
                reduced = videos.i3d.new_zeros(n, f, cfg.dim)
            fused.append(self.fusion[k](reduced, None if pose_tokens is None else pose_tokens[:, sl]))
        if cfg.use_static:
            static_tokens = seg_pool_1d(videos.static, transitions, fix_size=f)  # (N, 3F, C_static)
            static = [
                self.reducers["static"][k](static_tokens[:, k * f : (k + 1) * f]) for k in range(NUM_STAGES)
            ]
        fused_t = torch.cat(fused, dim=1)  # (N, 3F, D)
        splash = None
        if self.splash_head is not None:
            splash = self.splash_head(fused_t[:, (NUM_STAGES - 1) * f :].mean(dim=1))[
                :, 0
            ]  # entry stage → (N,)
        return VideoEncoding(
            fused=fused_t,
            static=torch.cat(static, dim=1) if static else None,
            transitions=transitions,
            predicted=predicted,
            gt=gt,
            seg_logits=seg_logits,
            dn_logits=dn_logits,
            splash=splash,
        )

    # -----------------------------------------------------------------------------------------------------
    # Pair heads

    def forward_pair(self, query: VideoEncoding, exemplar: VideoEncoding) -> PairOutput:
        """Pair heads on per-video encodings of B queries and B exemplars (row i pairs with row i).

        Decoders in both directions per stage, regressors, stage weights and Δ = (Δ_fu + λΔ_st)/(1+λ).
        """
        if len(query) != len(exemplar):
            raise ValueError(f"pair heads: {len(query)} queries vs {len(exemplar)} exemplars")
        b = len(query)
        scale = self.config.delta_scale
        delta_fu = scale * self.stage_weights(
            self.regressors["fu"](decode_stages(self.decoders["fu"], query.fused, exemplar.fused))
        )
        delta_st = None
        if self.config.use_static:
            if query.static is None or exemplar.static is None:
                raise ValueError("the static branch needs static tokens in both encodings")
            dec_st = decode_stages(self.decoders["st"], query.static, exemplar.static)  # (2B, 3F, D)
            delta_st = scale * self.stage_weights(self.regressors["st"](dec_st))  # (2B,)
        delta = combine_deltas(delta_fu, delta_st, self.config.lam)  # (2B,)
        return PairOutput(
            delta_qe=delta[:b],
            delta_eq=delta[b:],
            delta_fu=delta_fu,
            delta_st=delta_st,
            query=query,
            exemplar=exemplar,
        )

    def exemplar_uses_gt(self) -> bool:
        """Whether exemplars are pooled with ground truth now: in training, or at test with the option."""
        return self.training or self.config.exemplar_gt_at_test

    def forward(self, query: VideoInputs, exemplar: VideoInputs) -> PairOutput:
        """B (query, exemplar) pairs → :class:`PairOutput`; all 2B videos are encoded in one batch.

        Transitions for pooling (§5.5): ground truth for both in training mode; decoded for queries in
        eval mode, and for exemplars unless ``config.exemplar_gt_at_test``.
        """
        if len(query) != len(exemplar):
            raise ValueError(f"forward: {len(query)} queries vs {len(exemplar)} exemplars")
        b = len(query)
        use = {"query": self.training, "exemplar": self.exemplar_uses_gt()}
        for role, videos in (("query", query), ("exemplar", exemplar)):
            self._check_inputs(videos)
            if use[role] and videos.transitions is None and self.segmenter is not None:
                raise ValueError(f"{role} ground-truth transitions are needed for pooling, got None")
        # Ground truth may come with one side only (e.g. queries at eval, for tIoU): pad the other side.
        gts = [
            v.transitions if v.transitions is not None else torch.full((b, 2), -1, device=v.i3d.device)
            for v in (query, exemplar)
        ]
        both = VideoInputs.cat([replace(query, transitions=gts[0]), replace(exemplar, transitions=gts[1])])
        use_gt = torch.tensor([use["query"]] * b + [use["exemplar"]] * b, device=both.i3d.device)
        enc = self.encode(both, use_gt=use_gt)
        enc_q, enc_e = enc.select(slice(0, b)), enc.select(slice(b, 2 * b))
        if query.transitions is None:
            enc_q = replace(enc_q, gt=None)
        if exemplar.transitions is None:
            enc_e = replace(enc_e, gt=None)
        return self.forward_pair(enc_q, enc_e)

    def input_spec(self, role: Role) -> InputSpec:
        """What a video needs in ``role`` (:class:`~hpmcore.training.protocol.InputSpec`): static features
        with the static branch or the segmenter, the pose with the skeleton, ground truth (where known)
        for training with the segmenter and for exemplars with ``exemplar_gt_at_test``, splash sizes and
        dive-number labels for training with those losses."""
        cfg = self.config
        needs_static = cfg.use_static or cfg.use_segmentation
        gt = cfg.use_segmentation and (role == "train" or (role == "exemplar" and cfg.exemplar_gt_at_test))
        return InputSpec(
            i3d_dim=cfg.i3d_dim,
            static_shape=(cfg.num_frames, cfg.static_dim) if needs_static else None,
            skeleton_frames=cfg.num_frames if cfg.use_skeleton else None,
            transitions=gt,
            splash=role == "train" and cfg.splash_weight > 0,
            dive_number_classes=cfg.dn_classes if role == "train" and cfg.use_skeleton else None,
            dive_number_required=role == "train" and cfg.use_skeleton and cfg.dive_number_weight > 0,
        )

    def pair_loss(self, out: PairOutput, targets: PairTargets) -> LossTerms:
        """The total loss of spec §8 (:func:`pair_losses` with this config's weights)."""
        return pair_losses(
            out,
            score_q=targets.score_q,
            score_e=targets.score_e,
            weights=LossWeights.of(self.config),
            dn_labels=targets.dive_number,
            splash_target=targets.splash,
        )

    def fit_input_norm(self, videos: VideoInputs) -> None:
        """Set the input standardisation from the training videos (no-op without ``input_norm``).

        ``videos.i3d (N, J, C_i3d)`` and ``videos.static (N, T, C_static)``: statistics per channel over
        all videos and clips/frames.
        """
        if self.input_norm is None:
            return
        self.input_norm["i3d"].fit(videos.i3d)
        if videos.static is not None:
            self.input_norm["static"].fit(videos.static)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by part, for named optimizer groups (every parameter exactly once)."""
        groups: dict[str, list[nn.Parameter]] = {}
        for name, child in self.named_children():
            params = [p for p in child.parameters() if p.requires_grad]
            if params:
                groups[name] = params
        return groups


def pair_losses(
    out: PairOutput,
    *,
    score_q: torch.Tensor,
    score_e: torch.Tensor,
    weights: LossWeights,
    dn_labels: torch.Tensor | None = None,
    splash_target: torch.Tensor | None = None,
) -> LossTerms:
    """The total loss of spec §8 for one forward pass.

    Args:
        out: :meth:`HPMCoRe.forward` output for B pairs.
        score_q, score_e: ``(B,)`` regression targets (raw scores, or completeness in DD mode).
        weights: usually ``LossWeights.of(model.config)``.
        dn_labels: ``(2B,)`` dive-number class ids (queries, then exemplars), optional.
        splash_target: ``(2B,)`` splash sizes, needed when ``weights.splash > 0``.

    ``L_tas`` uses the inputs' ground-truth transitions (``VideoEncoding.gt``) of the videos whose ground
    truth is known (rows ``(-1, -1)`` are left out) and is skipped when none is, or without a segmenter.
    """
    gt, seg_logits = None, out.seg_logits if weights.tas > 0 else None
    if out.query.gt is not None and out.exemplar.gt is not None and seg_logits is not None:
        gt = torch.cat([out.query.gt, out.exemplar.gt])  # (2B, 2)
        known = (gt >= 0).all(dim=1)
        if not bool(known.all()):
            gt, seg_logits = (gt[known], seg_logits[known]) if bool(known.any()) else (None, None)
    return total_loss(
        delta_qe=out.delta_qe,
        delta_eq=out.delta_eq,
        score_q=score_q,
        score_e=score_e,
        weights=weights,
        seg_logits=seg_logits,
        gt_transitions=gt,
        fused=out.fused_tokens,
        static=out.static_tokens,
        dn_logits=out.dn_logits,
        dn_labels=dn_labels,
        splash_pred=out.splash,
        splash_target=splash_target,
    )


def build_hpmcore(config: ModelConfig | None = None, *, seed: int = 0) -> HPMCoRe:
    """Build :class:`HPMCoRe` with a seeded initialisation (the global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HPMCoRe(config)


# ---------------------------------------------------------------------------------------------------------
# Small helpers for optional tensor fields


def _to(t: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def select_rows(t: torch.Tensor, index: torch.Tensor | list[int] | slice) -> torch.Tensor:
    """Rows ``index`` of ``t`` (``(N, ...)`` → ``(len(index), ...)``), repeats allowed.

    Not ``t[index]`` for an index tensor: on CPU, the backward of advanced indexing adds the gradients of
    repeated rows from several threads at once, in an order that depends on thread timing (PyTorch lists
    it among its nondeterministic operations), so two runs of one training step differed in the last
    bits; ``index_select``'s backward (``index_add_``) adds them in index order."""
    if isinstance(index, slice):
        return t[index]
    if isinstance(index, list):
        index = torch.tensor(index, dtype=torch.long, device=t.device)
    return t.index_select(0, index)


def _index(t: torch.Tensor | None, index: torch.Tensor | list[int] | slice) -> torch.Tensor | None:
    return None if t is None else select_rows(t, index)


def _cat(parts: list[torch.Tensor | None], name: str) -> torch.Tensor | None:
    present = [p is not None for p in parts]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"cannot concatenate {name}: present in some parts only")
    return torch.cat(parts)  # type: ignore[arg-type]
