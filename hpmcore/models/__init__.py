"""HP-MCoRe model parts as plain ``nn.Module``s, one file per architecture piece.

- :mod:`hpmcore.models.i3d`: the dynamic visual encoder, Kinetics I3D, 96 frames → 9 clips × 1024 (spec §2).
- :mod:`hpmcore.models.static`: the static visual encoder, RegNetY-002 → 368 per frame (spec §3).
- :mod:`hpmcore.models.gsm`: the Gate-Shift (GSM) and Temporal-Shift (TSM) modules (spec §3.3, §3.5).
- :mod:`hpmcore.models.checkpoints`: strict checkpoint loading and :class:`CheckpointError`.
- :mod:`hpmcore.models.hdgcn`: the hierarchical skeletal encoder HD-GCN (spec §4).
- :mod:`hpmcore.models.segmentation`: procedure segmentation (BiGRU + FC) and transition decoding (spec §5).
- :mod:`hpmcore.models.pooling`: stage pooling to F tokens per stage (spec §6).
- :mod:`hpmcore.models.fusion`: dimension reducers and pose-guided fusion PoseAttnNet (spec §7.1–7.2).
- :mod:`hpmcore.models.decoder`: stage-wise cross-attention decoders (spec §7.3).
- :mod:`hpmcore.models.regressor`: score MLPs, learnable stage weights and the final Δ (spec §7.4–7.6).
- :mod:`hpmcore.models.hpmcore`: :class:`HPMCoRe`, the whole model on cached features (spec §7.7).
- :mod:`hpmcore.models.end_to_end`: :class:`EndToEndHPMCoRe`, the encoders and the HP-MCoRe heads trained
  together from frames (spec §9.3).
- :mod:`hpmcore.models.recompute`: activation checkpointing that keeps BatchNorm statistics exact.
"""
