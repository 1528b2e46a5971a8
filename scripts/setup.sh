#!/usr/bin/env bash
# Create or update the project's virtual environment, idempotently.
#
#   scripts/setup.sh [VENV_DIR]        (default: .venv; the Makefile calls this)
#
# 1. core stack: torch 2.14.1 + torchvision 0.29.1 (local wheels), then this package with its pinned
#    dependencies, all under requirements/constraints.txt;
# 2. pose stack, which cannot be a plain pip dependency (see README "Installation"):
#    mmcv 2.1.0 is source-only and must be compiled with its ops (~12 min on 2 cores, once per machine:
#    the wheel is kept in $HPMCORE_WHEEL_CACHE). Its setup.py forces -std=c++17, but torch 2.14's headers
#    need C++20, so the sdist is unpacked and that flag raised before building.
#    mmdet 3.3.0 is needed by mmpose's imports; mmpose 1.3.2 is installed --no-deps because its declared
#    dependency chumpy does not build (and is unused for 2-D pose); xtcocotools is built from source
#    against numpy 2.
# A stamp file records the hash of everything that shapes the environment; a second run with nothing
# changed returns at once.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3.11}
WHEEL_CACHE=${HPMCORE_WHEEL_CACHE:-$HOME/.cache/hpmcore/wheels}
CONSTRAINTS=requirements/constraints.txt
STAMP="$VENV/.hpmcore-setup"
MMCV_VERSION=2.1.0
TORCH_VERSION=2.14.1

want=$(cat pyproject.toml "$CONSTRAINTS" scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    exit 0
fi

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# Headless Chromium for tests/test_plots.py (the offline `dvc plots show` page; skipped without it).
# Installed only where this script can: as root with apt-get (CI containers); elsewhere a hint.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing chromium (headless browser for tests/test_plots.py)"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    else
        log "chromium not found: tests/test_plots.py will be skipped (Debian/Ubuntu: apt-get install chromium)"
    fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV ($PYTHON)"
    "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
pip() { "$py" -m pip "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

log "core stack (torch $TORCH_VERSION, prefect, dvc, mlflow, decord, ...)"
pip install -q -c "$CONSTRAINTS" 'setuptools<81' wheel cython
pip install -q -c "$CONSTRAINTS" "torch==$TORCH_VERSION" torchvision==0.29.1
pip install -q -c "$CONSTRAINTS" -e '.[dev]'

if ! "$py" -c "import mmcv, mmcv._ext" 2>/dev/null; then
    wheel_dir="$WHEEL_CACHE/torch-$TORCH_VERSION"
    wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
    if [[ -z "$wheel" ]]; then
        log "building mmcv $MMCV_VERSION with ops (first time on this machine: about 12 minutes)"
        pip install -q -c "$CONSTRAINTS" mmengine opencv-python-headless
        src=$(mktemp -d)
        trap 'rm -rf "$src"' EXIT
        pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$src"
        tar -xzf "$src/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
        sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
        mkdir -p "$wheel_dir"
        MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
            pip wheel -q --no-build-isolation --no-deps -w "$src/dist" "$src/mmcv-$MMCV_VERSION"
        mv "$src"/dist/mmcv-$MMCV_VERSION-*.whl "$wheel_dir/"
        wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
    fi
    log "installing $wheel"
    pip install -q -c "$CONSTRAINTS" "$wheel"
fi

log "pose stack (mmdet, mmpose and their runtime dependencies)"
pip install -q -c "$CONSTRAINTS" --no-build-isolation --no-binary xtcocotools xtcocotools
pip install -q -c "$CONSTRAINTS" mmdet==3.3.0 json-tricks munkres matplotlib
pip install -q -c "$CONSTRAINTS" --no-deps mmpose==1.3.2

log "checking imports"
"$py" - <<'PY'
import decord, dvc, mlflow, mmcv._ext, mmpose.apis, prefect, pyarrow, torch, torchvision  # noqa: F401
import hpmcore
print(f"hpmcore {hpmcore.__version__}: torch {torch.__version__}, mmcv {mmcv.__version__}, "
      f"mmpose {mmpose.__version__}")
PY
echo "$want" > "$STAMP"
log "environment ready: $VENV"
