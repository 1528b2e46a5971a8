"""HP-MCoRe model parts as plain ``nn.Module``s.

- :mod:`hpmcore.models.i3d`: the dynamic visual encoder, Kinetics I3D, 96 frames → 9 clips × 1024 (spec §2).
- :mod:`hpmcore.models.static`: the static visual encoder, RegNetY-002 → 368 per frame (spec §3).
- :mod:`hpmcore.models.gsm`: the Gate-Shift (GSM) and Temporal-Shift (TSM) modules (spec §3.3, §3.5).
- :mod:`hpmcore.models.checkpoints`: strict checkpoint loading and :class:`CheckpointError`.
"""
