# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# A GPU user overrides the torch wheel, e.g.:
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow lint demo bench clean oracles

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)

$(STAMP): $(PY) setup.py requirements.txt
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) lint
	MPLBACKEND=Agg OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q tests deephemnma/tests

# the slow checks (the workflow templates run through pyworkflow's scheduler:
# minutes of its waits); CI runs them after `make test`
test-slow: $(STAMP)
	DEEPHEMNMA_SLOW_TESTS=1 MPLBACKEND=Agg OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q deephemnma/tests/test_templates.py

# zero warnings: pyflakes over the package, the tests and the benchmarks
lint: $(STAMP)
	$(PY) -m pyflakes deephemnma tests benchmarks

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) -m deephemnma.demo

bench: $(STAMP)
	MPLBACKEND=Agg $(PY) benchmarks/run_all.py

# Test oracles that are not runtime dependencies: Debian's RELION (GPL), unpacked
# locally (no system install). Tests that need it skip when it is absent.
oracles:
	mkdir -p .oracles/debs
	cd .oracles/debs && apt-get download relion libfftw3-double3 libfftw3-single3
	for d in .oracles/debs/*.deb; do dpkg-deb -x $$d .oracles/relion; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_output bench_output .cflex-venv

# The separate venv of the ContinuousFlex round trip (scipion-em-xmipp and
# scipion-em-continuousflex from the registry, this checkout editable; cached
# in .cflex-venv/, rebuilt when tools/continuousflex_venv.sh changes).
# tests/test_continuousflex_roundtrip.py skips its round trip without it.
.PHONY: continuousflex-venv
continuousflex-venv:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash tools/continuousflex_venv.sh

# The separate venv of the peer method for benchmarks/bench_peer.py: the same
# CPU torch as above, then cryodrgn 4.3.1 from the registry (~2.2 GB; cached,
# rebuilt when tools/peer_venv.sh changes). Not part of `make test`.
PEER_VENV ?= bench_output/peer/peer-venv
.PHONY: peer-venv
peer-venv:
	PEER_VENV=$(PEER_VENV) PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash tools/peer_venv.sh
