"""`dvc plots show` offline: the project's page renders in a real headless Chromium with every network
request refused; DVC's default page (scripts from a CDN) does not, which shows the check can fail."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pipeline_project import PROJECT, project_env, run_ok

_spec = importlib.util.spec_from_file_location("plots_vendor", PROJECT / "plots/vendor.py")
assert _spec is not None and _spec.loader is not None
vendor = importlib.util.module_from_spec(_spec)  # plots/vendor.py: builds the template from plots/vendor/
_spec.loader.exec_module(vendor)

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
NUM_PLOTS = 4
"""dvc.yaml's top-level plots: training loss, validation rho, predicted vs true, transition errors."""


def _project(tmp: Path) -> Path:
    """A git repo with the project's dvc.yaml, params.yaml, DVC config and plots/, and small plot data."""
    project = tmp / "project"
    for name in ("dvc.yaml", "params.yaml", ".dvc/config", "plots/template.html"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, project / name)
    (project / "data/model").mkdir(parents=True)
    (project / "data/eval").mkdir(parents=True)
    history = [{"epoch": e, "loss": 2.0 / (e + 1), "val_rho": 0.1 * e} for e in range(6)]
    (project / "data/model/history.json").write_text(json.dumps(history))
    rng = np.random.default_rng(0)
    rows = ["id,dive_number,difficulty,true_score,predicted_score,predicted_std"]
    rows += [f"v{i},107B,3.0,{40 + 2 * i},{40 + 2 * i + rng.uniform(-5, 5):.2f},1.0" for i in range(20)]
    (project / "data/eval/predictions.csv").write_text("\n".join(rows) + "\n")
    rows = ["id,takeoff_error,entry_error,tiou"]
    rows += [f"v{i},{rng.integers(-3, 4)},{rng.integers(-3, 4)},0.8" for i in range(20)]
    (project / "data/eval/transitions.csv").write_text("\n".join(rows) + "\n")
    run_ok(["git", "init", "-q"], project)
    return project


def _offline_browser(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, every host name unresolvable and every proxied request to a closed port."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--virtual-time-budget=20000",
        "--window-size=1000,800",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _render(page: Path, tmp: Path) -> tuple[int, float]:
    """(number of Vega canvases in the rendered DOM, share of non-white pixels of a screenshot)."""
    dom = _offline_browser(page, tmp, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp / f"{page.parent.name}.png"
    proc = _offline_browser(page, tmp, f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    return dom.stdout.count('class="marks"'), float((pixels < 250).mean())


def test_template_is_built_from_the_vendored_scripts() -> None:
    assert (PROJECT / "plots/template.html").read_text(encoding="utf-8") == vendor.build_template()
    versions = json.loads((PROJECT / "plots/vendor/versions.json").read_text())
    assert {n: v["version"] for n, v in versions.items()} == vendor.VERSIONS
    for name in vendor.VERSIONS:
        assert (PROJECT / "plots/vendor" / versions[name]["file"]).stat().st_size > 10_000
    licenses = (PROJECT / "plots/vendor/THIRD_PARTY_LICENSES.txt").read_text()
    assert all(f"{n} {v}: BSD-3-Clause" in licenses for n, v in vendor.VERSIONS.items())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/setup.sh installs it as root)")
def test_plots_page_renders_offline_in_a_real_browser(tmp_path: Path) -> None:
    project = _project(tmp_path)
    env = project_env(tmp_path)
    run_ok([sys.executable, "-m", "dvc", "plots", "show", "-o", "offline"], project, env)
    page = project / "offline/index.html"
    html = page.read_text()
    assert "<script src=" not in html and "cdn.jsdelivr" not in html
    canvases, ink = _render(page, tmp_path)
    assert canvases == NUM_PLOTS, f"{canvases} of {NUM_PLOTS} plots rendered"
    assert ink > 0.02, f"screenshot almost blank ({ink:.1%} non-white pixels)"

    # control: DVC's own page loads its scripts from a CDN, which the same browser cannot reach
    default = tmp_path / "default.html"
    default.write_text("<html><head>{scripts}</head><body>{plot_divs}</body></html>")
    run_ok(
        [sys.executable, "-m", "dvc", "plots", "show", "-o", "cdn", "--html-template", str(default)],
        project,
        env,
    )
    assert "cdn.jsdelivr.net" in (project / "cdn/index.html").read_text()
    canvases, ink = _render(project / "cdn/index.html", tmp_path)
    assert canvases == 0 and ink < 0.01
