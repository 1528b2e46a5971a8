"""Lineage of registered models: what each was made from, and whether the workspace still holds it.

At registration the flow stores a **lineage record** with the run (:func:`build_record`, artifact
``lineage/record.json``): git commit, params, the ``dvc.lock`` hash of every stage output, the dataset
(every dive id with its split, its source video and that source's SHA-256), the skeleton table's
metadata and the features manifest's encoders and weights hashes, the checkpoint's SHA-256, and the
SHA-256 of every file of every stage output the model was trained from (``synth`` to ``train``). The
run also holds ``lineage/dvc.lock``, ``lineage/params.yaml`` and the environment fingerprint.

- :func:`show` gathers all of it for a model reference (``NAME@ALIAS``, ``NAME/VERSION`` or a run id);
- :func:`verify` checks it against the workspace (every recorded file, source video and weights file,
  ``params.yaml``, ``dvc.lock``'s outputs) and the DVC cache (each recorded file's object, by the md5
  that ``dvc.lock`` — or its ``.dir`` listing in the cache — gives it), naming every file that differs;
- :func:`models_for_video` lists the registered versions that trained, validated or evaluated on a dive.

No MLflow here: runs and versions come through a :class:`RegistryReader` (implemented by
:class:`hpmcore.tracking.mlflow.Registry`).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq
import yaml

from hpmcore.config import Params, flatten, params_to_dict
from hpmcore.environment import environment_fingerprint
from hpmcore.extraction.cache import sha256_file, source_hash
from hpmcore.extraction.pose.table import pose_metadata

__all__ = [
    "DVC_LOCK_ARTIFACT",
    "ENVIRONMENT_ARTIFACT",
    "PARAMS_ARTIFACT",
    "RECORD_ARTIFACT",
    "LineageError",
    "Mismatch",
    "PipelineLayout",
    "build_record",
    "dvc_outputs",
    "format_show",
    "models_for_video",
    "resolve",
    "show",
    "verify",
]

RECORD_FORMAT = "hpmcore-lineage/1"
RECORD_ARTIFACT = "lineage/record.json"
DVC_LOCK_ARTIFACT = "lineage/dvc.lock"
PARAMS_ARTIFACT = "lineage/params.yaml"
ENVIRONMENT_ARTIFACT = "environment/fingerprint.json"
MODEL_STAGES = ("synth", "prepare", "decode", "pose", "features", "train")
"""Stages whose outputs a model is made from (``evaluate`` comes after it)."""
ROLES = {"train": "trained", "val": "validated", "test": "evaluated"}
"""What a model did with a dive of each split: trained on it, selected its epoch on it, was tested on it."""


class LineageError(ValueError):
    """A model reference that resolves to nothing, or a run without a lineage record."""


class VersionLike(Protocol):
    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_ms: int


class RegistryReader(Protocol):
    """What lineage needs from the model registry (:class:`hpmcore.tracking.mlflow.Registry`)."""

    def versions(self, name: str | None = None) -> list[Any]: ...
    def version(self, name: str, version: str) -> Any: ...
    def by_alias(self, name: str, alias: str) -> Any: ...
    def run(self, run_id: str) -> dict[str, Any] | None: ...
    def artifact_text(self, run_id: str, artifact_file: str) -> str | None: ...


@dataclass(frozen=True)
class PipelineLayout:
    """Where the pipeline keeps what a model is made from, relative to the project root (dvc.yaml)."""

    dives: str = "data/prepared/dives.parquet"
    decoded: str = "data/decoded"
    pose: str = "data/pose"
    features: str = "data/features"
    checkpoint: str = "data/model/checkpoints/best.pt"


@dataclass(frozen=True)
class Mismatch:
    """One file that no longer matches the record."""

    path: str
    """Relative to the project root (absolute for files outside it)."""
    problem: str
    restorable: bool | None = None
    """True when the DVC cache holds the recorded content (``dvc checkout`` can restore it)."""
    output: str | None = None
    """The DVC output the file belongs to (what to check out)."""


@dataclass
class Verification:
    """The outcome of :func:`verify`."""

    model: str
    checked: int = 0
    """Number of files checked (workspace and DVC cache)."""
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Differences that do not make the model's inputs differ (another git commit or environment)."""

    @property
    def ok(self) -> bool:
        return not self.mismatches


# --------------------------------------------------------------------------------------------------
# Recording.


