"""Tuning HP-MCoRe's defaults on the **validation split only**, reproducibly (issue 9 item 3).

``hpmcore tune --trials N`` (or ``python -m hpmcore.training.tune --trials N``) searches a small space of
``model.*`` / ``train.*`` params with Optuna's TPE sampler; every other value comes from ``params.yaml``.

- **Never the test split.** The dives table is read with a filter that keeps the train and validation
  rows only (:func:`read_tuning_dives`): test rows — their labels, and their features, which are not
  loaded — never reach the tuner; the bank it gets holds train and val only (:func:`validation_bank`, also
  applied to any bank passed to :func:`tune`). A trial trains the ``train`` stage's model on train
  (epoch selection on val; on cached features, or end to end on the decoded frames with ``train.mode:
  end_to_end``) and is scored on val with the evaluation protocol of ``params.eval``.
- **Objective** (``--objective``, default ``exec_rho``): validation **execution ρ**, Spearman's ρ of
  ``predicted / DD`` against ``true / DD`` (voter-averaged predictions), mean over ``--seeds`` training
  seeds. Why not the final-score ρ: the degree of difficulty is an input, and DD × a constant alone
  reaches final ρ ≈ 0.66 on the embedded dives, so the final ρ of every sensible trial sits near that
  value and their differences are mostly DD ranking plus noise; execution ρ measures what the model reads
  from the video, which is what the tuned params change. ``--objective rho`` selects on final ρ instead.
  The validation split is small (18 dives on the embedded data): differences below ~0.1 are noise, so
  prefer ``--seeds 2`` or more when the budget allows.
- **Reproducible.** The study (``--study``, in ``<state dir>/optuna.db``, SQLite) records the space,
  objective, seeds, base params and a hash of the train/val labels; a run on a study with other
  settings is refused (naming what differs) unless ``--restart``. The sampler is seeded with
  ``derive_seed(seed, "tune", <finished trials>)``, so the same command on the same data gives the same
  trials, and a continued study does not repeat the draws of the first run. Training is seeded as
  everywhere else (bit-identical on the CPU).
- **Logged.** Each trial is one MLflow run (experiment ``--experiment``, default ``hpmcore-tune``, tags
  ``tune.study`` / ``tune.trial``) with its params and validation metrics, through
  :mod:`hpmcore.tracking.mlflow` (imported only by :func:`main`); a last run ``<study>-best`` holds the
  best trial and the ``params.yaml`` snippet (artifact ``tune/best.yaml``), which is also printed.

**The search space** (:data:`DEFAULT_SPACE`, or ``--space FILE``: a YAML mapping ``section.key: {low,
high[, log][, step]}`` or ``{choices: [...]}``; only ``model.*`` and ``train.*`` params that
``params.yaml`` has, not ``train.device``/``train.amp``)::

    train.lr                   3e-4 .. 3e-3, log        train.weight_decay   0, 0.01, 0.05
    train.epochs               8, 12, 16                model.dim            32, 64
    model.contrastive_weight   0.1 .. 10, log           model.pose_fusion    bias, tokens
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow.parquet as pq
import yaml

from hpmcore.config import ConfigError, Params, from_dict, load_params, params_to_dict
from hpmcore.data.canonical import DatasetError
from hpmcore.runtime import derive_seed
from hpmcore.training.bank import FeatureBank, FeatureBankError, pipeline_bank
from hpmcore.training.compare import SeedResult, training_seeds
from hpmcore.training.evaluate import evaluate_model
from hpmcore.training.runs import build_model
from hpmcore.training.train import train

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_SPACE",
    "TUNING_SPLITS",
    "Dimension",
    "TrialRecord",
    "TuneError",
    "TuneResult",
    "apply_overrides",
    "load_space",
    "main",
    "read_tuning_dives",
    "tune",
    "validation_bank",
]

log = logging.getLogger(__name__)

TUNING_SPLITS = ("train", "val")
"""The only splits the tuner reads."""
OBJECTIVES = ("exec_rho", "rho")
TUNABLE_SECTIONS = ("model", "train")
NOT_TUNABLE = ("train.device", "train.amp")
"""Speed or placement, not what a model learns."""
FINGERPRINT_ATTR = "hpmcore.fingerprint"


class TuneError(ValueError):
    """A bad search space, objective or study; the message names the key or the study."""


# ---------------------------------------------------------------------------------------------------------
# The search space


@dataclass(frozen=True)
class Dimension:
    """One searched param: a float or int range (``low``, ``high``, ``log``, ``step``) or ``choices``."""

    key: str
    """``section.name``, e.g. ``train.lr``."""
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value of this param."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description (the study fingerprint, the logs)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, (), False)} | {
            "choices": list(self.choices)
        }


DEFAULT_SPACE: tuple[Dimension, ...] = (
    Dimension("train.lr", "float", low=3e-4, high=3e-3, log=True),
    Dimension("train.weight_decay", "categorical", choices=(0.0, 0.01, 0.05)),
    Dimension("train.epochs", "int", low=8, high=16, step=4),
    Dimension("model.dim", "categorical", choices=(32, 64)),
    Dimension("model.contrastive_weight", "float", low=0.1, high=10.0, log=True),
    Dimension("model.pose_fusion", "categorical", choices=("bias", "tokens")),
)
"""The documented default space (module docstring)."""


def _tunable_keys() -> set[str]:
    keys = set()
    for section in TUNABLE_SECTIONS:
        cls = type(getattr(Params(), section))
        keys |= {f"{section}.{f.name}" for f in dataclasses.fields(cls) if not f.metadata.get("from_data")}
    return keys - set(NOT_TUNABLE)


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    if not isinstance(spec, dict):
        raise TuneError(f"{where}: {key}: expected a mapping with low/high or choices, got {spec!r}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise TuneError(f"{where}: {key}: choices must be a non-empty list (and nothing else)")
        return Dimension(key, "categorical", choices=tuple(spec["choices"]))
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown or not {"low", "high"} <= set(spec):
        raise TuneError(f"{where}: {key}: needs low and high (and optionally log, step); got {sorted(spec)}")
    low, high, step = spec["low"], spec["high"], spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers):
        raise TuneError(f"{where}: {key}: low, high and step must be numbers")
    if not all(math.isfinite(v) for v in numbers) or not low < high or (step is not None and step <= 0):
        raise TuneError(f"{where}: {key}: needs finite low < high and step > 0, got {low}, {high}, {step}")
    log_scale = bool(spec.get("log", False))
    if log_scale and (low <= 0 or step is not None):
        raise TuneError(f"{where}: {key}: a log range needs low > 0 and no step")
    kind: Literal["int", "float"] = "int" if all(isinstance(v, int) for v in numbers) else "float"
    return Dimension(key, kind, low=low, high=high, log=log_scale, step=step)


def load_space(path: Path) -> tuple[Dimension, ...]:
    """A search space from a YAML file (module docstring); :class:`TuneError` naming the file and key."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TuneError(f"{path}: cannot read the search space ({exc})") from exc
    if not isinstance(raw, dict) or not raw:
        raise TuneError(f"{path}: expected a non-empty mapping of section.key to a range or choices")
    return check_space(tuple(_dimension(str(k), v, str(path)) for k, v in raw.items()), str(path))


