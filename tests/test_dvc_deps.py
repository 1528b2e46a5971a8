"""``dvc.yaml`` says what each stage depends on; these tests hold it to the code.

* Every repository file a stage command imports (its import closure: ``import`` statements anywhere in
  the script and, transitively, in the modules it reaches, function-level imports included, ``if
  TYPE_CHECKING:`` blocks left out; parent packages' ``__init__.py`` included) must be covered by the
  stage's ``deps`` (a folder dep covers the files under it). Otherwise a change to, say, how voters are
  drawn would leave ``dvc repro`` saying "up to date". When you move or add modules, this test lists
  what to add.
* Speed-only params (``eval.pair_batch_size``, ``eval.encode_batch_size``, ``features.batch_size``,
  ``train.num_workers``, ``train.activation_checkpointing``) are not stage params,
  so changing one reruns nothing; a real ``dvc status`` in a copy of the project
  checks that, and that changing a param that matters does mark its stage.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pipeline_project import PROJECT, copy_pipeline, project_env, set_params

from hpmcore.config import Params

PIPELINES = [PROJECT / "dvc.yaml", PROJECT / "compare" / "dvc.yaml"]
SPEED_ONLY = (
    "eval.pair_batch_size",
    "eval.encode_batch_size",
    "features.batch_size",
    "train.num_workers",
    "train.activation_checkpointing",
)
"""Params that change how fast a stage runs, not what it computes: never a stage param."""


def _module_file(name: str, bases: list[Path]) -> Path | None:
    for base in bases:
        path = base.joinpath(*name.split("."))
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
    return None


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """Module names a file imports (``from a import b`` gives ``a`` and ``a.b``), TYPE_CHECKING skipped."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_closure(script: Path) -> set[Path]:
    """The repository files ``python script`` can import (the script's folder first on ``sys.path``)."""
    bases = [script.parent, PROJECT]
    todo, seen = [script], {script}
    while todo:
        path = todo.pop()
        rel = path.relative_to(PROJECT).with_suffix("")
        package = ".".join(rel.parts[:-1])
        if path.parent == script.parent:
            package = ""
        for name in _imported_names(ast.parse(path.read_text(), str(path)), package):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the parents' __init__.py run first
                found = _module_file(".".join(parts[:i]), bases)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return seen


def _stages() -> list[tuple[str, Path, dict]]:
    out = []
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            out.append((f"{pipeline.relative_to(PROJECT)}:{name}", pipeline, stage))
    return out


def _code_deps(pipeline: Path, stage: dict) -> list[Path]:
    workdir = (pipeline.parent / stage.get("wdir", ".")).resolve()
    deps = [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]
    return [(workdir / d).resolve() for d in deps if "${" not in d]


@pytest.mark.parametrize(("label", "pipeline", "stage"), _stages(), ids=[s[0] for s in _stages()])
def test_stage_deps_cover_the_import_closure(label: str, pipeline: Path, stage: dict) -> None:
    workdir = (pipeline.parent / stage.get("wdir", ".")).resolve()
    scripts = [workdir / token for token in stage["cmd"].split() if token.endswith(".py")]
    assert scripts and all(s.is_file() for s in scripts), f"{label}: no stage script in {stage['cmd']!r}"
    deps = _code_deps(pipeline, stage)
    missing = sorted(
        str(f.relative_to(PROJECT))
        for script in scripts
        for f in import_closure(script)
        if not any(f == d or d in f.parents for d in deps)
    )
    assert not missing, (
        f"{label}: deps miss files its command imports (add them to {pipeline.name}): {missing}"
    )


def test_the_closure_follows_imports() -> None:
    """The walker itself: the prepare stage reaches the readers, the safe unpickler and the shared
    split-file checks (an import inside a function counts), but nothing under a TYPE_CHECKING guard."""
    closure = {str(p.relative_to(PROJECT)) for p in import_closure(PROJECT / "stages/prepare.py")}
    for name in (
        "stages/prepare.py",
        "hpmcore/__init__.py",
        "hpmcore/data/__init__.py",
        "hpmcore/data/finediving.py",
        "hpmcore/data/safe_pickle.py",
        "hpmcore/data/split_files.py",
        "hpmcore/config.py",
    ):
        assert name in closure, name
    assert "hpmcore/data/render.py" not in closure  # synth's, not prepare's


