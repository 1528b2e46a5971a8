"""Unpickling of dataset files from strangers, restricted to plain data.

FineDiving and MTL-AQA ship their annotations as pickles. A pickle is a program: it can name any
importable callable and call it, build numpy arrays over bytes of its own choosing, nest containers
until the interpreter's C stack overflows, or declare arrays far larger than the file. :func:`safe_load`
reads one in two passes, so that nothing from the file runs and nothing is allocated that the file does
not hold:

1. **Scan** (:func:`scan`, before anything is built): every opcode is decoded with :mod:`pickletools`
   and its effect on the unpickler's stack is simulated. Refused: opcodes the formats never need
   (persistent ids, ``INST``/``OBJ``/``NEWOBJ`` instance creation, the extension registry, out-of-band
   buffers), containers nested deeper than :data:`MAX_DEPTH` (a tuple nested 10⁶ deep used as a dict
   key crashed the interpreter while hashing it) and memo indices beyond the file's size.
2. **Load** with an unpickler whose ``find_class`` resolves only the globals of :data:`ALLOWED_GLOBALS`,
   none of them numpy's own constructors:

   * ``numpy.dtype`` → :class:`_PickledDType`, which accepts only the plain numeric and boolean type
     codes of :data:`ALLOWED_DTYPES` and fixed-width strings (no object, structured or sub-array
     dtypes) and whose
     ``BUILD`` state may only set the byte order;
   * ``numpy.core.multiarray._reconstruct`` (protocols 0–4) → an empty :class:`_LoadingArray` that
     allocates nothing; its ``BUILD`` state (shape, dtype, order, raw bytes) is checked — the dtype
     one of the above, every dimension at most the file's size, the raw bytes
     exactly ``prod(shape) · itemsize`` long — before numpy sees it;
   * ``numpy.core.numeric._frombuffer`` (protocol 5, in-band) and ``numpy.core.multiarray.scalar`` →
     the same checks, then a copy of the pickled bytes;
   * ``numpy.ndarray`` → a marker that can only be passed to ``_reconstruct`` (calling it is refused);
   * ``set``/``frozenset`` (protocols 0–2 pickle them as a call of the type) under ``builtins`` and
     Python 2's ``__builtin__``, and ``_codecs.encode`` and ``bytes`` (Python 3 ``bytes`` at protocols
     0–2), replaced by wrappers that only do what pickle itself emits: a latin-1 encoding, ``bytes()``.

   All of them under both ``numpy.core`` (numpy 1.x writers) and ``numpy._core`` (numpy 2.x).
3. **Finish** (:func:`_plain`): the loaded graph is walked without recursion; arrays become plain
   ``ndarray`` objects, and its real nesting depth is checked again.

``copyreg._reconstructor`` is deliberately *not* allowed: builtin containers never need it, and it calls
``base.__new__``/``base.__init__`` on whatever classes the file names. Everything else (``os.system``,
``builtins.eval``, ``subprocess.*``, …) is refused *before* it is resolved.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np

from hpmcore.data.canonical import DatasetError

MAX_DEPTH = 64
"""Deepest container nesting accepted (annotation files nest about 8 levels, counting numpy's own)."""
MAX_NDIM = 32
"""Most dimensions of a pickled array."""
ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"b1", "?"} | {f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8)} | {"f2", "f4", "f8"}
)
"""Numeric type codes (``np.dtype(...).str`` without the byte order) a pickled dtype may have: booleans,
integers and floats. Fixed-width strings (``U<n>``, ``S<n>``: plain bytes, no pointers) are allowed too,
for numpy string scalars such as a dive number written by numpy-based tools."""

_ALLOWED_OPCODES = frozenset(
    {
        "PROTO",
        "FRAME",
        "STOP",
        "MARK",
        "POP",
        "POP_MARK",
        "DUP",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "FLOAT",
        "BINFLOAT",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "EMPTY_LIST",
        "EMPTY_DICT",
        "EMPTY_TUPLE",
        "EMPTY_SET",
        "LIST",
        "DICT",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "FROZENSET",
        "APPEND",
        "APPENDS",
        "SETITEM",
        "SETITEMS",
        "ADDITEMS",
        "GLOBAL",
        "STACK_GLOBAL",
        "REDUCE",
        "BUILD",
        "PUT",
        "BINPUT",
        "LONG_BINPUT",
        "MEMOIZE",
        "GET",
        "BINGET",
        "LONG_BINGET",
    }
)
"""What pickles of builtin containers, numbers, strings and numpy arrays use (protocols 0–5)."""
_IN_PLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
"""Opcodes that add to the object below them instead of making a new one."""