def check_space(space: Sequence[Dimension], where: str = "search space") -> tuple[Dimension, ...]:
    """``space`` if every key is a tunable param (:data:`TUNABLE_SECTIONS`, not :data:`NOT_TUNABLE`) and
    no key repeats; :class:`TuneError` naming the key otherwise."""
    known = _tunable_keys()
    keys = [d.key for d in space]
    for key in keys:
        if key not in known:
            raise TuneError(f"{where}: {key} is not a tunable param (model.* or train.* of params.yaml)")
    if len(set(keys)) != len(keys) or not keys:
        raise TuneError(f"{where}: the keys must be distinct and at least one: {keys}")
    return tuple(space)


def apply_overrides(params: Params, overrides: Mapping[str, Any]) -> Params:
    """``params`` with ``{"section.key": value}`` applied and checked as ``params.yaml`` is (types,
    bounds); :class:`~hpmcore.config.ConfigError` naming the key otherwise."""
    raw = params_to_dict(params)
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        raw[section][name] = value
    return from_dict(Params, raw)


# ---------------------------------------------------------------------------------------------------------
# The data: train and validation only


def validation_bank(bank: FeatureBank) -> FeatureBank:
    """The bank restricted to :data:`TUNING_SPLITS`: other rows (the test split) are not in its table,
    its videos or its skipped list, so asking it for a test dive's label or features is an error."""
    keep = [s in TUNING_SPLITS for s in bank.table.column("split").to_pylist()]
    table = bank.table.filter(keep)
    ids = set(table.column("id").to_pylist())
    videos = {i: v for i, v in bank.videos.items() if i in ids}
    skipped = tuple(d for d in bank.skipped if d.split in TUNING_SPLITS)
    out = dataclasses.replace(bank, videos=videos, table=table, skipped=skipped)  # a FrameBank stays one
    if set(out.table.column("split").to_pylist()) - set(TUNING_SPLITS):
        raise AssertionError("validation_bank kept a split other than train/val")  # a bug, never data
    return out