STAGE_SECTIONS = {
    "dvc.yaml:synth": ("synth",),
    "dvc.yaml:prepare": ("data",),
    "dvc.yaml:decode": ("decode",),
    "dvc.yaml:pose": ("pose",),
    "dvc.yaml:features": ("features",),
    "dvc.yaml:train": ("model", "train"),
    "dvc.yaml:evaluate": ("model", "eval"),
    "compare/dvc.yaml:compare": ("model", "train", "eval", "core", "compare"),
}
"""The params.yaml sections each stage reads: all their keys but the speed-only ones are its params."""


@pytest.mark.parametrize(("label", "pipeline", "stage"), _stages(), ids=[s[0] for s in _stages()])
def test_stage_params_are_listed_key_by_key(label: str, pipeline: Path, stage: dict) -> None:
    """Every key of the sections a stage reads (as ``hpmcore/config.py`` defines them today) is listed,
    no speed-only key is, no section is listed whole (it would include the speed-only keys), and no
    listed key is unknown (DVC would refuse the pipeline)."""
    hints = typing.get_type_hints(Params)
    params = {p for entry in stage.get("params", []) for p in ([entry] if isinstance(entry, str) else entry)}
    assert not params & set(SPEED_ONLY), f"{label} lists a speed-only param"
    whole = {name for name, tp in hints.items() if dataclasses.is_dataclass(tp)}
    assert not params & whole, f"{label} lists a whole section"
    assert label in STAGE_SECTIONS, f"{label}: say in STAGE_SECTIONS which params.yaml sections it reads"
    for section in STAGE_SECTIONS[label]:
        fields = [f for f in dataclasses.fields(hints[section]) if not f.metadata.get("from_data")]
        keys = {f"{section}.{f.name}" for f in fields} - set(SPEED_ONLY)  # from_data: read from the features
        assert keys <= params, f"{label}: params miss {sorted(keys - params)}"
    known = set(hints) | {f"{n}.{f.name}" for n in whole for f in dataclasses.fields(hints[n])}
    assert params <= known, (
        f"{label} lists params that hpmcore/config.py does not have: {sorted(params - known)}"
    )


def _dvc(project: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=project_env(project.parent),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _stale(project: Path) -> set[str]:
    """Stage names ``dvc status`` reports as changed."""
    out = _dvc(project, "status")
    return {m.group(2) for m in re.finditer(r"^([\w./-]+dvc\.yaml:)?(\w+):\s*$", out, flags=re.MULTILINE)}


@pytest.mark.slow
def test_speed_only_params_do_not_rerun_a_stage(tmp_path: Path) -> None:
    """A copy of the project whose stage outputs are placeholders recorded with ``dvc commit`` (no
    stage runs): then only real params make ``dvc status`` report a stage."""
    project = copy_pipeline(tmp_path / "project")
    values = {"data.root": yaml.safe_load((project / "params.yaml").read_text())["data"]["root"]}
    for pipeline in (project / "dvc.yaml", project / "compare" / "dvc.yaml"):
        spec = yaml.safe_load(pipeline.read_text())
        for var in spec.get("vars", []):
            values.update(var)
        for stage in spec["stages"].values():
            workdir = pipeline.parent / stage.get("wdir", ".")
            kinds = ("deps", "outs", "metrics", "plots")
            for entry in [e for kind in kinds for e in stage.get(kind, [])]:
                name = next(iter(entry)) if isinstance(entry, dict) else entry
                path = workdir / re.sub(r"\$\{([\w.]+)\}", lambda m: str(values[m.group(1)]), name)
                if path.exists():
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix:
                    path.write_text("{}" if path.suffix == ".json" else "placeholder\n")
                else:
                    path.mkdir()
                    (path / "placeholder").write_text("placeholder\n")
    _dvc(project, "commit", "--force")
    assert _stale(project) == set()

    set_params(project, eval={"pair_batch_size": 7, "encode_batch_size": 3}, features={"batch_size": 2})
    assert _stale(project) == set(), "a speed-only param marked a stage as changed"

    set_params(project, eval={"exemplars": 3})
    assert _stale(project) == {"evaluate", "compare"}
    set_params(project, model={"tau": 0.2})
    assert _stale(project) == {"train", "evaluate", "compare"}
