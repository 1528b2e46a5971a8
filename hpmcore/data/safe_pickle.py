"""Unpickling of dataset files from strangers, restricted to plain data.

FineDiving and MTL-AQA ship their annotations as pickles. A pickle can name any importable callable
and call it while loading, so :func:`safe_load` uses an unpickler whose ``find_class`` resolves only
the handful of globals that builtin containers and numpy arrays/scalars need:

* ``numpy.ndarray``, ``numpy.dtype`` and numpy's ``_reconstruct``/``scalar`` (protocols 0–4) and
  ``_frombuffer`` (protocol 5), under both ``numpy.core`` (numpy 1.x writers) and ``numpy._core``
  (numpy 2.x writers) module names;
* ``set`` and ``frozenset`` (protocols 0–2 pickle them as a call of the type), under ``builtins`` and
  Python 2's ``__builtin__``;
* ``_codecs.encode``, which Python 3 uses to pickle ``bytes`` at protocols 0–2 — replaced by a
  wrapper that only performs the latin-1 encoding that pickle itself emits.

``copyreg._reconstructor`` is deliberately *not* allowed: builtin containers never need it (it
rebuilds instances of user classes at protocols 0–1), and it calls ``base.__new__``/``base.__init__``
on whatever classes the file names. Everything else (``os.system``, ``builtins.eval``,
``subprocess.*``, …) is refused *before* it is resolved, so nothing from the file runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

from hpmcore.data.canonical import DatasetError


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The only use pickle makes of ``_codecs.encode``: ``encode(text, "latin1")`` → bytes."""
    if not isinstance(obj, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode called with encoding {encoding!r}; only latin1")
    return obj.encode("latin1", errors)


_NUMPY_GLOBALS: dict[str, Any] = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    **{
        (module, name): obj
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name, obj in _NUMPY_GLOBALS.items()
    },
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    **{
        (module, name): obj
        for module in ("builtins", "__builtin__")
        for name, obj in (("set", set), ("frozenset", frozenset))
    },
}
"""``(module, name)`` as written in the pickle → the object it is resolved to."""


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobalError(f"refused global {module}.{name}") from None


def safe_load(path: Path, *, encoding: str = "ASCII") -> Any:
    """Load a pickle that may only contain builtin containers, numbers, strings and numpy data.

    Args:
        path: the pickle file.
        encoding: how Python 2 ``str`` objects are decoded (``"latin1"`` for Python 2 pickles that
            hold numpy arrays, as MTL-AQA's).

    Raises:
        DatasetError: ``"<path>: …"`` if the file is missing or unreadable, truncated or corrupt, or
            names a global other than the allowed ones (the message names the refused global).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except RefusedGlobalError as exc:
        raise DatasetError(f"{path}: unsafe pickle, {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        LookupError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as exc:
        reason = str(exc) or type(exc).__name__
        raise DatasetError(f"{path}: not a readable pickle ({type(exc).__name__}: {reason})") from exc
