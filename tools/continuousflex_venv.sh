#!/usr/bin/env bash
# Build (once) the separate test venv in which ContinuousFlex's real protocols
# register and partly run without Xmipp binaries, for
# tests/test_continuousflex_roundtrip.py.
#
#   bash tools/continuousflex_venv.sh            # -> .cflex-venv/ (cached)
#
# It holds scipion-em-xmipp 29.0.1 and scipion-em-continuousflex 3.4.2 from the
# package registry, CPU torch, ProDy, scikit-learn, mrcfile, and this checkout
# installed editable without dependencies. At run time the tests put Xmipp's
# pure-Python bindings (the folder named by $DEEPHEMNMA_XMIPP_PYTHON) on
# PYTHONPATH; without that folder the round trip is skipped.
#
# Idempotent: a stamp holding this script's checksum marks a finished build; a
# changed script or an interrupted build starts again from scratch. Exit 0 when
# the venv is ready, non-zero (and no stamp) when it cannot be built.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CFLEX_VENV:-.cflex-venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
STAMP="$VENV/.built"
SUM=$(sha256sum "$0" | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SUM" ] && [ -x "$VENV/bin/python" ]; then
    echo "ContinuousFlex test venv ready: $VENV"
    exit 0
fi
rm -rf "$VENV"
t0=$(date +%s)
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" $TORCH_SPEC
"${PIP[@]}" scipion-pyworkflow scipion-em scipion-app six pyxmipp3 \
    scipion-em-xmipp==29.0.1 scipion-em-continuousflex==3.4.2 \
    "numpy>=1.23,<2" "scipy>=1.9" prody scikit-learn mrcfile matplotlib pytest
"${PIP[@]}" --no-deps -e .
# torch must still be the pinned CPU build (nothing above may replace it)
"$VENV/bin/python" - <<'PY'
import torch, continuousflex, xmipp3, deephemnma  # noqa: F401
assert not torch.version.cuda, f"CUDA torch {torch.__version__} in the ContinuousFlex venv"
print("torch", torch.__version__, "| continuousflex", continuousflex.__file__)
PY
echo "$SUM" > "$STAMP"
echo "ContinuousFlex test venv built in $(( $(date +%s) - t0 )) s: $VENV"
