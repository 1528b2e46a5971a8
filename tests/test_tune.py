"""The tuning entry point: validation only (test labels and features may be NaN or absent and nothing
changes), reproducible (seeded sampler, a study in SQLite that continues or refuses other settings), each
trial logged to a real MLflow store, the params.yaml snippet of the best trial."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from stage_outputs import dives, write_params, write_stage_outputs

from hpmcore.cli import main as cli_main
from hpmcore.config import ConfigError, EvalConfig, ModelConfig, Params, TrainConfig
from hpmcore.data.canonical import DatasetError, read_annotations
from hpmcore.training.bank import FeatureBank, FeatureBankError, synthetic_feature_bank
from hpmcore.training.frames import FrameBank, synthetic_frame_bank
from hpmcore.training.tune import (
    DEFAULT_SPACE,
    Dimension,
    TuneError,
    apply_overrides,
    check_space,
    load_space,
    main,
    params_snippet,
    tune,
    validation_bank,
)

optuna = pytest.importorskip("optuna")

TINY_DIMS = dict(i3d_dim=16, static_dim=12, num_frames=12, num_clips=3, clip_stride=4)
PARAMS = Params(
    seed=0,
    model=ModelConfig.tiny(use_skeleton=False),  # the HD-GCN is most of a tiny run's time
    train=TrainConfig(
        epochs=1,
        batch_size=4,
        pairing="any",
        dd_mode=True,
        val_exemplars=2,
        val_exemplar_mode="any",
        device="cpu",
    ),
    eval=EvalConfig(exemplars=3, exemplar_mode="any", num_voter_draws=2, device="cpu"),
)
SPACE = (
    Dimension("train.lr", "float", low=1e-4, high=1e-2, log=True),
    Dimension("model.contrastive_weight", "categorical", choices=(0.0, 1.0)),
    Dimension("train.epochs", "int", low=1, high=2),
)


def _bank() -> FeatureBank:
    return synthetic_feature_bank({"train": 10, "val": 5, "test": 6}, **TINY_DIMS)  # type: ignore[arg-type]


def _without_test_labels(bank: FeatureBank) -> FeatureBank:
    """The same bank, its test dives' labels and features all NaN."""
    nan = float("nan")
    videos = [
        v
        if bank.label(v.id)["split"] != "test"
        else replace(v, i3d=torch.full_like(v.i3d, nan), score=nan, difficulty=nan, dive_number="???")
        for v in bank.videos.values()
    ]
    splits = {i: bank.label(i)["split"] for i in bank.videos}
    return FeatureBank.from_videos(videos, splits, bank.dims)


def _trials(result) -> list[tuple]:
    return [(t.number, t.params, t.value, t.metrics["val_rho"]) for t in result.trials]


def test_tuning_never_reads_the_test_split() -> None:
    bank, blind = _bank(), _without_test_labels(_bank())
    kept = validation_bank(blind)
    assert kept.split_ids("test") == [] and kept.split_ids("val") == bank.split_ids("val")
    assert not any(i.startswith("test/") for i in kept.videos)
    with pytest.raises(FeatureBankError, match="test/0"):
        kept.label("test/0")
    a = tune(bank, PARAMS, trials=2, space=SPACE)
    b = tune(blind, PARAMS, trials=2, space=SPACE)
    assert _trials(a) == _trials(b) and a.snippet == b.snippet
    assert all(t.value is not None and -1 <= t.value <= 1 for t in a.trials)


def test_tuning_is_reproducible_and_prints_the_snippet() -> None:
    a = tune(_bank(), PARAMS, trials=3, space=SPACE, objective="rho")
    b = tune(_bank(), PARAMS, trials=3, space=SPACE, objective="rho")
    assert _trials(a) == _trials(b)
    assert a.best.value == max(t.value for t in a.trials)
    assert a.best.metrics["objective"] == a.best.metrics["val_rho"] == a.best.value
    snippet = yaml.safe_load(a.snippet)
    assert snippet == {
        "model": {"contrastive_weight": a.best.params["model.contrastive_weight"]},
        "train": {"lr": a.best.params["train.lr"], "epochs": a.best.params["train.epochs"]},
    }
    # another sampler seed draws other params
    c = tune(_bank(), PARAMS, trials=3, space=SPACE, objective="rho", sampler_seed=5)
    assert [t.params for t in c.trials] != [t.params for t in a.trials]