def read_tuning_dives(dives_path: Path, out_path: Path) -> Path:
    """Copy ``prepare``'s ``dives.parquet`` to ``out_path`` with only the train and val rows (a Parquet
    row filter on ``split``: the test rows are never turned into Python values), for
    :func:`~hpmcore.training.bank.pipeline_bank`."""
    try:
        table = pq.read_table(dives_path, filters=[("split", "in", list(TUNING_SPLITS))])
    except FileNotFoundError as exc:
        raise DatasetError(f"{dives_path}: annotation table not found (run stage prepare)") from exc
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DatasetError(f"{dives_path}: cannot read the annotation table ({exc})") from exc
    pq.write_table(table, out_path)
    return Path(out_path)


def _data_hash(bank: FeatureBank) -> str:
    rows = sorted(
        (r["id"], r["split"], r["dive_number"], r["difficulty"], r["final_score"])
        for r in bank.table.select(["id", "split", "dive_number", "difficulty", "final_score"]).to_pylist()
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Trials and the study


@dataclass(frozen=True)
class TrialRecord:
    """One finished (or failed) trial."""

    number: int
    params: dict[str, Any]
    """The searched values, ``section.key`` → value."""
    value: float | None
    """The objective (``None``: undefined, e.g. a model that predicts a constant; the trial failed)."""
    metrics: dict[str, Any]
    """Validation metrics, mean over seeds (``val_rho``, ``val_exec_rho``, ``val_l2``, ``val_rl2_x100``,
    ``val_tiou``, ``val_aiou_50``, ``val_aiou_75``), ``best_epochs`` and ``seconds``."""


@dataclass(frozen=True)
class TuneResult:
    """The study after this run."""

    study: str
    objective: str
    best: TrialRecord
    trials: list[TrialRecord]
    """This run's trials, in order."""
    snippet: str
    """The ``params.yaml`` lines that set the best trial's values."""


def params_snippet(values: Mapping[str, Any]) -> str:
    """``{"train.lr": 0.001, "model.dim": 64}`` → the ``params.yaml`` sections that set them."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in sorted(values.items()):
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    return yaml.safe_dump(nested, sort_keys=True, default_flow_style=False)


def score_trial(
    bank: FeatureBank,
    params: Params,
    seeds: Sequence[int],
    objective: str,
    *,
    project_dir: Path = Path("."),
) -> dict[str, Any]:
    """Train HP-MCoRe of ``params`` once per training seed (train split, epoch selection on val) and
    score it on val with ``params.eval``; the metrics are means over seeds (NaN where undefined).

    The model is the ``train`` stage's (:func:`hpmcore.training.runs.build_model`: on cached features, or
    end to end on a frame bank, encoder weights relative to ``project_dir``) with the heads initialised
    from the training seed. ``bank`` must be a :func:`validation_bank`.
    """
    if bank.split_ids("test"):
        raise AssertionError("score_trial got a bank with test dives")  # a bug, never data
    per_seed: list[SeedResult] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpmcore-tune-") as tmp:
        for s in seeds:
            model = build_model(dataclasses.replace(params, seed=s), bank, project_dir=project_dir)
            result = train(
                model, bank, params.train, seed=s, checkpoint_dir=Path(tmp) / f"seed-{s}", progress=False
            )
            ev = evaluate_model(
                model, bank, "val", params.eval, seed=params.seed, dd_mode=params.train.dd_mode
            )
            per_seed.append(SeedResult.of(ev, s, result.best_epoch))
    metrics: dict[str, Any] = {
        f"val_{k}": float(np.mean([r.metrics[k] for r in per_seed])) for k in per_seed[0].metrics
    }
    metrics["best_epochs"] = [r.best_epoch for r in per_seed]
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    metrics["objective"] = metrics[f"val_{objective}"]
    return metrics


def _fingerprint(
    bank: FeatureBank, params: Params, space: Sequence[Dimension], objective: str, seeds: Sequence[int]
) -> dict[str, Any]:
    base = params_to_dict(params)
    fixed = {k: base[k] for k in ("seed", "model", "train", "eval")}
    fixed["train"] = {k: v for k, v in fixed["train"].items() if f"train.{k}" not in NOT_TUNABLE}
    fixed["eval"] = {
        k: v for k, v in fixed["eval"].items() if k not in ("pair_batch_size", "encode_batch_size", "device")
    }
    for d in space:  # the searched keys' base values do not matter
        section, name = d.key.split(".", 1)
        fixed[section].pop(name, None)
    return {
        "objective": objective,
        "seeds": list(seeds),
        "space": [d.describe() for d in space],
        "base": fixed,
        "data": _data_hash(bank),
    }


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}" if key != "data" else "data (train/val labels)")
    return out


def tune(
    bank: FeatureBank,
    params: Params,
    *,
    trials: int,
    storage: str | None = None,
    study_name: str = "hpmcore-tune",
    objective: str = "exec_rho",
    seeds: int = 1,
    sampler_seed: int | None = None,
    space: Sequence[Dimension] = DEFAULT_SPACE,
    restart: bool = False,
    on_trial: Callable[[TrialRecord], None] | None = None,
    project_dir: Path = Path("."),
) -> TuneResult:
    """Run ``trials`` more trials of the study ``study_name`` (module docstring) and return its best.

    Args:
        bank: the data; only its train and val splits are used (:func:`validation_bank`).
        params: everything not searched (``model``, ``train``, ``eval``, ``seed``).
        trials: trials to run now (>= 1).
        storage: an Optuna storage URL (``sqlite:///…``); ``None``: in memory.
        study_name: the study; an existing one with other settings is refused unless ``restart``.
        objective: ``exec_rho`` or ``rho`` on the validation split (maximised).
        seeds: training seeds per trial (:func:`~hpmcore.training.compare.training_seeds` of ``params.seed``).
        sampler_seed: seeds the TPE sampler (``params.seed`` when ``None``).
        space: the searched params.
        restart: delete an existing study of that name first.
        on_trial: called after each trial (e.g. to log it to MLflow).
        project_dir: where the features stage's encoder weights paths are relative to (end to end).

    Raises:
        TuneError: a bad objective, space or trial count, a study with other settings, no finished trial.
    """
    import optuna

    if objective not in OBJECTIVES:
        raise TuneError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if trials < 1 or seeds < 1:
        raise TuneError(f"trials and seeds must be >= 1, got {trials}, {seeds}")
    space = check_space(space)
    bank = validation_bank(bank)
    if not bank.split_ids("val"):
        raise FeatureBankError("tuning needs validation dives: the val split is empty")
    run_seeds = training_seeds(params.seed, seeds)
    fingerprint = _fingerprint(bank, params, space, objective, run_seeds)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if restart and storage is not None:
        with contextlib.suppress(KeyError):  # no such study yet
            optuna.delete_study(study_name=study_name, storage=storage)
    done = 0
    if storage is not None:
        try:
            existing = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:
            stored = existing.user_attrs.get(FINGERPRINT_ATTR, {})
            differ = _differences(stored, fingerprint)
            if differ:
                raise TuneError(
                    f"study {study_name!r} in {storage} was run with other settings ({', '.join(differ)}): "
                    "use another --study, or --restart to replace it"
                )
            done = len(existing.trials)
    base_seed = params.seed if sampler_seed is None else sampler_seed
    sampler = optuna.samplers.TPESampler(seed=derive_seed(base_seed, "tune", done))
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampler, direction="maximize", load_if_exists=True
    )
    study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    records: list[TrialRecord] = []

    def run(trial: optuna.Trial) -> float:
        values = {d.key: d.suggest(trial) for d in space}
        trial_params = apply_overrides(params, values)
        metrics = score_trial(bank, trial_params, run_seeds, objective, project_dir=project_dir)
        for key, value in metrics.items():
            trial.set_user_attr(key, value if not isinstance(value, float) or math.isfinite(value) else None)
        value = metrics["objective"]
        record = TrialRecord(trial.number, values, value if math.isfinite(value) else None, metrics)
        records.append(record)
        log.info(
            "trial %d (%d/%d): validation %s %.4f (ρ %.4f) in %.0f s  %s",
            trial.number, len(records), trials, objective, value, metrics["val_rho"], metrics["seconds"],
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()),
        )  # fmt: skip
        if on_trial is not None:
            on_trial(record)
        return value  # NaN: Optuna marks the trial failed

    study.optimize(run, n_trials=trials, catch=())
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise TuneError(f"study {study_name!r}: no trial gave a defined validation {objective}")
    best_trial = study.best_trial
    best = TrialRecord(
        best_trial.number, dict(best_trial.params), best_trial.value, dict(best_trial.user_attrs)
    )
    return TuneResult(study_name, objective, best, records, params_snippet(best.params))


# ---------------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``tune`` command's arguments (``hpmcore tune`` and ``python -m hpmcore.training.tune``)."""
    parser.add_argument("--trials", type=int, required=True, help="trials to run now")
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="base params (default: %(default)s)"
    )
    parser.add_argument(
        "--objective", choices=OBJECTIVES, default="exec_rho", help="validation metric to maximise"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="training seeds per trial (default: %(default)s)"
    )
    parser.add_argument("--study", default="hpmcore-tune", help="Optuna study name (default: %(default)s)")
    parser.add_argument(
        "--space", type=Path, default=None, help="YAML search space (default: the documented one)"
    )
    parser.add_argument("--restart", action="store_true", help="replace an existing study of that name")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="default: $HPMCORE_STATE_DIR or <project>/.hpmcore"
    )
    parser.add_argument(
        "--experiment", default="hpmcore-tune", help="MLflow experiment (default: %(default)s)"
    )
    parser.add_argument("--dives", type=Path, default=Path("data/prepared/dives.parquet"))
    parser.add_argument("--decoded", type=Path, default=Path("data/decoded"))
    parser.add_argument("--pose", type=Path, default=Path("data/pose"))
    parser.add_argument("--features", type=Path, default=Path("data/features"))


