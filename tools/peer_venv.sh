#!/usr/bin/env bash
# Build (once) the separate venv of the peer method, cryoDRGN, for
# benchmarks/bench_peer.py (never the project's venv).
#
#   bash tools/peer_venv.sh                # -> bench_output/peer/peer-venv/ (cached)
#   PEER_VENV=/some/dir bash tools/peer_venv.sh
#
# It holds the same CPU torch as the project's venv (TORCH_SPEC, installed
# first so that pip keeps it and pulls no CUDA packages) and cryodrgn 4.3.1
# from the package registry. Idempotent: a stamp holding this script's
# checksum marks a finished build; a changed script or an interrupted build
# starts again from scratch. Exit 0 when the venv is ready, non-zero (and no
# stamp) when it cannot be built.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PEER_VENV:-bench_output/peer/peer-venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
CRYODRGN_SPEC=${CRYODRGN_SPEC:-cryodrgn==4.3.1}
STAMP="$VENV/.built"
SUM=$( (sha256sum "$0"; echo "$TORCH_SPEC $CRYODRGN_SPEC") | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SUM" ] && [ -x "$VENV/bin/cryodrgn" ]; then
    echo "cryoDRGN venv ready: $VENV"
    exit 0
fi
rm -rf "$VENV"
t0=$(date +%s)
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" $TORCH_SPEC
"${PIP[@]}" $CRYODRGN_SPEC
# torch must still be the CPU build installed first (nothing above may replace it)
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
import cryodrgn  # noqa: F401
assert not torch.version.cuda, f"CUDA torch {torch.__version__} in the cryoDRGN venv"
cuda = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("nvidia")]
assert not cuda, f"CUDA packages in the cryoDRGN venv: {cuda}"
print("torch", torch.__version__, "| cryodrgn", md.version("cryodrgn"))
PY
echo "$SUM" > "$STAMP"
echo "cryoDRGN venv built in $(( $(date +%s) - t0 )) s: $VENV ($(du -sh "$VENV" | cut -f1))"