def test_study_continues_and_refuses_other_settings(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = tune(_bank(), PARAMS, trials=1, space=SPACE, storage=storage, study_name="s")
    more = tune(_bank(), PARAMS, trials=1, space=SPACE, storage=storage, study_name="s")
    assert [t.number for t in more.trials] == [1] and more.trials[0].params != first.trials[0].params
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2
    with pytest.raises(TuneError, match=r"other settings \(objective\)"):
        tune(_bank(), PARAMS, trials=1, space=SPACE, storage=storage, study_name="s", objective="rho")
    other = apply_overrides(PARAMS, {"model.tau": 0.2})
    with pytest.raises(TuneError, match=r"base\.model\.tau"):
        tune(_bank(), other, trials=1, space=SPACE, storage=storage, study_name="s")
    relabelled = synthetic_feature_bank({"train": 10, "val": 5, "test": 6}, seed=3, **TINY_DIMS)  # type: ignore[arg-type]
    with pytest.raises(TuneError, match="data"):
        tune(relabelled, PARAMS, trials=1, space=SPACE, storage=storage, study_name="s")
    again = tune(_bank(), other, trials=1, space=SPACE, storage=storage, study_name="s", restart=True)
    assert [t.number for t in again.trials] == [0]


def test_search_space_and_overrides_are_checked(tmp_path: Path) -> None:
    assert check_space(DEFAULT_SPACE) == DEFAULT_SPACE
    path = tmp_path / "space.yaml"
    path.write_text(
        "train.lr: {low: 0.0001, high: 0.01, log: true}\n"
        "train.epochs: {low: 4, high: 12, step: 4}\n"
        "model.pose_fusion: {choices: [bias, tokens]}\n"
    )
    space = load_space(path)
    assert [(d.key, d.kind) for d in space] == [
        ("train.lr", "float"), ("train.epochs", "int"), ("model.pose_fusion", "categorical")
    ]  # fmt: skip
    for text, message in [
        ("train.device: {choices: [cpu]}", "train.device is not a tunable"),
        ("model.i3d_dim: {choices: [8]}", "model.i3d_dim is not a tunable"),
        ("eval.exemplars: {low: 1, high: 5}", "eval.exemplars is not a tunable"),
        ("train.lr: {low: 0, high: 0.1, log: true}", "log range needs low > 0"),
        ("train.lr: {low: 0.1, high: 0.01}", "low < high"),
        ("train.lr: {choices: []}", "non-empty list"),
        ("train.lr: 0.1", "expected a mapping"),
        ("[1, 2]", "non-empty mapping"),
    ]:
        path.write_text(text)
        with pytest.raises(TuneError, match=message):
            load_space(path)
    assert apply_overrides(PARAMS, {"train.weight_decay": 0, "model.dim": 64}).train.weight_decay == 0.0
    with pytest.raises(ConfigError, match=r"model\.dim"):
        apply_overrides(PARAMS, {"model.dim": 33})  # not divisible by 2 heads
    assert params_snippet({"train.lr": 0.001, "model.dim": 64}) == "model:\n  dim: 64\ntrain:\n  lr: 0.001\n"
    with pytest.raises(TuneError, match="objective"):
        tune(_bank(), PARAMS, trials=1, space=SPACE, objective="test_rho")


def test_tune_command_on_pipeline_outputs_whose_test_labels_are_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command reads only the train/val rows of dives.parquet: with NaN test scores (which the
    canonical reader refuses, so any stage that reads test labels would fail) and no test features it
    runs, logs each trial to MLflow and prints the snippet."""
    spec = dives(train=8, val=3, test=4)
    paths = write_stage_outputs(tmp_path, spec)
    table = pq.read_table(paths["dives"])
    is_test = pc.equal(table.column("split"), "test")
    nan = pa.array([math.nan] * table.num_rows, pa.float64())
    scores = pc.if_else(is_test, nan, table.column("final_score"))
    table = table.set_column(table.schema.get_field_index("final_score"), "final_score", scores)
    pq.write_table(table, paths["dives"])
    with pytest.raises(DatasetError, match="final_score nan"):
        read_annotations(paths["dives"])
    features = pq.read_table(paths["features"] / "manifest.parquet")
    pq.write_table(features.filter(pc.invert(pc.starts_with(features.column("id"), "test/"))),
                   paths["features"] / "manifest.parquet")  # fmt: skip
    params = write_params(tmp_path / "params.yaml", model={"use_skeleton": False})
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 0.0005, high: 0.005, log: true}\n")
    state = tmp_path / "state"
    args = ["--trials", "2", "--params", str(params), "--space", str(space), "--state-dir", str(state),
            "--study", "tiny", "--dives", str(paths["dives"]), "--decoded", str(paths["decoded"]),
            "--pose", str(paths["pose"]), "--features", str(paths["features"])]  # fmt: skip
    assert cli_main(["tune", *args]) == 0  # `hpmcore tune ...`
    out = capsys.readouterr().out
    assert out.startswith("# best of study 'tiny': trial ") and "train:\n  lr: " in out
    lr = yaml.safe_load(out)["train"]["lr"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    exp = client.get_experiment_by_name("hpmcore-tune")
    runs = client.search_runs([exp.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"tiny-trial-0", "tiny-trial-1", "tiny-best"}
    trial = by_name["tiny-trial-0"]
    assert trial.data.tags["tune.study"] == "tiny" and "val_exec_rho" in trial.data.metrics
    assert "train.lr" in trial.data.params and "objective" in trial.data.metrics
    assert float(by_name["tiny-best"].data.params["train.lr"]) == pytest.approx(lr)
    assert (state / "optuna.db").is_file()
    # the same command again continues the study (trials 2 and 3); other settings are refused (exit 2)
    assert main(args) == 0
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{state / 'optuna.db'}").trials) == 4
    capsys.readouterr()
    assert main([*args, "--objective", "rho"]) == 2
    assert "other settings (objective)" in capsys.readouterr().err


def test_tuning_end_to_end_on_a_frame_bank() -> None:
    """train.mode end_to_end: the trials train the train stage's model (encoders and heads) on frames."""
    frames = synthetic_frame_bank({"train": 4, "val": 2, "test": 2}, height=20, width=16, crop_size=16)
    kept = validation_bank(frames)
    assert isinstance(kept, FrameBank) and kept.encoders == frames.encoders and kept.split_ids("test") == []
    params = replace(
        PARAMS,
        train=replace(PARAMS.train, mode="end_to_end", batch_size=2, num_workers=0),
        eval=replace(PARAMS.eval, exemplars=2),
    )
    result = tune(frames, params, trials=1, space=(Dimension("train.lr", "float", low=1e-4, high=1e-3),))
    assert result.best.number == 0 and result.best.metrics["best_epochs"] == [0]