def _num(value: Any) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def run_cli(args: argparse.Namespace) -> int:
    """Run the ``tune`` command; 0 on success, 2 for bad input (a message naming the file or key)."""
    from hpmcore.extraction.cache import ManifestError
    from hpmcore.models.checkpoints import CheckpointError
    from hpmcore.tracking import default_state_dir
    from hpmcore.tracking import mlflow as tracking
    from hpmcore.training.frames import pipeline_frame_bank

    state = args.state_dir or default_state_dir(args.params.resolve().parent)
    storage = f"sqlite:///{(Path(state) / 'optuna.db').resolve()}"
    try:
        params = load_params(args.params)
        space = DEFAULT_SPACE if args.space is None else load_space(args.space)
        with tempfile.TemporaryDirectory(prefix="hpmcore-tune-dives-") as tmp:
            dives = read_tuning_dives(args.dives, Path(tmp) / "dives.parquet")
            splash = params.model.splash_weight > 0  # the latents table is read only when the loss needs it
            root = params.data.root_path(args.params.parent) if splash else None
            load = pipeline_frame_bank if params.train.mode == "end_to_end" else pipeline_bank
            bank = load(dives, args.decoded, args.features, args.pose, data_root=root)
    except (ConfigError, DatasetError, ManifestError, CheckpointError, TuneError) as exc:
        print(f"hpmcore tune: error: {exc}", file=sys.stderr)
        return 2
    Path(state).mkdir(parents=True, exist_ok=True)

    def log_trial(record: TrialRecord) -> None:
        tags = {"tune.study": args.study, "tune.trial": str(record.number), "tune.objective": args.objective}
        with tracking.start_run(state, args.experiment, f"{args.study}-trial-{record.number}", tags):
            tracking.log_params({**record.params, "tune.seeds": args.seeds, "tune.objective": args.objective})
            tracking.log_metrics({k: v for k, v in record.metrics.items() if k != "best_epochs"})

    log.info("tuning on %d train and %d validation dives (no test split), study %r in %s",
             len(bank.split_ids("train")), len(bank.split_ids("val")), args.study, storage)  # fmt: skip
    try:
        result = tune(
            bank,
            params,
            trials=args.trials,
            storage=storage,
            study_name=args.study,
            objective=args.objective,
            seeds=args.seeds,
            space=space,
            restart=args.restart,
            on_trial=log_trial,
            project_dir=args.params.parent,
        )
    except (ConfigError, DatasetError, CheckpointError, TuneError) as exc:
        print(f"hpmcore tune: error: {exc}", file=sys.stderr)
        return 2
    best = result.best
    header = (
        f"# best of study {result.study!r}: trial {best.number}, validation {result.objective} "
        f"{best.value:.4f} (validation ρ {_num(best.metrics.get('val_rho'))}); put into params.yaml:\n"
    )
    with tracking.start_run(state, args.experiment, f"{args.study}-best", {"tune.study": args.study}):
        tracking.log_params({**best.params, "tune.best_trial": best.number})
        tracking.log_metrics({"best_value": float(best.value or math.nan)})
        tracking.log_text(header + result.snippet, "tune/best.yaml")
    print(header + result.snippet, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hpmcore.training.tune --trials N [...]``."""
    from hpmcore.logs import setup_logging

    parser = argparse.ArgumentParser(prog="hpmcore tune", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
