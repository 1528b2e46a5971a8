"""The per-video extraction cache shared by the extraction stages (``decode``, ``pose``, ``features``).

**The cache engine** (:func:`run_cached`). An extraction stage turns every dive into one *entry*
(tensors plus string metadata) stored as ``<cache dir>/<key><suffix>``, where ``key`` is the SHA-256
of everything the entry is a function of (:func:`digest`): the content hash of its inputs, the stage's
params, the encoder weights' hash, the versions of the libraries computing it and the stage's **cache
version**, an integer constant next to the stage's code
(:data:`hpmcore.extraction.decode.DECODE_CACHE_VERSION`, …). So:

* a rerun recomputes only the dives whose key has no entry yet — adding 5 videos computes 5, editing
  one recomputes that one; a touched (same content) video is not recomputed;
* entries are content-addressed, so they stay valid when the dataset root moves or dives are renamed;
* keys no longer wanted (a video edited or removed, a param changed) are deleted at the end of a
  successful run ("stale"), as are temp files left by a killed run;
* an entry is written to a temp name in the cache dir and renamed (:func:`hpmcore.io.atomic_path`),
  so an entry that exists is complete; a reused entry's header is checked (it parses, its key
  matches) and an unreadable one is recomputed with a warning;
* the stage logs exactly one line ``<stage>: computed N, reused M (failed F, removed R stale)``.

**Cache versions.** The code is not part of a key (its location and comments do not change what it
computes, and moving it must not invalidate every entry). Whoever changes what a stage computes for
the same inputs and params (its numbers, its metadata, its tensor layout) bumps that stage's cache
version in the same commit; every entry of the stage is then recomputed on the next run. DVC reruns
the stage after any change to its code (the code files are its deps), and with an unchanged version
it reuses every entry.

The cache folder is a DVC output with ``persist: true`` (``dvc.yaml``): DVC then does not delete it
before rerunning the stage, which is what makes the stage incremental, while it still records the
folder's hash in ``dvc.lock`` (so downstream stages rerun when it changes) and caches it.

**Failures.** A dive whose input cannot be processed (``ItemError``, e.g. a corrupt, truncated or
too-short video) is either recorded in the failures table (:data:`FAILURE_SCHEMA`: stage, id,
source, key, reason) and left out of the manifest, so later stages never see it (``on_error:
skip``), or stops the stage at once with :class:`ExtractionFailed` naming the file and the reason
(``on_error: fail``). Nothing is ever replaced by zeros. Failures are not cached: a rerun tries again.

**Entry format.** A `safetensors <https://github.com/huggingface/safetensors>`_ file
(``.safetensors``): a JSON header with the tensors' dtypes, shapes and offsets plus a string
``__metadata__`` dict (always holding ``key``), then the raw little-endian data. Optionally wrapped
in one standard zstd frame (``.safetensors.zst``, readable with ``zstd -d``), as the decode stage
does: the synthetic dataset's decoded frames compress about 12x.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from tqdm import tqdm

from hpmcore.extraction.executor import ComputeTask, Executor, LocalExecutor
from hpmcore.io import atomic_path, read_parquet, write_json, write_parquet

__all__ = [
    "CACHE_DIR",
    "FAILURES",
    "FAILURE_SCHEMA",
    "MANIFEST",
    "STATS",
    "SUFFIX",
    "TIMINGS",
    "ZSTD_SUFFIX",
    "CacheRun",
    "Compute",
    "Entry",
    "Extraction",
    "ExtractionFailed",
    "Failure",
    "Item",
    "ItemError",
    "ManifestError",
    "NotRegularFile",
    "Outcome",
    "digest",
    "entry_path",
    "failures_table",
    "load_entry",
    "per_item",
    "read_entry_meta",
    "read_manifest",
    "resolve_source",
    "run_cached",
    "save_entry",
    "sha256_file",
    "source_hash",
]

log = logging.getLogger(__name__)

OnError = Literal["skip", "fail"]

# The files of an extraction stage's output folder (``--out``); dvc.yaml lists the same names.
CACHE_DIR = "cache"
"""Sub-folder of the per-video entries (the ``persist: true`` DVC output)."""
MANIFEST = "manifest.parquet"
"""One row per successfully extracted dive, in dive-table order."""
FAILURES = "failures.parquet"
"""One row per dive that failed (:data:`FAILURE_SCHEMA`); empty when none did."""
STATS = "stats.json"
"""Counts of the run: videos, computed, reused, failed, removed (a git-tracked DVC metric: it holds no
timings, so a rerun that changes nothing leaves it as it was)."""
TIMINGS = "timings.json"
"""Timings and throughput of the run (seconds, videos/s, …, the executor): not a DVC output and
git-ignored (it differs on every run); the flow logs it to MLflow with the stage's metrics."""

