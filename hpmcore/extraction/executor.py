"""Where an extraction stage's per-video work runs: in the stage's process, or on a Dask cluster.

The cache engine (:func:`hpmcore.extraction.cache.run_cached`) decides what to compute (the keys
without an entry), writes every entry itself (atomically, in the stage's process), keeps the failures
table and applies ``on_error``; an executor only runs batches of items and hands back their outcomes
(entries or :class:`~hpmcore.extraction.cache.ItemError`). That is the one place where Dask plugs in,
so keys, entry bytes, failures and ``on_error`` are the same whichever executor runs:

* :class:`LocalExecutor` — the batches one after the other in this process (the default);
* :class:`DaskExecutor` — each batch is a task on a ``distributed`` cluster (``extract.executor:
  dask``): a local cluster of ``extract.workers`` processes started for the stage, or the existing
  scheduler at ``extract.scheduler``. A worker that dies (killed, out of memory) loses its tasks; the
  scheduler runs them again on another worker, and since only the stage's process writes entries,
  nothing is half-written. The workers must see the same files as the stage (the videos under
  ``data.root``, the decode cache, weights): a shared filesystem for a cluster of several machines.

A stage describes its work as a picklable :class:`ComputeTask` (a module-level builder and its
arguments); each worker builds it once (encoders and pose models are loaded once per worker and stage
run) and keeps it until the next stage run's task arrives.

``extract`` params are speed-only: they are not DVC params and not in any cache key.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hpmcore.config import ExtractConfig

if TYPE_CHECKING:
    from distributed import Client

    from hpmcore.extraction.cache import Compute, Item, Outcome

__all__ = [
    "ComputeTask",
    "DaskExecutor",
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "cuda_workers",
    "open_executor",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ALLOWED_FAILURES = 3
"""Worker deaths a task may live through on a cluster the stage starts (Dask's default): its videos are
computed again elsewhere each time; a task that kills every worker it runs on fails the stage."""


class ExecutorError(RuntimeError):
    """The executor cannot run: an unreachable scheduler, a cluster without workers. Raised before
    the stage writes anything."""


@dataclass(frozen=True)
class ComputeTask:
    """A stage's compute function as something a Dask worker can build: ``build(*args)`` → ``Compute``.

    ``build`` must be a module-level function and ``args`` picklable (configs, paths, small dicts).
    """

    build: Callable[..., Compute]
    args: tuple[Any, ...] = ()
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Identifies one stage run's task: a worker builds each token once."""

    def compute(self) -> Compute:
        """Build the compute function (load models, tables, …)."""
        return self.build(*self.args)


class Executor(Protocol):
    """What :func:`~hpmcore.extraction.cache.run_cached` needs to run batches."""

    name: str
    """``local`` or ``dask`` (recorded in the stage's timings)."""

    @property
    def workers(self) -> int:
        """Processes computing in parallel."""
        ...

    def prepare(self, task: ComputeTask) -> None:
        """Build ``task`` where it will run, so that its errors (a bad weights file, a missing table)
        surface before anything is written."""
        ...

    def map(
        self, task: ComputeTask, batches: Sequence[list[Item]]
    ) -> Iterator[tuple[list[Item], list[Outcome]]]:
        """``(batch, outcomes)`` for every batch, in the order they finish. Closing the iterator early
        (``on_error: fail``) cancels the batches not yet run."""
        ...

    def run_once(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` where the batches run (e.g. which device and precision the workers use)."""
        ...


class LocalExecutor:
    """The batches one after the other, in this process."""

    name = "local"
    workers = 1

    def __init__(self) -> None:
        self._built: tuple[str, Compute] | None = None

    def _compute(self, task: ComputeTask) -> Compute:
        if self._built is None or self._built[0] != task.token:
            self._built = (task.token, task.compute())
        return self._built[1]

    def prepare(self, task: ComputeTask) -> None:
        self._compute(task)

    def map(
        self, task: ComputeTask, batches: Sequence[list[Item]]
    ) -> Iterator[tuple[list[Item], list[Outcome]]]:
        compute = self._compute(task)
        for batch in batches:
            yield batch, compute(batch)

    def run_once(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


class DaskExecutor:
    """Each batch a task on a Dask ``distributed`` cluster (see the module docstring)."""

    name = "dask"

    def __init__(self, client: Client, *, resources: dict[str, float] | None = None) -> None:
        self.client = client
        self.resources = resources
        """Per task (``{"GPU": 1}`` on a cluster of one worker per GPU)."""

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def prepare(self, task: ComputeTask) -> None:
        futures = [
            self.client.submit(
                _build, task, key=f"build-{task.token}-{i}", workers=[address], allow_other_workers=False
            )
            for i, address in enumerate(self.client.scheduler_info(n_workers=-1)["workers"])
        ]
        self.client.gather(futures)  # re-raises the first build error (CheckpointError, …) here

    def map(
        self, task: ComputeTask, batches: Sequence[list[Item]]
    ) -> Iterator[tuple[list[Item], list[Outcome]]]:
        from distributed import as_completed

        futures = {
            self.client.submit(
                _run_batch, task, batch, key=f"batch-{task.token}-{i}", resources=self.resources
            ): batch
            for i, batch in enumerate(batches)
        }
        with self.client.as_current():  # as_completed looks for the current client
            completed = as_completed(futures)
        try:
            for future in completed:
                yield futures[future], future.result()
                future.release()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def run_once(self, fn: Callable[..., T], *args: Any) -> T:
        return self.client.submit(fn, *args, pure=False, resources=self.resources).result()


# --------------------------------------------------------------------------------------------------
# On the workers.

_lock = threading.Lock()


def _worker_compute(task: ComputeTask) -> Compute:
    """The worker's built compute function of ``task`` (built on first use; the previous stage run's
    is dropped, with its models)."""
    from distributed import get_worker

    worker = get_worker()
    with _lock:
        built = getattr(worker, "_hpmcore_compute", None)
        if built is None or built[0] != task.token:
            worker._hpmcore_compute = None  # free the previous run's models first
            worker._hpmcore_compute = (task.token, task.compute())
        return worker._hpmcore_compute[1]


def _build(task: ComputeTask) -> None:
    _worker_compute(task)


def _run_batch(task: ComputeTask, batch: list[Item]) -> list[Outcome]:
    return _worker_compute(task)(batch)


# --------------------------------------------------------------------------------------------------
# Opening an executor from params.


@contextmanager
def open_executor(cfg: ExtractConfig, *, gpus: int = 0) -> Iterator[Executor]:
    """The executor ``cfg`` (the ``extract`` params) asks for, closed (its cluster stopped) at exit.

    Args:
        cfg: ``executor: local`` → :class:`LocalExecutor`; ``dask`` → a :class:`DaskExecutor` on the
            scheduler ``cfg.scheduler``, or on a local cluster of ``cfg.workers`` worker processes
            (one thread each) started here and stopped at exit.
        gpus: for a local cluster, start one worker per GPU instead (``CUDA_VISIBLE_DEVICES`` set to
            its device, tasks need a ``GPU`` resource): the features stage on CUDA.

    Raises:
        ExecutorError: the scheduler cannot be reached within ``cfg.connect_timeout`` seconds, or has
            no worker within that time (nothing has been written).
    """
    cfg.validate()
    if cfg.executor == "local":
        yield LocalExecutor()
        return
    import dask
    from distributed import Client

    if cfg.scheduler is not None:
        try:
            client = Client(cfg.scheduler, timeout=f"{cfg.connect_timeout}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(
                f"extract.scheduler {cfg.scheduler}: cannot connect to the Dask scheduler within "
                f"{cfg.connect_timeout:g} s ({type(exc).__name__}: {exc})"
            ) from None
        with client:
            try:
                client.wait_for_workers(1, timeout=cfg.connect_timeout)
            except (OSError, TimeoutError):
                raise ExecutorError(
                    f"extract.scheduler {cfg.scheduler}: the scheduler has no worker "
                    f"(waited {cfg.connect_timeout:g} s); start some with `dask worker {cfg.scheduler}`"
                ) from None
            log.info("extract: Dask scheduler %s, %d workers", cfg.scheduler, _count(client))
            yield DaskExecutor(client)
        return

    with dask.config.set({"distributed.scheduler.allowed-failures": _ALLOWED_FAILURES}):
        cluster = _local_cluster(cfg.workers, gpus)
        with cluster, Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(len(cluster.workers))
            log.info(
                "extract: local Dask cluster of %d worker processes%s",
                len(cluster.workers),
                " (one per GPU)" if gpus else "",
            )
            yield DaskExecutor(client, resources={"GPU": 1} if gpus else None)


def cuda_workers(device: str, *, param: str) -> int:
    """How many GPU workers a local cluster needs for a stage on ``device`` (``auto`` | ``cpu`` |
    ``cuda``): the visible CUDA devices when it resolves to CUDA, else 0 (CPU workers).

    Raises:
        ConfigError: ``cuda`` without a GPU (naming ``param``).
    """
    import torch

    from hpmcore.runtime import resolve_device

    return torch.cuda.device_count() if resolve_device(device, param=param).type == "cuda" else 0


def _count(client: Client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"])


def _local_cluster(workers: int, gpus: int) -> Any:
    """A cluster of local worker processes (one thread each), or of one worker per GPU."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    if not gpus:
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(gpus)]
    spec = {
        f"gpu-{i}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "env": {"CUDA_VISIBLE_DEVICES": devices[i]},
                "resources": {"GPU": 1},
                "silence_logs": logging.WARNING,
            },
        }
        for i in range(gpus)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    return SpecCluster(workers=spec, scheduler=scheduler, silence_logs=logging.WARNING)