def dvc_outputs(lock_text: str) -> dict[str, dict[str, str]]:
    """``{stage: {output path: md5}}`` for every stage output recorded in a ``dvc.lock`` text."""
    lock = yaml.safe_load(lock_text) or {}
    return {
        name: {out["path"]: str(out.get("md5", "")) for out in stage.get("outs") or []}
        for name, stage in (lock.get("stages") or {}).items()
    }


def _files_under(project_dir: Path, rel: str) -> list[str]:
    path = project_dir / rel
    if path.is_file():
        return [rel]
    if not path.is_dir():
        return []
    return sorted(p.relative_to(project_dir).as_posix() for p in path.rglob("*") if p.is_file())


def _rel(path: Path, project_dir: Path) -> str:
    try:
        return path.resolve().relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def build_record(
    project_dir: Path,
    params: Params,
    *,
    git: Mapping[str, str],
    lock_text: str,
    params_text: str,
    layout: PipelineLayout = PipelineLayout(),
) -> dict[str, Any]:
    """The lineage record of the model trained in ``project_dir`` (call it right after the pipeline ran).

    Args:
        project_dir: the project root (paths in the record are relative to it).
        params: the params the stages ran with.
        git: ``git.commit``, ``git.branch``, ``git.dirty`` of the checkout.
        lock_text: ``dvc.lock`` as the stages left it.
        params_text: ``params.yaml`` as the stages read it.
        layout: where the outputs are.

    Returns:
        A JSON-safe dict (``format`` ``hpmcore-lineage/1``).
    """
    project_dir = Path(project_dir)
    outputs = dvc_outputs(lock_text)
    dives = pq.read_table(project_dir / layout.dives, columns=["id", "split"]).to_pylist()
    split_of = {d["id"]: d["split"] for d in dives}
    decoded = pq.read_table(project_dir / layout.decoded / "manifest.parquet").to_pylist()
    features = pq.read_table(project_dir / layout.features / "manifest.parquet").to_pylist()
    skeletons = pq.read_table(project_dir / layout.pose / "skeletons.parquet")
    with_pose = set(skeletons.column("id").unique().to_pylist())
    used = [r["id"] for r in features if r["id"] in with_pose]
    root = params.data.root_path(project_dir)
    source = {r["id"]: (r["source_path"], r["source_hash"]) for r in decoded}
    dataset = [
        {
            "id": dive,
            "split": split_of.get(dive),
            "source": _rel(root / source[dive][0], project_dir),
            "sha256": source[dive][1],
        }
        for dive in used
    ]
    cache = dvc_cache_dir(project_dir)
    cached = {  # outputs in the DVC cache: the model's inputs (reports such as stats.json are `cache: false`)
        stage: {out: md5 for out, md5 in outs.items() if md5 and _cache_object(cache, md5).is_file()}
        for stage, outs in outputs.items()
        if stage in MODEL_STAGES
    }
    files = {
        rel: sha256_file(project_dir / rel)
        for outs in cached.values()
        for out in outs
        for rel in _files_under(project_dir, out)
    }
    first = features[0] if features else {}
    weights = {
        kind: {"path": first.get(f"{kind}_weights"), "sha256": first.get(f"{kind}_weights_sha256")}
        for kind in ("i3d", "static")
    }
    checkpoint = project_dir / layout.checkpoint
    return {
        "format": RECORD_FORMAT,
        "git": dict(git),
        "params": params_to_dict(params),
        "params_sha256": "sha256:" + hashlib.sha256(params_text.encode()).hexdigest(),
        "dvc_lock_sha256": "sha256:" + hashlib.sha256(lock_text.encode()).hexdigest(),
        "dvc_outputs": outputs,
        "dvc_cached_outputs": cached,
        "layout": dict(layout.__dict__),
        "data_root": _rel(root, project_dir),
        "dataset": dataset,
        "splits": {s: sorted(d["id"] for d in dataset if d["split"] == s) for s in ("train", "val", "test")},
        "skeletons": {
            "table": f"{layout.pose}/skeletons.parquet",
            "sha256": sha256_file(project_dir / layout.pose / "skeletons.parquet"),
            "metadata": pose_metadata(skeletons),
        },
        "features": {
            "manifest": f"{layout.features}/manifest.parquet",
            "sha256": sha256_file(project_dir / layout.features / "manifest.parquet"),
            "encoders": {"i3d": first.get("i3d_encoder"), "static": first.get("static_encoder")},
            "weights": weights,
            "device": first.get("device"),
            "precision": first.get("precision"),
        },
        "checkpoint": {"path": layout.checkpoint, "sha256": sha256_file(checkpoint)},
        "files": files,
    }