SUFFIX = ".safetensors"
ZSTD_SUFFIX = ".safetensors.zst"

FAILURE_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
    ]
)
"""Failures table: the stage, the dive id, its source (as the stage's input names it), the cache key
(null when the input could not even be hashed) and the reason (the error message, naming the file)."""


# --------------------------------------------------------------------------------------------------
# Hashing.


class NotRegularFile(OSError):
    """A path that is neither a regular file nor a folder (a device, FIFO or socket): reading it could
    block forever (a FIFO) or never end (``/dev/zero``), so it is refused before it is opened."""


def sha256_file(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes.

    Raises:
        NotRegularFile: ``path`` (after symlinks) is a device, FIFO or socket (checked before opening).
        OSError: it cannot be read.
    """
    kind = _kind(os.stat(path).st_mode)
    if kind != "regular file":
        raise NotRegularFile(f"{path}: not a regular file but a {kind}")
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def resolve_source(root: Path, video_path: str, *, allow_outside_root: bool = False) -> Path:
    """``root / video_path``, refused when it leaves the dataset root.

    ``video_path`` must be relative and, with every symlink and ``..`` resolved, lie inside ``root``
    (which may itself be a symlink): a path outside it would be read from anywhere on the machine, and
    it is not a DVC dependency of the stage. ``allow_outside_root`` (``decode.allow_outside_root``)
    allows it knowingly.

    Raises:
        ItemError: an empty, absolute or escaping ``video_path`` (the message names it and the root).
    """
    root = Path(root)
    if not video_path or "\0" in video_path:
        raise ItemError(f"{root}: video_path {video_path!r} is not a path")
    path = root / video_path
    if allow_outside_root:
        return path
    hint = "set decode.allow_outside_root: true to read it anyway (it is then not a DVC dependency)"
    if Path(video_path).is_absolute():
        raise ItemError(f"{path}: absolute video_path, outside data.root {root}; {hint}")
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root:
        raise ItemError(
            f"{path}: resolves to {real}, outside data.root {real_root} ('..' or a symlink); {hint}"
        )
    return path


def source_hash(path: Path, frame_suffixes: Iterable[str] = (".jpg", ".jpeg")) -> str:
    """Content hash of a video file, or of a frame folder (names and bytes of its frame files).

    A folder's hash covers every file whose suffix (any case) is in ``frame_suffixes``, in name order;
    other files are ignored (the decoder ignores them too).

    Raises:
        ItemError: the path does not exist, cannot be read, or is (or holds a frame that is) neither a
            regular file nor a folder (a device or a FIFO is refused before it is opened); the message
            names it.
    """
    path = Path(path)
    try:
        if path.is_dir():
            suffixes = {s.lower() for s in frame_suffixes}
            names = sorted(
                e.name for e in os.scandir(path) if os.path.splitext(e.name)[1].lower() in suffixes
            )
            h = hashlib.sha256(b"frame-folder\0")
            for name in names:
                h.update(f"{name}\0{sha256_file(path / name)}\0".encode())
            return "sha256:" + h.hexdigest()
        if not path.exists():
            raise ItemError(f"{path}: file not found")
        return sha256_file(path)
    except NotRegularFile as exc:
        raise ItemError(str(exc)) from None
    except OSError as exc:
        raise ItemError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def digest(obj: Any) -> str:
    """SHA-256 hex of ``obj`` as canonical JSON (sorted keys): the cache key of an entry."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Entries on disk.


@dataclass(frozen=True)
class Entry:
    """One cached result: named tensors and string metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]


def entry_path(cache_dir: Path, key: str, *, compress: bool) -> Path:
    """``<cache_dir>/<key>.safetensors`` (or ``.safetensors.zst``)."""
    return Path(cache_dir) / f"{key}{ZSTD_SUFFIX if compress else SUFFIX}"


def canonical_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors serialises the header (tensor entries and ``__metadata__``) from hash maps, so the
    key order, and with it the file's bytes, changes from process to process. Entries are DVC outputs
    whose hashes go into ``dvc.lock``: the same content must give the same bytes. Sorting keeps the
    header's length (same keys and values), so the tensor data stays where the offsets say.
    """
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    sorted_header = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(sorted_header) > n:  # cannot happen for serde_json output; guard against a format change
        raise ValueError(f"sorted safetensors header is longer ({len(sorted_header)} > {n} bytes)")
    return data[:8] + sorted_header.ljust(n, b" ") + data[8 + n :]


def save_entry(entry: Entry, path: Path) -> None:
    """Write ``entry`` to ``path`` atomically (zstd-compressed when ``path`` ends in ``.zst``).

    The bytes depend only on the entry's content (:func:`canonical_header`).
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in entry.tensors.items()}
    data = canonical_header(st_save(tensors, dict(entry.meta)))
    with atomic_path(path) as tmp:
        if path.name.endswith(".zst"):
            with pa.CompressedOutputStream(str(tmp), "zstd") as f:
                f.write(data)
        else:
            tmp.write_bytes(data)


def _open(path: Path) -> Any:
    path = Path(path)
    if path.name.endswith(".zst"):
        return pa.input_stream(str(path), compression="zstd")
    return pa.input_stream(str(path))


def load_entry(path: Path) -> Entry:
    """Read a whole entry.

    Raises:
        ValueError: the file is missing, truncated or not an entry (the message names it).
    """
    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
        tensors = st_load(data)
        meta = _parse_header(data[: 8 + struct.unpack("<Q", data[:8])[0]], path)[0]
    except Exception as exc:  # OSError, ArrowException, safetensors' SafetensorError, …
        raise ValueError(f"{path}: unreadable cache entry ({type(exc).__name__}: {exc})") from None
    return Entry(tensors, meta)


def read_entry_meta(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of an entry, reading only its header (and, uncompressed, checking its size).

    Raises:
        ValueError: the file is missing, truncated or not an entry (the message names it).
    """
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("shorter than a header")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise ValueError(f"header length {n} is not plausible")
            header = f.read(n)
        meta, data_len = _parse_header(head + header, path)
        if not path.name.endswith(".zst") and path.stat().st_size != 8 + n + data_len:
            raise ValueError(f"{path.stat().st_size} bytes, the header describes {8 + n + data_len}")
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ValueError(f"{path}: unreadable cache entry ({exc})") from None
    return meta


def _parse_header(buf: bytes, path: Path) -> tuple[dict[str, str], int]:
    """``(metadata, data length)`` from the first ``8 + n`` bytes of a safetensors file."""
    (n,) = struct.unpack("<Q", buf[:8])
    if len(buf) < 8 + n:
        raise ValueError("truncated header")
    try:
        header = json.loads(buf[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    ends = [int(t["data_offsets"][1]) for t in header.values() if isinstance(t, dict) and "data_offsets" in t]
    return {str(k): str(v) for k, v in meta.items()}, max(ends, default=0)


# --------------------------------------------------------------------------------------------------
# The engine.


class ItemError(ValueError):
    """One dive cannot be processed (bad input, non-finite output); the message names the file."""


class ManifestError(ValueError):
    """A stage manifest is missing or malformed; the message names the file."""


class ExtractionFailed(RuntimeError):
    """``on_error: fail`` and a dive failed; the message names the stage, the file and the reason."""


@dataclass(frozen=True)
class Item:
    """One dive to extract."""

    id: str
    """Dive id (canonical table)."""
    source: str
    """The input as the stage's input table names it (e.g. ``videos/x.mp4``): for messages and tables."""
    key: str | None
    """Cache key (:func:`digest`); ``None`` when the input could not be hashed (see ``error``)."""
    payload: Any = None
    """Whatever the stage's compute function needs (absolute path, frame range, …)."""
    error: str | None = None
    """Set when the item failed before computing (e.g. its input does not exist)."""


@dataclass(frozen=True)
class Failure:
    """One failed dive (a row of the failures table)."""

    stage: str
    id: str
    source: str
    key: str | None
    reason: str


@dataclass
class CacheRun:
    """What :func:`run_cached` did."""

    stage: str
    items: list[Item]
    """All items, in input order."""
    metas: dict[str, dict[str, str]] = field(default_factory=dict)
    """``{key: entry metadata}`` of every entry the items resolve to (computed or reused)."""
    computed: list[Item] = field(default_factory=list)
    reused: list[Item] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """File names of stale entries (and temp leftovers) deleted from the cache."""
    seconds: float = 0.0
    compute_seconds: float = 0.0
    """Wall time from the first batch sent to the last one back (the throughput denominator)."""
    executor: str = "local"
    """Where the batches ran (:mod:`hpmcore.extraction.executor`)."""
    workers: int = 0
    """Processes that computed in parallel (0: nothing was computed)."""

    @property
    def ok(self) -> list[Item]:
        """Items that have an entry, in input order."""
        done = {id(i) for i in self.computed} | {id(i) for i in self.reused}
        return [i for i in self.items if id(i) in done]

    def summary(self) -> str:
        """``computed N, reused M (failed F, removed R stale)``: the stage's log line."""
        return (
            f"computed {len(self.computed)}, reused {len(self.reused)} "
            f"(failed {len(self.failures)}, removed {len(self.removed)} stale)"
        )

    def stats(self) -> dict[str, int]:
        """Counts (``stats.json``): the same inputs and cache give the same counts."""
        return {
            "videos": len(self.items),
            "computed": len(self.computed),
            "reused": len(self.reused),
            "failed": len(self.failures),
            "removed": len(self.removed),
        }

    def timings(self) -> dict[str, Any]:
        """Timings and throughput (``timings.json``; ``videos_per_s`` only when something was computed)."""
        timings: dict[str, Any] = {
            "seconds": round(self.seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "executor": self.executor,
            "workers": self.workers,
        }
        if self.computed and self.compute_seconds > 0:
            timings["videos_per_s"] = round(len(self.computed) / self.compute_seconds, 3)
        return timings


Outcome = Entry | ItemError
Compute = Callable[[list[Item]], list[Outcome]]


def per_item(fn: Callable[[Item], Entry]) -> Compute:
    """A batch compute function from a one-item function that raises :class:`ItemError`."""

    def compute(batch: list[Item]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for item in batch:
            try:
                outcomes.append(fn(item))
            except ItemError as exc:
                outcomes.append(exc)
        return outcomes

    return compute


def run_cached(
    items: Sequence[Item],
    cache_dir: Path,
    task: ComputeTask,
    *,
    stage: str,
    on_error: OnError,
    compress: bool = False,
    batch_size: int = 1,
    progress: bool = True,
    executor: Executor | None = None,
) -> CacheRun:
    """Make sure every item has an entry in ``cache_dir``, computing only the missing ones.

    Args:
        items: the dives, in output order. Items sharing a key share one entry (computed once).
        cache_dir: the entries folder (created if missing).
        task: builds the compute function ``batch of items → one Entry or ItemError per item``
            (:class:`~hpmcore.extraction.executor.ComputeTask`); any other exception is a bug (or an
            environment problem) and propagates, stopping the stage.
        stage: stage name, for messages, the failures table and the progress bar.
        on_error: ``skip``: record failures and go on; ``fail``: raise at the first one.
        compress: store entries zstd-compressed.
        batch_size: items per ``compute`` call (one Dask task per batch).
        progress: show a tqdm bar (videos/s) over the items to compute.
        executor: where the batches run (:mod:`hpmcore.extraction.executor`); ``None``: in this
            process. Entries are written here, in this process, whichever runs them, and the
            failures come out in input order, so the outputs do not depend on the executor.

    Returns:
        a :class:`CacheRun`; stale entries (keys not among the successful items') are deleted.

    Raises:
        ExtractionFailed: ``on_error == "fail"`` and an item failed; entries computed so far stay in
            the cache (they are complete), nothing stale is deleted.
        Exception: whatever building ``task`` raises (e.g. ``CheckpointError``), before ``cache_dir``
            is created when it did not exist.
    """
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    executor = executor if executor is not None else LocalExecutor()
    cache_dir = Path(cache_dir)
    run = CacheRun(stage=stage, items=list(items), executor=executor.name)
    position = {id(item): i for i, item in enumerate(run.items)}
    failures: list[tuple[int, Failure]] = []
    failed: dict[str, str] = {}  # key → reason

    def fail(item: Item, reason: str) -> None:
        if on_error == "fail":
            raise ExtractionFailed(
                f"{stage}: {item.source} (dive {item.id}) failed: {reason}\n"
                f"(set {stage}.on_error: skip in params.yaml to record it in the failures table and go on)"
            )
        log.warning("%s: dive %s (%s) skipped: %s", stage, item.id, item.source, reason)
        failures.append((position[id(item)], Failure(stage, item.id, item.source, item.key, reason)))

    todo: dict[str, Item] = {}
    for item in items:
        if item.key is None or item.error is not None:
            fail(item, item.error or "no cache key")
            continue
        if item.key in run.metas or item.key in todo:
            continue
        path = entry_path(cache_dir, item.key, compress=compress)
        if path.exists():
            try:
                meta = read_entry_meta(path)
                if meta.get("key") != item.key:
                    raise ValueError(f"{path}: holds key {meta.get('key')!r}, not its file name's")
                run.metas[item.key] = meta
                continue
            except ValueError as exc:
                log.warning("%s: %s; recomputing it", stage, exc)
        todo[item.key] = item

    computed_keys: set[str] = set()
    pending = list(todo.values())
    batches = [pending[b : b + batch_size] for b in range(0, len(pending), batch_size)]
    if batches:
        executor.prepare(task)  # a model or table that cannot be built fails before anything is written
        run.workers = executor.workers
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tqdm(total=len(pending), desc=stage, unit="video", disable=not progress or not pending) as bar:
        for batch, outcomes in executor.map(task, batches):
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{stage}: compute gave {len(outcomes)} results for {len(batch)} items")
            for item, outcome in zip(batch, outcomes, strict=True):
                assert item.key is not None
                if isinstance(outcome, ItemError):
                    failed[item.key] = str(outcome)
                    fail(item, str(outcome))
                    continue
                meta = {**outcome.meta, "key": item.key}
                save_entry(Entry(outcome.tensors, meta), entry_path(cache_dir, item.key, compress=compress))
                run.metas[item.key] = meta
                computed_keys.add(item.key)
            bar.update(len(batch))
    run.compute_seconds = time.perf_counter() - t0

    seen: set[str] = set()
    for item in items:
        if item.key is None or item.error is not None:
            continue  # failed before computing
        if item.key in failed:
            if item is not todo[item.key]:  # another dive with the same input: same failure
                fail(item, failed[item.key])
            continue
        if item.key in computed_keys and item.key not in seen:
            run.computed.append(item)
        else:
            run.reused.append(item)
        seen.add(item.key)

    run.failures = [f for _, f in sorted(failures, key=lambda pair: pair[0])]
    run.removed = _prune(cache_dir, keep=set(run.metas))
    run.seconds = time.perf_counter() - start
    log.info("%s: %s in %.1f s", stage, run.summary(), run.seconds)
    return run


def _prune(cache_dir: Path, keep: set[str]) -> list[str]:
    """Delete entries whose key is not in ``keep`` and temp files of interrupted writes."""
    removed = []
    for entry in sorted(os.scandir(cache_dir), key=lambda e: e.name):
        name = entry.name
        if name.startswith(".") and name.endswith(".tmp"):  # an atomic_path leftover
            stale = True
        elif name.endswith(ZSTD_SUFFIX):
            stale = name[: -len(ZSTD_SUFFIX)] not in keep
        elif name.endswith(SUFFIX):
            stale = name[: -len(SUFFIX)] not in keep
        else:
            continue  # not ours: leave it
        if stale:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(name)
    return removed


def failures_table(failures: Sequence[Failure]) -> pa.Table:
    """The failures table (:data:`FAILURE_SCHEMA`), possibly empty."""
    return pa.Table.from_pylist([f.__dict__ for f in failures], schema=FAILURE_SCHEMA)


@dataclass(frozen=True)
class Extraction:
    """The result of an extraction stage: what it writes next to its cache folder."""

    manifest: pa.Table
    failures: pa.Table
    stats: dict[str, Any]
    """Counts (:meth:`CacheRun.stats`), the stage's DVC metric."""
    timings: dict[str, Any]
    """Timings and throughput (:meth:`CacheRun.timings` and the stage's own rates)."""
    run: CacheRun

    def write(self, out_dir: Path, manifest_name: str = MANIFEST) -> None:
        """Write the manifest (as ``manifest_name``), the failures table, ``stats.json`` and
        ``timings.json`` into ``out_dir``, each atomically (the cache entries are there already)."""
        out_dir = Path(out_dir)
        write_parquet(self.manifest, out_dir / manifest_name)
        write_parquet(self.failures, out_dir / FAILURES)
        write_json(self.stats, out_dir / STATS)
        write_json(self.timings, out_dir / TIMINGS)


def read_manifest(path: Path, schema: pa.Schema) -> pa.Table:
    """Read a stage manifest, checking its columns.

    Raises:
        ManifestError: the file is missing, unreadable or has other columns (the message names it).
    """
    table = read_parquet(path, ManifestError, "manifest not found (run the stage that writes it first)")
    if not table.schema.remove_metadata().equals(schema.remove_metadata()):
        raise ManifestError(
            f"{path}: columns differ from the expected manifest:\n{table.schema}\nexpected:\n{schema}"
        )
    return table