class RefusedPickleError(pickle.UnpicklingError):
    """The pickle asks for something outside what plain data needs (the message says what)."""


# --------------------------------------------------------------------------------------------------
# Pass 1: the opcode scan.


def _stack_effects() -> dict[str, tuple[int, int, int]]:
    """Per allowed opcode: (items taken from below its MARK or -1 without one, items taken, items made)."""
    effects = {}
    for op in pickletools.opcodes:
        if op.name in _ALLOWED_OPCODES:
            before = op.stack_before
            below = before.index(pickletools.markobject) if pickletools.markobject in before else -1
            effects[op.name] = (below, len(before), len(op.stack_after))
    return effects


_EFFECTS = _stack_effects()


def scan(data: bytes, max_depth: int = MAX_DEPTH) -> int:
    """Check a pickle's opcodes without building anything; return its container nesting depth.

    Each stack item carries a depth cell: 0 for an atom, 1 + the deepest part for a container (or a
    call's result); opcodes that add to a container raise its cell in place, and the memo shares cells,
    so a container fetched from the memo keeps its depth.

    Raises:
        RefusedPickleError: an opcode outside :data:`_ALLOWED_OPCODES`, nesting deeper than
            ``max_depth``, or a memo index larger than the pickle.
        ValueError: malformed opcodes or stack (truncated data, stack underflow, unknown memo key).
    """
    stack: list[list[int]] = []  # a depth cell per item
    marks: list[int] = []  # stack lengths at each open MARK
    memo: dict[int, list[int]] = {}
    deepest = 0

    def pop(count: int) -> list[list[int]]:
        if count > len(stack) - (marks[-1] if marks else 0):
            raise ValueError("pickle: stack underflow")
        items = stack[len(stack) - count :]
        del stack[len(stack) - count :]
        return items

    def pop_to_mark() -> list[list[int]]:
        if not marks:
            raise ValueError("pickle: MARK missing")
        items = stack[marks[-1] :]
        del stack[marks.pop() :]
        return items

    for opcode, arg, pos in pickletools.genops(data):
        name = opcode.name
        effect = _EFFECTS.get(name)
        if effect is None:
            raise RefusedPickleError(f"refused opcode {name} at byte {pos}")
        below, taken, made = effect
        if taken == 0 and below < 0:
            if name == "MARK":
                marks.append(len(stack))
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise ValueError(f"pickle: memo key {arg} at byte {pos} was never stored")
                stack.append(memo[arg])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not 0 <= arg <= len(data):
                    raise RefusedPickleError(f"memo index {arg} at byte {pos} is beyond the pickle's size")
                memo[arg] = pop(1)[0]
                stack.append(memo[arg])
            else:  # an atom (or PROTO, FRAME: made = 0)
                stack.extend([0] for _ in range(made))
            continue
        match name:
            case "STOP":
                pop(1)
                continue
            case "POP":
                (pop(1) if len(stack) > (marks[-1] if marks else 0) else pop_to_mark())
                continue
            case "DUP":
                stack.append(pop(1)[0])
                stack.append(stack[-1])
                continue
            case "MEMOIZE":
                stack.append(pop(1)[0])
                memo[len(memo)] = stack[-1]
                continue
        if below >= 0:  # [objects below the mark] MARK [slice]
            top = pop_to_mark()
            parts = pop(below) + top
        else:
            parts = pop(taken)
        if name in _IN_PLACE:
            container, added = parts[0], parts[1:]
            container[0] = max([container[0]] + [cell[0] + 1 for cell in added])
            cells = [container]
        else:
            depth = 1 + max((cell[0] for cell in parts), default=-1)
            cells = [[depth] for _ in range(made)]
        for cell in cells:
            if cell[0] > max_depth:
                raise RefusedPickleError(f"containers nested deeper than {max_depth} levels at byte {pos}")
            deepest = max(deepest, cell[0])
        stack.extend(cells)
    return deepest


