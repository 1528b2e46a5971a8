"""Hostile dataset files (issue 8, case 1): pickles written opcode by opcode that build numpy arrays over
their own bytes, nest a tuple 10⁶ deep or declare 3·10⁸ elements. Each goes through the real entry
points, ``hpmcore data inspect`` and the ``prepare`` stage, as a subprocess: exit status 2, a message
naming the file, nothing written, within bounded time and memory (before the fix: segfaults, heap
reads, 2.4 GB)."""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hpmcore.data.canonical import DatasetError
from hpmcore.data.safe_pickle import MAX_DEPTH, safe_load

PROJECT = Path(__file__).resolve().parents[1]
HPMCORE = Path(sys.executable).parent / "hpmcore"
AQA = "fine-grained_annotation_aqa.pkl"

# --- pickle opcodes by hand -------------------------------------------------------------------------


def glob(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    data = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def blob(data: bytes) -> bytes:
    return pickle.BINBYTES + struct.pack("<I", len(data)) + data


def num(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def tup(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + pickle.REDUCE


def dtype(code: str, state: bytes | None = None) -> bytes:
    """``numpy.dtype(code, False, True)`` then ``BUILD`` with ``state`` (default: a plain byte order)."""
    order = "|" if code[0] in "bOV" else "<"
    state = state or tup(num(3), text(order), pickle.NONE, pickle.NONE, pickle.NONE, num(-1), num(-1), num(0))
    return call(glob("numpy", "dtype"), text(code), pickle.NEWFALSE, pickle.NEWTRUE) + state + pickle.BUILD


def structured(field_dtype: bytes, offset: int) -> bytes:
    """A ``V8`` dtype whose ``BUILD`` state gives it one field ``a`` at ``offset`` (flags 0: no objects)."""
    fields = pickle.EMPTY_DICT + text("a") + tup(field_dtype, num(offset)) + pickle.SETITEM
    state = tup(num(3), text("|"), pickle.NONE, tup(text("a")), fields, num(8), num(1), num(0))
    return dtype("V8", state)


def array(shape: tuple[int, ...], dtype_ops: bytes, data: bytes, declared: tuple[int, ...] = (0,)) -> bytes:
    """``_reconstruct(ndarray, declared, b'b')`` then ``BUILD`` ``(1, shape, dtype, False, data)``."""
    new = call(
        glob("numpy.core.multiarray", "_reconstruct"),
        glob("numpy", "ndarray"),
        tup(*map(num, declared)),
        blob(b"b"),
    )
    return new + tup(num(1), tup(*map(num, shape)), dtype_ops, pickle.NEWFALSE, data) + pickle.BUILD


def annotation(value: bytes) -> bytes:
    """``{("01", 1): value}`` at protocol 3: a FineDiving aqa file with one hostile entry."""
    return (
        pickle.PROTO
        + b"\x03"
        + pickle.EMPTY_DICT
        + tup(text("01"), num(1))
        + value
        + pickle.SETITEM
        + pickle.STOP
    )


def deep_tuple_key(depth: int = 1_000_000) -> bytes:
    """``{((((1,),),)…): 1}``: hashing the key overflowed the C stack (segfault)."""
    nested = pickle.BININT1 + b"\x01" + pickle.TUPLE1 * depth
    return (
        pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + nested + pickle.BININT1 + b"\x01" + pickle.SETITEM + b"."
    )


def deep_list_through_memo(depth: int = 5_000) -> bytes:
    """Empty lists put in the memo, then each appended into the previous one while still empty: every
    append looks shallow to an opcode scan, but the lists end up nested ``depth`` deep."""
    ops = [pickle.PROTO + b"\x02"]
    for k in range(depth):
        ops.append(pickle.EMPTY_LIST + pickle.LONG_BINPUT + struct.pack("<I", k) + pickle.POP)
    for k in range(depth - 1):
        get = pickle.LONG_BINGET
        ops.append(get + struct.pack("<I", k) + get + struct.pack("<I", k + 1) + pickle.APPEND + pickle.POP)
    ops.append(pickle.LONG_BINGET + struct.pack("<I", 0) + pickle.STOP)
    return b"".join(ops)


HOSTILE = {
    # an object array whose "pointers" are the file's bytes: reading it segfaulted
    "object-array": annotation(array((4,), dtype("O8"), blob(b"A" * 32))),
    "object-array-direct": annotation(
        call(glob("numpy", "ndarray"), tup(num(4)), dtype("O8"), blob(b"A" * 32))
    ),
    # a field 1 MiB past the end of its 8-byte item: reading it read heap memory, then segfaulted
    "field-offset": annotation(array((2,), structured(dtype("f8"), 1 << 20), blob(bytes(16)))),
    # an object field in a dtype whose flags say "no objects"
    "object-field": annotation(array((1,), structured(dtype("O8"), 0), blob(b"A" * 8))),
    # 3·10⁸ elements declared by a pickle of about 200 bytes
    "size-bomb": annotation(array((300_000_000,), dtype("f8"), blob(b""), declared=(300_000_000,))),
    "size-bomb-objects": annotation(array((300_000_000,), dtype("O8"), pickle.EMPTY_LIST)),
    "short-data": annotation(array((4,), dtype("i8"), blob(bytes(16)))),
    "frombuffer-object": annotation(
        call(glob("numpy._core.numeric", "_frombuffer"), blob(b"A" * 8), dtype("O8"), tup(num(1)), text("C"))
    ),
    "memo-index": pickle.PROTO
    + b"\x02"
    + pickle.EMPTY_LIST
    + pickle.LONG_BINPUT
    + b"\xff\xff\xff\xff"
    + b".",
    "deep-tuple-key": deep_tuple_key(),
    "newobj": annotation(glob("builtins", "set") + pickle.EMPTY_TUPLE + pickle.NEWOBJ),
}
"""Name → the bytes of a hostile ``fine-grained_annotation_aqa.pkl``."""
CRITICAL = ["object-array", "field-offset", "size-bomb", "deep-tuple-key"]
"""One case of each kind that crashed or exhausted memory before: also run through ``prepare``."""


def _dataset(root: Path, annotation_bytes: bytes) -> Path:
    ann = root / "Annotations"
    ann.mkdir(parents=True)
    (ann / AQA).write_bytes(annotation_bytes)
    (ann / "train_split.pkl").write_bytes(pickle.dumps([("01", 1)], protocol=4))
    return root


_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""
"""Runs the command as its child and records its exit status and peak RSS. A child forked straight from
pytest would count pytest's own pages (the RSS high-water mark survives fork + exec); one forked from
this small interpreter counts only its own."""


def run_bounded(cmd: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str, float, float]:
    """Run ``cmd``; return (exit status, negative for a signal), its stdout+stderr, seconds and peak RSS
    in MB. Killed (with its children) after ``timeout`` seconds."""
    out, result = cwd / "output.txt", cwd / "measure.txt"
    start = time.monotonic()
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MEASURE, str(result), *cmd],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return -signal.SIGKILL, out.read_text(), time.monotonic() - start, float("nan")
    seconds = time.monotonic() - start
    status, rss_kb = result.read_text().split()
    return int(status), out.read_text(), seconds, int(rss_kb) / 1024


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_pickle_through_inspect(tmp_path: Path, case: str) -> None:
    root = _dataset(tmp_path / "FineDiving", HOSTILE[case])
    rc, output, seconds, rss = run_bounded(
        [str(HPMCORE), "data", "inspect", "--format", "finediving", str(root)], tmp_path
    )
    assert rc == 2, f"{case}: exit {rc}\n{output}"
    assert f"{root / 'Annotations' / AQA}: unsafe pickle" in output, output
    assert seconds < 60 and rss < 600, (seconds, rss)


@pytest.mark.parametrize("case", CRITICAL)
def test_hostile_pickle_through_prepare(tmp_path: Path, case: str) -> None:
    root = _dataset(tmp_path / "FineDiving", HOSTILE[case])
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  format: finediving\n  root: {root}\n")
    out = tmp_path / "prepared"
    cmd = [sys.executable, str(PROJECT / "stages" / "prepare.py"), "--params", str(params), "--out", str(out)]
    rc, output, seconds, rss = run_bounded(cmd, tmp_path)
    assert rc == 2, f"{case}: exit {rc}\n{output}"
    assert f"{root / 'Annotations' / AQA}: unsafe pickle" in output, output
    assert not out.exists()
    assert seconds < 90 and rss < 1500, (seconds, rss)


def test_nesting_built_through_the_memo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.pkl"
    path.write_bytes(deep_list_through_memo())
    with pytest.raises(
        DatasetError, match=rf"deep\.pkl: unsafe pickle, containers nested deeper than {MAX_DEPTH}"
    ):
        safe_load(path)
    shallow = tmp_path / "shallow.pkl"
    shallow.write_bytes(deep_list_through_memo(MAX_DEPTH - 1))
    loaded = safe_load(shallow)
    assert isinstance(loaded, list) and len(loaded) == 1


def test_hand_built_plain_arrays_load_as_plain_ndarrays(tmp_path: Path) -> None:
    """The checks refuse what is hostile, not what numpy writes: the same opcodes with a numeric dtype."""
    path = tmp_path / "ok.pkl"
    path.write_bytes(annotation(array((2, 2), dtype("i8"), blob(struct.pack("<4q", 1, 2, 3, 4)))))
    value = safe_load(path)[("01", 1)]
    assert type(value) is np.ndarray and value.dtype == np.int64 and value.tolist() == [[1, 2], [3, 4]]