# --------------------------------------------------------------------------------------------------
# Resolving a model reference.


def resolve(registry: RegistryReader, ref: str) -> tuple[Any | None, str]:
    """``NAME@ALIAS``, ``NAME/VERSION`` or a run id → (the model version or ``None``, the run id).

    Raises:
        LineageError: nothing by that reference (the message lists what is registered).
    """

    def known() -> str:
        versions = registry.versions()
        listed = ", ".join(
            f"{v.name}/{v.version}" + (f" ({', '.join('@' + a for a in v.aliases)})" if v.aliases else "")
            for v in versions
        )
        return f"registered: {listed}" if listed else "no model is registered in this store"

    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = registry.by_alias(name, alias)
        if version is None:
            raise LineageError(f"no model {ref} ({known()})")
        return version, version.run_id
    if "/" in ref:
        name, number = ref.rsplit("/", 1)
        version = registry.version(name, number)
        if version is None:
            raise LineageError(f"no model version {ref} ({known()})")
        return version, version.run_id
    if registry.run(ref) is None:
        raise LineageError(f"{ref!r} is neither NAME@ALIAS, NAME/VERSION nor a run id ({known()})")
    version = next((v for v in registry.versions() if v.run_id == ref), None)
    return version, ref


def _record(registry: RegistryReader, run_id: str) -> dict[str, Any]:
    text = registry.artifact_text(run_id, RECORD_ARTIFACT)
    if text is None:
        raise LineageError(
            f"run {run_id} has no {RECORD_ARTIFACT} (registered before lineage records, or not a "
            "pipeline run that registered a model)"
        )
    return json.loads(text)


def show(registry: RegistryReader, ref: str) -> dict[str, Any]:
    """Everything recorded about model ``ref``: ``model`` (name, version, aliases, tags), ``run``
    (experiment, status, times), ``record`` (see :func:`build_record`) and ``environment``
    (the run's fingerprint, ``None`` if it has none)."""
    version, run_id = resolve(registry, ref)
    run = registry.run(run_id) or {}
    environment = registry.artifact_text(run_id, ENVIRONMENT_ARTIFACT)
    return {
        "model": None
        if version is None
        else {
            "name": version.name,
            "version": version.version,
            "aliases": list(version.aliases),
            "tags": version.tags,
            "created_ms": version.created_ms,
        },
        "run": {k: v for k, v in run.items() if k != "params"},
        "record": _record(registry, run_id),
        "environment": json.loads(environment) if environment else None,
    }


