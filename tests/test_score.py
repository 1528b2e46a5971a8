"""``hpmcore score`` and the servable registered model, for real: a tiny synthetic pipeline run by its own
stage scripts, the model registered in a real MLflow store by the flow's registration code, then scored
through the CLI (mp4, JPEG frame folder with an MPII JSON list, FineDiving-Pose npz, batch), through
``mlflow.pyfunc`` and through ``mlflow models serve`` on a loopback port."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from hpmcore.cli import main as cli
from hpmcore.config import load_params
from hpmcore.data.canonical import read_annotations
from hpmcore.data.finediving import linspace_indices
from hpmcore.extraction.video import read_frames
from hpmcore.models.segmentation import gt_transitions
from hpmcore.serving.bundle import SCORING_BUNDLE, ScoringBundle, write_bundle
from hpmcore.serving.score import SCORE_JSON_SCHEMA, Scorer, ScoringError
from hpmcore.tracking import mlflow as tracking

PROJECT = Path(__file__).resolve().parents[1]
T = 16
"""Sampled frames of the tiny pipeline (decode.num_frames)."""

pytestmark = pytest.mark.slow


def _tiny_params() -> dict[str, Any]:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["synth"].update(
        seed=5, num_dives=20, width=64, height=64, min_frames=30, max_frames=40, test_fraction=0.25
    )
    params["decode"].update(num_frames=T, min_source_frames=8)
    params["features"].update(clip_len=8, clip_stride=4, batch_size=4, device="cpu")
    params["model"].update(
        dim=16, heads=2, decoder_depth=1, mlp_ratio=2, reducer_extra=8, fix_size=2, gru_hidden=8,
        skeleton_channels=8,
    )  # fmt: skip
    params["train"].update(
        epochs=2, batch_size=4, pairing="any", val_exemplars=2, val_exemplar_mode="any", device="cpu",
        num_workers=0,
    )  # fmt: skip
    params["eval"].update(exemplars=3, exemplar_mode="any", num_voter_draws=2, device="cpu")
    return params


def _stage(project: Path, name: str, *args: str) -> None:
    """Run ``stages/<name>.py``'s ``main`` (what ``dvc repro`` runs) in this process."""
    sys.path.insert(0, str(PROJECT / "stages"))
    try:
        spec = importlib.util.spec_from_file_location(f"_stage_{name}", PROJECT / "stages" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main(["--params", str(project / "params.yaml"), *args]) == 0, name
    finally:
        sys.path.remove(str(PROJECT / "stages"))


def _bank_args(project: Path) -> list[str]:
    d = project / "data"
    return [
        *("--dives", str(d / "prepared/dives.parquet"), "--decoded", str(d / "decoded")),
        *("--pose", str(d / "pose"), "--features", str(d / "features")),
    ]


def _model_stages(project: Path) -> None:
    _stage(project, "train", *_bank_args(project), "--out", str(project / "data/model"))
    _stage(
        project, "evaluate", *_bank_args(project), "--model", str(project / "data/model"),
        "--out", str(project / "data/eval"),
    )  # fmt: skip


@dataclass(frozen=True)
class Scored:
    """A tiny project run through the pipeline, its model registered as ``hpmcore@champion``."""

    project: Path
    state: Path
    uri: str
    test_ids: list[str]

    def video(self, dive_id: str) -> Path:
        name, index = dive_id.split("/")
        return self.project / "data/synth/videos" / f"{name}_{index}.mp4"

    def dive(self, dive_id: str) -> dict[str, Any]:
        return next(
            r
            for r in read_annotations(self.project / "data/prepared/dives.parquet").to_pylist()
            if r["id"] == dive_id
        )

    def pose(self, dive_id: str, out: Path) -> Path:
        """The dive's skeleton as a canonical skeleton Parquet of one dive (the synthetic ground truth)."""
        table = pq.read_table(self.project / "data/synth/skeletons.parquet")
        pq.write_table(table.filter(pc.equal(table["id"], dive_id)), out)
        return out

    def predicted(self, dive_id: str) -> float:
        rows = pacsv.read_csv(self.project / "data/eval/predictions.csv").to_pylist()
        return next(r["predicted_score"] for r in rows if r["id"] == dive_id)

    def cli(self, *args: str) -> list[str]:
        return [*args, "--tracking-uri", self.uri, "--device", "cpu"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scored]:
    from flows.pipeline import log_scoring_model  # the flow's own registration code

    project = tmp_path_factory.mktemp("score") / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    d = project / "data"
    _stage(project, "synth", "--out", str(d / "synth"))
    _stage(project, "prepare", "--out", str(d / "prepared"))
    _stage(project, "decode", "--dives", str(d / "prepared/dives.parquet"), "--out", str(d / "decoded"))
    _stage(
        project, "pose", "--dives", str(d / "prepared/dives.parquet"), "--decoded", str(d / "decoded"),
        "--out", str(d / "pose"),
    )  # fmt: skip
    _stage(project, "features", "--decoded", str(d / "decoded"), "--out", str(d / "features"))
    _model_stages(project)

    state = project.parent / "state"
    registry = tracking.Registry.at(state)
    with tracking.start_run(state, "score-test", run_name="register"):
        model_uri = log_scoring_model(project, load_params(project / "params.yaml"))
    version = registry.register(model_uri, "hpmcore", {"checkpoint.sha256": "test"})
    registry.set_alias("hpmcore", "champion", version.version)
    dives = read_annotations(d / "prepared/dives.parquet").to_pylist()
    test_ids = [r["id"] for r in dives if r["split"] == "test"]
    yield Scored(project, state, tracking.tracking_uri(state), test_ids)


def _score_json(scored: Scored, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert cli(["score", *scored.cli(*args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------------------
# One code path: the pipeline's prediction, the JSON schema, the settings of the version


def test_score_of_a_test_dive_is_the_pipelines_prediction(
    scored: Scored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dive_id = scored.test_ids[0]
    dive = scored.dive(dive_id)
    pose = scored.pose(dive_id, tmp_path / "pose.parquet")
    doc = _score_json(
        scored, capsys, str(scored.video(dive_id)), "--dive-number", dive["dive_number"], "--pose", str(pose),
        "--id", dive_id,
    )  # fmt: skip
    jsonschema.validate(doc, SCORE_JSON_SCHEMA)
    # the same decode, pose, features, model, exemplars and voters as the evaluate stage
    assert doc["score"] == pytest.approx(scored.predicted(dive_id), rel=1e-5)
    decoded = pq.read_table(scored.project / "data/decoded/manifest.parquet").to_pylist()
    assert doc["sampled_frames"] == next(r["indices"] for r in decoded if r["id"] == dive_id)
    assert doc["difficulty"] == dive["difficulty"] and doc["voters"]["query_id"] == dive_id
    # the parts add up; boundaries are sampled source frames, in order, with seconds at 25 fps
    total = doc["baseline"] + sum(s["contribution"] for s in doc["stages"])
    assert total == pytest.approx(doc["score"], rel=1e-6)
    assert doc["score"] == pytest.approx(np.mean([d["score"] for d in doc["voters"]["draws"]]))
    first, second = doc["boundaries"]
    assert 0 < first["sampled_index"] < second["sampled_index"] <= T - 1
    assert first["frame"] == doc["sampled_frames"][first["sampled_index"]]
    assert first["seconds"] == pytest.approx(first["frame"] / 25.0)
    stages = doc["stages"]
    assert stages[0]["start_frame"] == 0 and stages[2]["end_frame"] == dive["num_frames"] - 1
    assert stages[1]["start_frame"] == first["frame"] and stages[0]["end_frame"] == first["frame"] - 1
    assert doc["model"]["ref"] == "hpmcore/1" and doc["model"]["train_mode"] == "cached"

    # without --id the voters are drawn for the video's content hash: the same every time
    again = _score_json(
        scored, capsys, str(scored.video(dive_id)), "--dive-number", dive["dive_number"], "--pose", str(pose)
    )
    assert again["voters"]["query_id"] == again["source"]["sha256"]
    assert again == _score_json(
        scored, capsys, str(scored.video(dive_id)), "--dive-number", dive["dive_number"], "--pose", str(pose)
    )

    capsys.readouterr()
    assert (
        cli(
            [
                "score",
                *scored.cli(
                    str(scored.video(dive_id)), "--dive-number", dive["dive_number"], "--pose", str(pose)
                ),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "predicted score" in text and "take-off -> flight: frame" in text and "exemplar baseline" in text


def test_scoring_reads_the_settings_of_the_version_not_params_yaml(
    scored: Scored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dive_id = scored.test_ids[1]
    dive = scored.dive(dive_id)
    project = tmp_path / "elsewhere"
    project.mkdir()
    params = _tiny_params()
    params["decode"].update(num_frames=48, width=64, height=64)
    params["features"].update(clip_len=16, clip_stride=10, init_seed=7)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    pose = scored.pose(dive_id, tmp_path / "pose.parquet")
    doc = _score_json(
        scored, capsys, str(scored.video(dive_id)), "--dive-number", dive["dive_number"], "--pose", str(pose),
        "--id", dive_id, "--project-dir", str(project),
    )  # fmt: skip
    assert len(doc["sampled_frames"]) == T == doc["model"]["num_frames"]
    assert doc["score"] == pytest.approx(scored.predicted(dive_id), rel=1e-5)


def test_probe_refuses_encoders_other_than_the_recorded_ones(scored: Scored, tmp_path: Path) -> None:
    bundle_dir = tmp_path / "bundle"
    registry = tracking.Registry(scored.uri)
    shutil.copytree(
        registry.download_model("hpmcore", "1", tmp_path / "dl") / "data" / SCORING_BUNDLE, bundle_dir
    )
    Scorer(ScoringBundle.load(bundle_dir), device="cpu")  # as recorded: the probe matches
    settings = json.loads((bundle_dir / "scoring.json").read_text())
    settings["features"]["init_seed"] = 1  # encoders other than those that computed the features
    (bundle_dir / "scoring.json").write_text(json.dumps(settings))
    with pytest.raises(ScoringError, match="re-encoding the probe"):
        Scorer(ScoringBundle.load(bundle_dir), device="cpu")


# ---------------------------------------------------------------------------------------------------------
# Other inputs: JPEG frame folder + MPII JSON, FineDiving-Pose npz, a batch with plots


def _frame_folder(video: Path, out: Path, first: int = 1) -> int:
    """The mp4's frames as FineDiving-style JPEGs ``<first + i:05d>.jpg``; returns the frame count."""
    import decord

    n = len(decord.VideoReader(str(video)))
    frames = read_frames(video, np.arange(n), 64, 64)
    out.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(out / f"{first + i:05d}.jpg", quality=95)
    return n


def _mpii_json(scored: Scored, dive_id: str, out: Path, drop: int = 0) -> Path:
    """The dive's skeleton as an MPII-style JSON list, one entry per source frame (minus ``drop``)."""
    table = pq.read_table(scored.project / "data/synth/skeletons.parquet")
    rows = table.filter(pc.equal(table["id"], dive_id)).sort_by(
        [("frame", "ascending"), ("joint", "ascending")]
    )
    x, y = rows["x"].to_numpy().reshape(-1, 16), rows["y"].to_numpy().reshape(-1, 16)
    conf = rows["confidence"].to_numpy().reshape(-1, 16)
    entries = [
        {
            "image": f"{i + 1:05d}.jpg",
            "joints": np.stack([x[i], y[i]], 1).tolist(),
            "joints_vis": (conf[i] > 0).astype(int).tolist(),
        }
        for i in range(len(x) - drop)
    ]
    out.write_text(json.dumps(entries))
    return out


def test_jpeg_frame_folder_with_an_mpii_json_list(
    scored: Scored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dive_id = scored.test_ids[0]
    dive = scored.dive(dive_id)
    n = _frame_folder(scored.video(dive_id), tmp_path / "frames")
    assert n == dive["num_frames"]
    pose = _mpii_json(scored, dive_id, tmp_path / "pose.json")
    plot = tmp_path / "plot.png"
    doc = _score_json(
        scored, capsys, str(tmp_path / "frames"), "--dive-number", dive["dive_number"], "--pose", str(pose),
        "--fps", "25", "--plot", str(plot),
    )  # fmt: skip
    jsonschema.validate(doc, SCORE_JSON_SCHEMA)
    assert doc["source"]["kind"] == "frames" and doc["source"]["first_frame"] == 1
    assert doc["pose"] == {"source": "file", "file": str(pose), "format": "mpii-json"}
    # frames are the JPEG numbers: the mp4's frame i is JPEG i + 1
    expected = (linspace_indices(0, n - 1, T) + 1).tolist()
    assert doc["sampled_frames"] == expected
    assert doc["stages"][0]["start_frame"] == 1 and doc["stages"][2]["end_frame"] == n
    for b in doc["boundaries"]:
        assert b["seconds"] == pytest.approx((b["frame"] - 1) / 25.0)
    assert np.isfinite(doc["score"])
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 400


def test_finediving_pose_npz(scored: Scored, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dive_id = scored.test_ids[2]
    dive = scored.dive(dive_id)
    table = pq.read_table(scored.project / "data/synth/skeletons.parquet")
    rows = table.filter(pc.equal(table["id"], dive_id)).sort_by(
        [("frame", "ascending"), ("joint", "ascending")]
    )
    xy = np.stack([rows["x"].to_numpy(), rows["y"].to_numpy(), rows["confidence"].to_numpy()], 1)
    dense = xy.reshape(dive["num_frames"], 16, 3)
    pred = dense[linspace_indices(0, dive["num_frames"] - 1, 96)].astype(np.float32)  # (96, 16, 3)
    np.savez(tmp_path / "pred_comp_1.npz", pred=pred)
    doc = _score_json(
        scored, capsys, str(scored.video(dive_id)), "--dive-number", dive["dive_number"],
        "--pose", str(tmp_path / "pred_comp_1.npz"), "--id", dive_id,
    )  # fmt: skip
    assert doc["pose"]["format"] == "finediving-npz"
    # the npz holds the ground truth at 96 frames: interpolated back to the 16 sampled frames, the same pose
    assert doc["score"] == pytest.approx(scored.predicted(dive_id), rel=1e-3)


def test_batch_over_a_folder_with_a_dives_csv_pose_folder_and_plots(
    scored: Scored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder, poses = tmp_path / "videos", tmp_path / "poses"
    folder.mkdir()
    poses.mkdir()
    ids = scored.test_ids[:2]
    lines = ["video,dive_number,id"]
    for dive_id in ids:
        video = shutil.copy(scored.video(dive_id), folder)
        scored.pose(dive_id, poses / f"{Path(video).stem}.parquet")
        lines.append(f"{Path(video).name},{scored.dive(dive_id)['dive_number']},{dive_id}")
    (tmp_path / "dives.csv").write_text("\n".join(lines) + "\n")
    docs = _score_json(
        scored, capsys, str(folder), "--dives", str(tmp_path / "dives.csv"), "--pose", str(poses),
        "--plot", str(tmp_path / "plots"),
    )  # fmt: skip
    assert [d["voters"]["query_id"] for d in docs] == sorted(ids, key=lambda i: scored.video(i).name)
    for doc in docs:
        jsonschema.validate(doc, SCORE_JSON_SCHEMA)
        assert doc["score"] == pytest.approx(scored.predicted(doc["voters"]["query_id"]), rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        f"{scored.video(i).stem}.png" for i in ids
    )


# ---------------------------------------------------------------------------------------------------------
# Clear errors: exit 2, a message naming the file or value, nothing written


def _fails(scored: Scored, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert cli(["score", *scored.cli(*args)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_bad_inputs_exit_2_naming_the_problem_and_write_nothing(
    scored: Scored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dive_id = scored.test_ids[0]
    dive = scored.dive(dive_id)
    video, plot = str(scored.video(dive_id)), tmp_path / "plot.png"
    pose = str(scored.pose(dive_id, tmp_path / "pose.parquet"))
    known = ScoringBundle.load(
        tracking.Registry(scored.uri).download_model("hpmcore", "1", tmp_path / "dl")
        / "data"
        / SCORING_BUNDLE
    ).dive_numbers

    err = _fails(scored, capsys, video, "--dive-number", "999z", "--pose", pose, "--plot", str(plot))
    assert "unknown dive number '999z'" in err and all(dn in err for dn in known)

    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    err = _fails(
        scored, capsys, str(text), "--dive-number", dive["dive_number"], "--pose", pose, "--plot", str(plot)
    )
    assert str(text) in err and "cannot open as a video" in err

    short = _mpii_json(scored, dive_id, tmp_path / "short.json", drop=3)
    err = _fails(scored, capsys, video, "--dive-number", dive["dive_number"], "--pose", str(short))
    assert str(short) in err and f"the video has {dive['num_frames']} frames" in err

    other = scored.test_ids[1]  # another dive's skeleton: another frame count
    assert scored.dive(other)["num_frames"] != dive["num_frames"]
    wrong = scored.pose(other, tmp_path / "other.parquet")
    err = _fails(scored, capsys, video, "--dive-number", dive["dive_number"], "--pose", str(wrong))
    assert str(wrong) in err and "do not match the video's" in err

    err = _fails(scored, capsys, video, "--dive-number", dive["dive_number"])  # annotations model, no --pose
    assert "--pose FILE" in err

    err = _fails(
        scored, capsys, video, "--dive-number", dive["dive_number"], "--pose", pose, "--model", "hpmcore@nope"
    )
    assert "no model hpmcore@nope" in err and "hpmcore/1" in err
    assert not plot.exists() and not list(tmp_path.glob(".plot*"))


# ---------------------------------------------------------------------------------------------------------
# The registered model as MLflow users use it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn and its worker), SIGKILL after 30 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_mlflow_models_serve_answers_with_the_librarys_score(scored: Scored, tmp_path: Path) -> None:
    import mlflow.pyfunc

    dive_id = scored.test_ids[0]
    dive = scored.dive(dive_id)
    pose = scored.pose(dive_id, tmp_path / "pose.parquet")
    bundle_dir = (
        tracking.Registry(scored.uri).download_model("hpmcore", "1", tmp_path / "dl")
        / "data"
        / SCORING_BUNDLE
    )
    expected = Scorer(ScoringBundle.load(bundle_dir), device="cpu").score(
        scored.video(dive_id), dive["dive_number"], pose=pose, query_id=dive_id
    )
    row = {
        "video": base64.b64encode(scored.video(dive_id).read_bytes()).decode(),
        "dive_number": dive["dive_number"],
        "pose": base64.b64encode(pose.read_bytes()).decode(),
        "pose_format": "parquet",
        "query_id": dive_id,
    }

    # the loaded pyfunc (what `mlflow models serve` runs), with paths instead of bytes
    mlflow.set_tracking_uri(scored.uri)
    model = mlflow.pyfunc.load_model("models:/hpmcore@champion")
    out = model.predict(
        __import__("pandas").DataFrame(
            [
                {
                    "video_path": str(scored.video(dive_id)),
                    "dive_number": dive["dive_number"],
                    "pose_path": str(pose),
                    "query_id": dive_id,
                }
            ]
        )
    )
    assert out["score"][0] == pytest.approx(expected.score, rel=1e-6)

    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": scored.uri,
        "MLFLOW_REGISTRY_URI": scored.uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "HPMCORE_SCORE_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        # the server is `uvicorn` of the environment, found on PATH (an activated venv)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/hpmcore@champion",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [row]})
    finally:
        _stop(server)
        log.close()
    (prediction,) = answer["predictions"]
    assert prediction["score"] == pytest.approx(expected.score, rel=1e-6)
    assert prediction["score"] == pytest.approx(scored.predicted(dive_id), rel=1e-5)
    assert prediction["flight_start_frame"] == expected.document["boundaries"][0]["frame"]
    document = json.loads(prediction["result"])
    jsonschema.validate(document, SCORE_JSON_SCHEMA)
    assert [s["contribution"] for s in document["stages"]] == pytest.approx(
        [s["contribution"] for s in expected.document["stages"]]
    )


# ---------------------------------------------------------------------------------------------------------
# The same code path for an end-to-end model


def test_end_to_end_model_scores_like_its_evaluation(scored: Scored, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(scored.project / "data", project / "data", ignore=shutil.ignore_patterns("model", "eval"))
    params = _tiny_params()
    params["train"].update(mode="end_to_end", epochs=1, pair_scheme="drawn")  # in_batch: cached only
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _model_stages(project)
    bundle = write_bundle(
        tmp_path / "bundle",
        checkpoint=project / "data/model/checkpoints/best.pt",
        dives=project / "data/prepared/dives.parquet",
        decoded=project / "data/decoded",
        pose=project / "data/pose",
        features=project / "data/features",
        params=load_params(project / "params.yaml"),
        project_dir=project,
    )
    scorer = Scorer(ScoringBundle.load(bundle), device="cpu")
    assert scorer.bundle.end_to_end and scorer.encoders is None
    predictions = {
        r["id"]: r["predicted_score"]
        for r in pacsv.read_csv(project / "data/eval/predictions.csv").to_pylist()
    }
    for dive_id in scored.test_ids[:2]:
        pose = scored.pose(dive_id, tmp_path / "p.parquet")
        result = scorer.score(
            scored.video(dive_id), scored.dive(dive_id)["dive_number"], pose=pose, query_id=dive_id
        )
        assert result.document["model"]["train_mode"] == "end_to_end"
        assert result.score == pytest.approx(predictions[dive_id], rel=1e-5)


def test_boundaries_are_reported_in_source_frames(scored: Scored, tmp_path: Path) -> None:
    """The ground truth's first flight / entry frames (from the per-frame labels) and the predicted
    boundaries are in the same units: source frame numbers of the video."""
    dive_id = scored.test_ids[0]
    dive = scored.dive(dive_id)
    gt = gt_transitions(np.asarray(dive["frame_labels"]))  # first source frame of flight, of entry
    assert gt[0] == dive["transitions"][0] + 1 and gt[1] == dive["transitions"][1] + 1
    bundle_dir = (
        tracking.Registry(scored.uri).download_model("hpmcore", "1", tmp_path / "dl")
        / "data"
        / SCORING_BUNDLE
    )
    result = Scorer(ScoringBundle.load(bundle_dir), device="cpu").score(
        scored.video(dive_id), dive["dive_number"], pose=scored.pose(dive_id, tmp_path / "p.parquet")
    )
    frames = [b["frame"] for b in result.document["boundaries"]]
    assert all(f in result.document["sampled_frames"] for f in frames)
    assert all(0 <= f < dive["num_frames"] for f in frames)


def test_heldout_benchmark_scores_videos_of_another_generator_seed(scored: Scored, tmp_path: Path) -> None:
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    try:
        import score_heldout
    finally:
        sys.path.remove(str(PROJECT / "benchmarks"))
    args = ["--model", "hpmcore/1", "--tracking-uri", scored.uri, "--device", "cpu", "--num-dives", "6"]
    assert (
        score_heldout.main([*args, "--seed", "5", "--out", str(tmp_path / "same")]) == 2
    )  # the training seed
    assert not (tmp_path / "same").exists()
    out = tmp_path / "out"
    assert score_heldout.main([*args, "--seed", "9", "--out", str(out), "--frame-folders", "1"]) == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["seed"] == 9 and summary["trained_on_seed"] == 5
    assert summary["dives"] + len(summary["skipped"]) == 6 and summary["dives"] >= 1
    rows = pacsv.read_csv(tmp_path / "out/scores.csv").to_pylist()
    held_out = {
        r["id"]: r for r in read_annotations(tmp_path / "out/dataset/annotations.parquet").to_pylist()
    }
    for row in rows:
        dive = held_out[row["id"]]
        assert row["true_score"] == dive["final_score"]
        assert row["true_flight_start"] == dive["transitions"][0] + 1  # first frame after take-off
        assert row["true_entry_start"] == dive["transitions"][1] + 1
    errors = [abs(r["predicted_score"] - r["true_score"]) for r in rows]
    assert summary["predicted"]["mae"] == pytest.approx(np.mean(errors))
    entry = [abs(r["predicted_entry_start"] - r["true_entry_start"]) for r in rows]
    assert summary["entry_start"]["mean_abs_frames"] == pytest.approx(np.mean(entry))
    # the first scored dive again as JPEGs + an MPII JSON list: the same frames, JPEG-recompressed
    (folder,) = [p for p in (out / "frames").iterdir() if p.is_dir()]
    assert (
        folder.name == rows[0]["video"].removesuffix(".mp4")
        and (out / "frames" / f"{folder.name}.json").is_file()
    )
    assert len(list(folder.glob("*.jpg"))) == held_out[rows[0]["id"]]["num_frames"]
    jpeg = summary["frame_folders"]
    assert jpeg["dives"] == 1 and jpeg["same_boundaries"] in (0, 1)
    assert jpeg["max_abs_score_diff"] < 0.5  # points: the same frames and voters, only JPEG loss differs
    # the batch form's CSV: the scored dives
    assert pacsv.read_csv(out / "dives.csv").to_pylist() == [
        {"video": r["video"], "dive_number": r["dive_number"]} for r in rows
    ]
