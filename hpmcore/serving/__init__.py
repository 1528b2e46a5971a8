"""Serving: scoring a new video with a registered model, one job per module.

- :mod:`~hpmcore.serving.bundle`: what a model version keeps for scoring (the checkpoint, the exemplar
  pool's encodings and labels, the decode/features/pose settings it was made with, a probe), written at
  registration and read back.
- :mod:`~hpmcore.serving.score`: one video (mp4 or JPEG frame folder) → predicted score, the two stage
  boundaries and per-stage contributions, through the pipeline's decode, pose, feature and model code
  (``hpmcore score``); the JSON schema of a result.
- :mod:`~hpmcore.serving.plot`: the skeleton and the stage boundaries over key frames (``--plot``).
- :mod:`~hpmcore.serving.pyfunc`: the MLflow ``python_function`` flavour of the registered model
  (``mlflow.pyfunc.load_model``, ``mlflow models serve``); imports no MLflow itself.

Nothing is imported here.
"""
