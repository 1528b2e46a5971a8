"""Skeletons of the sampled frames of each dive (the ``pose`` stage).

* :mod:`~hpmcore.extraction.pose.stage` — :func:`extract_pose`, the stage through the per-video cache;
* :mod:`~hpmcore.extraction.pose.table` — the sampled skeleton table it writes and training reads;
* :mod:`~hpmcore.extraction.pose.annotations` — the ``annotations`` backend (synthetic ground truth,
  FineDiving-Pose ``.npz``, MPII JSON);
* :mod:`~hpmcore.extraction.pose.mmpose` — the ``mmpose`` backend and the COCO→MPII mapping.
"""