# --------------------------------------------------------------------------------------------------
# Pass 2: the restricted unpickler and its numpy stand-ins.


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The only use pickle makes of ``_codecs.encode``: ``encode(text, "latin1")`` → bytes."""
    if not isinstance(obj, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise RefusedPickleError(f"_codecs.encode called with encoding {encoding!r}; only latin1")
    return obj.encode("latin1", errors)


def _empty_bytes(*args: Any) -> bytes:
    """The only use pickle makes of ``bytes`` as a global (protocols 0–2): ``bytes()`` → ``b""``."""
    if args:
        raise RefusedPickleError("bytes called with arguments; pickle only writes bytes()")
    return b""


class _PickledDType:
    """What ``numpy.dtype(code, align, copy)`` gives inside a pickle: a checked numeric type code whose
    ``BUILD`` state may only set the byte order; :attr:`numpy` is the real dtype."""

    __hash__ = None  # type: ignore[assignment]  # a dict key or set member would escape _plain

    def __init__(self, code: Any, align: Any = False, copy: Any = False) -> None:
        if isinstance(code, bytes):
            code = code.decode("latin1")
        if not isinstance(code, str) or not (
            code.lstrip("<>|=") in ALLOWED_DTYPES or re.fullmatch(r"[<>|=]?[US]\d{1,7}", code)
        ):
            raise RefusedPickleError(
                f"refused dtype {code!r}: only {sorted(ALLOWED_DTYPES)} and fixed-width strings U<n>/S<n>"
            )
        self.numpy = np.dtype(code)

    def __setstate__(self, state: Any) -> None:
        """numpy's dtype state: ``(version, byteorder, subarray, names, fields, elsize, alignment,
        flags[, metadata])``; anything but a plain byte order is refused."""
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise RefusedPickleError(f"refused dtype state {state!r:.200}")
        order, subarray, names, fields = state[1:5]
        if order not in ("<", ">", "|", "=") or (subarray, names, fields) != (None, None, None):
            raise RefusedPickleError(f"refused dtype state {state!r:.200}: only a plain byte order")
        if len(state) == 9 and state[8] is not None:
            raise RefusedPickleError("refused dtype metadata")
        if order in "<>":
            self.numpy = self.numpy.newbyteorder(order)


class _NDArrayMarker:
    """Stands for ``numpy.ndarray`` in a pickle: only ``_reconstruct`` may receive it."""

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RefusedPickleError("numpy.ndarray called directly; arrays are rebuilt through _reconstruct")


_NDARRAY = _NDArrayMarker()


class _LoadingArray(np.ndarray):
    """What ``_reconstruct`` gives: an empty array whose ``__setstate__`` checks the pickled state
    (shape, dtype, order, bytes) before numpy's sees it. :func:`_plain` replaces it by a plain view."""

    _limit: int = 0
    _built: bool = False

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise RefusedPickleError(f"refused array state {state!r:.200}")
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        if not isinstance(fortran, bool | int) or version not in (0, 1):
            raise RefusedPickleError(f"refused array state {state!r:.200}")
        real = _checked_dtype(dtype)
        raw = _checked_buffer(raw, _checked_shape(shape, self._limit), real)
        super().__setstate__((1, tuple(int(n) for n in shape), real, bool(fortran), raw))
        self._built = True


def _checked_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, _PickledDType):
        raise RefusedPickleError(f"refused array dtype {dtype!r:.100}: not a pickled numeric dtype")
    return dtype.numpy


def _checked_shape(shape: Any, limit: int) -> int:
    """The element count of a pickled shape; every dimension at most ``limit`` (the file's size)."""
    if (
        not isinstance(shape, tuple)
        or len(shape) > MAX_NDIM
        or any(isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= limit for n in shape)
    ):
        raise RefusedPickleError(f"refused array shape {shape!r:.200} (dimensions 0..{limit}, ≤ {MAX_NDIM})")
    return math.prod(shape)


def _checked_buffer(raw: Any, count: int, dtype: np.dtype) -> bytes:
    """The pickled bytes of ``count`` elements; their length must be exactly ``count · itemsize``."""
    if isinstance(raw, str):  # a Python 2 str read with encoding="latin1"
        raw = raw.encode("latin1")
    if isinstance(raw, pickle.PickleBuffer):
        raw = raw.raw().tobytes()
    if not isinstance(raw, bytes | bytearray):
        raise RefusedPickleError(f"refused array data of type {type(raw).__name__}")
    if len(raw) != count * dtype.itemsize:
        raise RefusedPickleError(
            f"array data is {len(raw)} bytes, but its shape and dtype {dtype} declare "
            f"{count * dtype.itemsize}"
        )
    return bytes(raw)


def _scalar(dtype: Any, raw: Any = None) -> np.generic:
    """``numpy.core.multiarray.scalar(dtype, bytes)`` for numeric dtypes."""
    real = _checked_dtype(dtype)
    return np.frombuffer(_checked_buffer(raw, 1, real), dtype=real)[0].copy()