def format_show(lineage: Mapping[str, Any]) -> str:
    """The human-readable form of :func:`show`'s result (everything but the per-file hashes, which
    ``--json`` prints)."""
    rec, model, run, env = lineage["record"], lineage["model"], lineage["run"], lineage["environment"]
    lines = []
    if model:
        aliases = f" (@{', @'.join(model['aliases'])})" if model["aliases"] else ""
        lines.append(f"model      {model['name']}/{model['version']}{aliases}")
        decision = model["tags"].get("champion.decision")
        if decision:
            lines.append(f"champion   {decision}: {model['tags'].get('champion.reason', '')}")
    lines.append(f"run        {run.get('run_id')} (experiment {run.get('experiment')}, {run.get('status')})")
    git = rec["git"]
    dirty = " (uncommitted changes)" if git.get("git.dirty") == "true" else ""
    lines.append(f"git        {git.get('git.commit')} on {git.get('git.branch')}{dirty}")
    lines.append(f"checkpoint {rec['checkpoint']['path']}  {rec['checkpoint']['sha256']}")
    lines.append(f"dvc.lock   {rec['dvc_lock_sha256']}")
    for stage, outs in rec["dvc_outputs"].items():
        for path, md5 in outs.items():
            lines.append(f"  {stage:<9} {path}  md5 {md5}")
    splits = rec["splits"]
    counts = ", ".join(f"{s} {len(ids)}" for s, ids in splits.items())
    lines.append(f"dataset    {len(rec['dataset'])} dives from {rec['data_root']} ({counts})")
    for d in rec["dataset"]:
        lines.append(f"  {d['split']:<5} {d['id']}  {d['source']}  {d['sha256']}")
    sk = rec["skeletons"]
    meta = sk["metadata"]
    backend = meta.get("backend")
    detail = meta.get("model") if backend == "mmpose" else meta.get("source")
    lines.append(
        f"skeletons  {sk['table']}  {sk['sha256']}  ({backend}: {json.dumps(detail, sort_keys=True)})"
    )
    ft = rec["features"]
    lines.append(f"features   {ft['manifest']}  {ft['sha256']}  ({ft['device']}, {ft['precision']})")
    for kind, w in ft["weights"].items():
        lines.append(f"  {kind:<6} {ft['encoders'][kind]}: weights {w['path'] or '-'}  {w['sha256']}")
    lines.append(f"files      {len(rec['files'])} files of the stage outputs, each with its SHA-256 (--json)")
    lines.append("params     " + f"{rec['params_sha256']}")
    for key, value in sorted(flatten(rec["params"]).items()):
        lines.append(f"  {key} = {value}")
    if env:
        t, cpu, video = env["torch"], env["cpu"], env["video"]
        flags = " ".join(cpu["isa_flags"])
        lines.append(f"environment {cpu['model']}, {cpu['usable_cpus']} usable CPUs, ISA flags: {flags}")
        lines.append(
            f"  torch {t['version']} (CUDA {t['cuda']}, cuDNN {t['cudnn']}, {t['cpu_capability']}, "
            f"{t['num_threads']} threads), Python {env['python']['version']}, {env['platform']['platform']}"
        )
        lines.append(f"  {video['libx264']}, FFmpeg libavcodec {video['ffmpeg_libraries'].get('libavcodec')}")
    else:
        lines.append("environment (not recorded)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Verifying.


def dvc_cache_dir(project_dir: Path) -> Path:
    """The DVC cache of ``project_dir``: ``cache.dir`` of ``.dvc/config.local`` or ``.dvc/config``
    (relative to ``.dvc/``), else ``.dvc/cache``."""
    dvc_dir = Path(project_dir) / ".dvc"
    cache = dvc_dir / "cache"
    for name in ("config", "config.local"):  # later files win, as in DVC
        path = dvc_dir / name
        if not path.is_file():
            continue
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string("\n".join(line.strip() for line in path.read_text().splitlines()))
        except configparser.Error:
            continue
        if parser.has_option("cache", "dir"):
            cache = (dvc_dir / parser.get("cache", "dir")).resolve()
    return cache


def _cache_object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def _dvc_md5s(
    cache: Path, outputs: Mapping[str, Mapping[str, str]]
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """``{file: (md5, output)}`` for every file of the recorded outputs (directories through their
    ``.dir`` listing in the cache), and the outputs whose listing the cache lacks."""
    md5s: dict[str, tuple[str, str]] = {}
    unlisted = []
    for outs in outputs.values():
        for out, md5 in outs.items():
            if not md5.endswith(".dir"):
                md5s[out] = (md5, out)
                continue
            listing = _cache_object(cache, md5)
            if not listing.is_file():
                unlisted.append(out)
                continue
            for entry in json.loads(listing.read_text()):
                md5s[f"{out}/{entry['relpath']}"] = (entry["md5"], out)
    return md5s, unlisted


def _git_head(project_dir: Path) -> str | None:
    proc = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def verify(registry: RegistryReader, ref: str, project_dir: Path) -> Verification:
    """Check model ``ref``'s lineage record against the workspace ``project_dir`` and its DVC cache.

    A mismatch is any recorded file (stage outputs, the checkpoint, source videos, weights) that is
    missing or has another SHA-256 in the workspace, or whose object in the DVC cache is missing or has
    another content; ``params.yaml`` values that differ; and ``dvc.lock`` outputs that differ.
    """
    project_dir = Path(project_dir)
    version, run_id = resolve(registry, ref)
    rec = _record(registry, run_id)
    result = Verification(model=f"{version.name}/{version.version}" if version else run_id)
    cache = dvc_cache_dir(project_dir)
    md5s, unlisted = _dvc_md5s(cache, rec["dvc_cached_outputs"])
    for out in unlisted:
        result.mismatches.append(Mismatch(out, "the DVC cache has no listing of this output (dvc pull?)"))
    head = _git_head(project_dir)
    if head != rec["git"].get("git.commit"):
        result.notes.append(
            f"code: recorded at commit {rec['git'].get('git.commit')}, the workspace is at {head}"
        )
    env_text = registry.artifact_text(run_id, ENVIRONMENT_ARTIFACT)
    if env_text is not None:
        recorded_env, here = flatten(json.loads(env_text)), flatten(environment_fingerprint())
        differ = [
            f"{k}: {recorded_env.get(k)!r} -> {here.get(k)!r}"
            for k in sorted(recorded_env.keys() | here.keys())
            if recorded_env.get(k) != here.get(k) and k != "python.executable"
        ]
        if differ:
            result.notes.append(f"environment of the run vs this process: {'; '.join(differ)}")

    def check(rel: str, expected: str, digest: Any = sha256_file) -> None:
        path = project_dir / rel
        result.checked += 1
        md5, out = md5s.get(rel, (None, None))
        cached = None
        if md5 is not None:
            obj = _cache_object(cache, md5)
            cached = obj.is_file() and digest(obj) == expected
        if not path.exists():
            result.mismatches.append(Mismatch(rel, "missing from the workspace", cached, out))
            return
        actual = digest(path)
        if actual != expected:
            problem = f"{actual} in the workspace, recorded {expected}"
            result.mismatches.append(Mismatch(rel, problem, cached, out))
        elif md5 is not None and not cached:
            why = "missing from" if not _cache_object(cache, md5).is_file() else "different in"
            result.mismatches.append(Mismatch(rel, f"{why} the DVC cache (object {md5})", False, out))

    for rel, sha in sorted(rec["files"].items()):
        check(rel, sha)
    for dive in rec["dataset"]:
        if dive["source"] not in rec["files"]:  # a dataset root outside the DVC outputs
            check(dive["source"], dive["sha256"], source_hash)
    for weights in rec["features"]["weights"].values():
        if weights["path"]:
            check(weights["path"], weights["sha256"])
    pose_model = rec["skeletons"]["metadata"].get("model") or {}
    if pose_model.get("checkpoint") and pose_model.get("checkpoint_sha256"):
        check(pose_model["checkpoint"], pose_model["checkpoint_sha256"])

    params_path = project_dir / "params.yaml"
    recorded = flatten(rec["params"])
    current = flatten(yaml.safe_load(params_path.read_text()) or {}) if params_path.is_file() else {}
    changed = sorted(
        k for k in recorded if k in current and current[k] != recorded[k] and not k.startswith("retrain.")
    )
    if changed:
        diffs = ", ".join(f"{k}: {recorded[k]!r} -> {current[k]!r}" for k in changed[:10])
        more = f" (+{len(changed) - 10} more)" if len(changed) > 10 else ""
        result.mismatches.append(Mismatch("params.yaml", f"{len(changed)} values differ: {diffs}{more}"))
    lock_path = project_dir / "dvc.lock"
    current_outs = dvc_outputs(lock_path.read_text()) if lock_path.is_file() else {}
    lock_diff = [
        f"{path} ({stage})"
        for stage, outs in rec["dvc_cached_outputs"].items()
        for path, md5 in outs.items()
        if current_outs.get(stage, {}).get(path) != md5
    ]
    if lock_diff:
        result.mismatches.append(
            Mismatch("dvc.lock", f"outputs recorded differently: {', '.join(lock_diff)}")
        )
    return result


def format_verification(v: Verification) -> str:
    """One line per mismatch (file first), then the verdict."""
    lines = []
    for m in v.mismatches:
        hint = ""
        if m.restorable:
            hint = (
                f" (the DVC cache holds the recorded content: `dvc checkout --force {m.output}` restores it)"
            )
        lines.append(f"MISMATCH {m.path}: {m.problem}{hint}")
    lines += [f"note: {n}" for n in v.notes]
    verdict = "OK" if v.ok else f"FAILED: {len(v.mismatches)} mismatches"
    lines.append(f"{v.model}: {v.checked} files checked against the workspace and the DVC cache: {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Which models saw a dive.


def models_for_video(registry: RegistryReader, dive_id: str) -> list[dict[str, Any]]:
    """Every registered model version whose lineage record has dive ``dive_id`` in its train (trained),
    val (validated: epoch selection) or test (evaluated) split, oldest first."""
    out = []
    records: dict[str, dict[str, Any] | None] = {}
    for v in registry.versions():
        if v.run_id not in records:
            text = registry.artifact_text(v.run_id, RECORD_ARTIFACT)
            records[v.run_id] = json.loads(text) if text else None
        rec = records[v.run_id]
        if rec is None:
            continue
        for split, ids in rec["splits"].items():
            if dive_id in ids:
                out.append(
                    {
                        "model": f"{v.name}/{v.version}",
                        "aliases": list(v.aliases),
                        "role": ROLES[split],
                        "split": split,
                        "run_id": v.run_id,
                        "checkpoint_sha256": rec["checkpoint"]["sha256"],
                        "created_ms": v.created_ms,
                    }
                )
    return out
