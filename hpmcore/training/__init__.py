"""Training and evaluation of pair models on cached features: one module per concept and pipeline step.

- :mod:`hpmcore.training.losses`: the losses of spec §8 (score, transitions, stage contrast, dive
  number, splash).
- :mod:`hpmcore.training.metrics`: Spearman ρ, (relative) L2, tIoU and AIoU (spec §11).
- :mod:`hpmcore.training.train`: pairing, the lr schedule and the training loop with exact resume.
- :mod:`hpmcore.training.evaluate`: the feature bank, seeded voters and the metrics of one model.
- :mod:`hpmcore.training.baselines`: baselines and the comparison table.
- :mod:`hpmcore.training.runs`: train / evaluate / compare on the pipeline's folders (what the stages
  call).

Nothing is imported here, so that :mod:`hpmcore.models` may import the leaf modules without a cycle.
"""