class _Loader(pickle.Unpickler):
    """The restricted unpickler: :data:`ALLOWED_GLOBALS`, arrays bounded by ``limit`` per dimension."""

    def __init__(self, data: bytes, encoding: str) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        limit = len(data)

        def reconstruct(cls: Any, shape: Any = (0,), dtype: Any = b"b") -> _LoadingArray:
            if cls is not _NDARRAY:
                raise RefusedPickleError(f"refused _reconstruct of {cls!r:.100}")
            array = np.ndarray.__new__(_LoadingArray, (0,), np.uint8)  # nothing allocated yet
            array._limit = limit
            return array

        def frombuffer(raw: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
            real = _checked_dtype(dtype)
            if order not in ("C", "F"):
                raise RefusedPickleError(f"refused array order {order!r:.20}")
            count = _checked_shape(shape, limit)
            return np.frombuffer(_checked_buffer(raw, count, real), dtype=real).reshape(shape, order=order)

        self._globals = {**ALLOWED_GLOBALS}
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self._globals[(module, "_reconstruct")] = reconstruct
        for module in ("numpy.core.numeric", "numpy._core.numeric"):
            self._globals[(module, "_frombuffer")] = frombuffer

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise RefusedPickleError(f"refused global {module}.{name}") from None


_PLAIN_LEAVES = (str, bytes, bytearray, int, float, complex, type(None), np.generic, np.ndarray, np.dtype)
"""Values :func:`_plain` keeps as they are (arrays here come from ``_frombuffer``, already checked)."""


def _plain(root: Any, max_depth: int = MAX_DEPTH) -> Any:
    """The loaded object with plain numpy objects, its nesting checked on the objects themselves.

    Walks the object graph without recursion (shared objects once, cycles cut): each
    ``_LoadingArray`` becomes a plain ``ndarray`` view, each pickled dtype a ``numpy.dtype`` (tuples
    holding them are rebuilt); the height of the graph must stay within ``max_depth`` (the scan bounds
    what is built from the opcodes, but containers filled after being nested escape its count).

    Raises:
        RefusedPickleError: an array without state, a global used as a value, or deeper nesting.
    """
    out: dict[int, Any] = {}  # id → replacement (or the object itself once done)
    height: dict[int, int] = {}
    active: set[int] = set()
    work: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while work:
        obj, depth, done = work.pop()
        key = id(obj)
        if done:
            active.discard(key)
            children = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else list(obj)
            height[key] = 1 + max((height.get(id(c), 0) for c in children), default=0)
            if height[key] > max_depth:
                raise RefusedPickleError(f"containers nested deeper than {max_depth} levels")
            if isinstance(obj, list):
                obj[:] = [out.get(id(c), c) for c in obj]
            elif isinstance(obj, dict):
                for k, v in obj.items():
                    obj[k] = out.get(id(v), v)
            elif isinstance(obj, tuple):
                obj = tuple(out.get(id(c), c) for c in obj)
            out[key] = obj
            continue
        if key in out or key in active:
            continue
        if isinstance(obj, _LoadingArray):
            if not obj._built:
                raise RefusedPickleError("numpy array without its state (BUILD)")
            out[key] = obj.view(np.ndarray)
        elif isinstance(obj, _PickledDType):
            out[key] = obj.numpy
        elif isinstance(obj, list | tuple | dict | set | frozenset):
            if depth > max_depth:
                raise RefusedPickleError(f"containers nested deeper than {max_depth} levels")
            active.add(key)
            work.append((obj, depth, True))
            children = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
            work.extend((child, depth + 1, False) for child in children)
        elif not isinstance(obj, _PLAIN_LEAVES):
            raise RefusedPickleError(f"refused value of type {type(obj).__name__} (a global used as data)")
    return out.get(id(root), root)


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PickledDType,
    ("_codecs", "encode"): _latin1_encode,
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{
        (module, name): obj
        for module in ("builtins", "__builtin__")
        for name, obj in (("set", set), ("frozenset", frozenset), ("bytes", _empty_bytes))
    },
}
"""``(module, name)`` as written in the pickle → what it resolves to (``_reconstruct`` and
``_frombuffer`` are added per load, bounded by the file's size)."""


def safe_load(path: Path, *, encoding: str = "ASCII") -> Any:
    """Load a pickle that may only contain builtin containers, numbers, strings and numeric numpy data.

    Args:
        path: the pickle file.
        encoding: how Python 2 ``str`` objects are decoded (``"latin1"`` for Python 2 pickles that
            hold numpy arrays, as MTL-AQA's).

    Returns:
        The object: builtin containers, numbers, strings, plain numpy arrays, dtypes and scalars.

    Raises:
        DatasetError: ``"<path>: …"`` if the file is missing or unreadable, truncated or corrupt, or asks
            for anything outside plain data (the message says what: a global, an opcode, a dtype, an
            array whose bytes do not match its shape, nesting deeper than :data:`MAX_DEPTH`).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    try:
        scan(data)
        return _plain(_Loader(data, encoding).load())
    except RefusedPickleError as exc:
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
