"""Training and evaluation of pair models, on cached features or end to end from the decoded frames: one
module per concept and pipeline step.

- :mod:`~hpmcore.training.protocol`: :class:`PairModel`, the contract between a model and the runtime
  (what it needs per video, per-video encoding, pair heads, its own loss, named parameter groups).
- :mod:`~hpmcore.training.bank`: the feature bank — features, poses and labels of the dives, the
  feature sizes read from the features manifest, the dives left out after ``on_error: skip``.
- :mod:`~hpmcore.training.frames`: the frame bank — the decoded frames of the dives (end-to-end mode),
  the pairs' training views through a seeded DataLoader.
- :mod:`~hpmcore.training.augment`: the spec §1.2 augmentation (flip, a crop shared by the clip) and
  the pose flip.
- :mod:`~hpmcore.training.losses`: the losses of spec §8 (score, transitions, stage contrast, dive
  number, splash).
- :mod:`~hpmcore.training.metrics`: Spearman ρ, (relative) L2, tIoU and AIoU (spec §11).
- :mod:`~hpmcore.training.checkpoints`: ``last.pt`` / ``best.pt`` — written byte-identically for the
  same state, read with checks, a model rebuilt from one.
- :mod:`~hpmcore.training.train`: pairing, the lr schedule and the training loop (cached or end to end)
  with exact resume and validation-only selection.
- :mod:`~hpmcore.training.distributed`: data parallel under ``torchrun`` (gloo / NCCL): batch shards,
  sharded evaluation, rank 0 writes.
- :mod:`~hpmcore.training.evaluate`: seeded voters, per-video cached encodings, metrics; one checkpoint
  on one split of the current data (:func:`~hpmcore.training.evaluate.evaluate_checkpoint`).
- :mod:`~hpmcore.training.core_baseline`: the CoRe-style pair regressor, baseline (b).
- :mod:`~hpmcore.training.baselines`: predictors from the annotation table alone (DD only, dive-number
  mean).
- :mod:`~hpmcore.training.compare`: HP-MCoRe, its ablations and the baselines, trained and evaluated
  alike over several training seeds, with paired bootstrap intervals of Δρ (the comparison table).
- :mod:`~hpmcore.training.tune`: the search of model/train params on the validation split only
  (``hpmcore tune``; Optuna, each trial logged to MLflow).
- :mod:`~hpmcore.training.runs`: training and comparison runs from ``params.yaml`` on the pipeline's
  folders (what the ``train`` and ``compare`` stages call).

Nothing is imported here, so that :mod:`hpmcore.models` may import the leaf modules (``protocol``,
``losses``) without a cycle.
"""
