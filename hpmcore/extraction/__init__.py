"""Extraction: the per-video work between the dive table and the model (DVC stages ``decode``, ``pose``,
``features``), one job per module:

* :mod:`~hpmcore.extraction.cache` — the per-video cache engine every stage runs through: content keys,
  atomic entry writes, the failures table and ``on_error``, counts and timings;
* :mod:`~hpmcore.extraction.executor` — where the per-video work runs: this process or a Dask cluster;
* :mod:`~hpmcore.extraction.video` — decoding one dive (decord / JPEG frame folders);
* :mod:`~hpmcore.extraction.decode` — the ``decode`` stage: frames of every dive, and its manifest;
* :mod:`~hpmcore.extraction.pose` — the ``pose`` stage: skeletons at decode's sampled frames
  (sampled skeleton table, ``annotations`` and ``mmpose`` backends, COCO→MPII);
* :mod:`~hpmcore.extraction.features` — the ``features`` stage: I3D and RegNetY-002 features.
"""
