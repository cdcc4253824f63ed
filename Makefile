# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
# The torch release to build and test against, with the torchvision release paired with
# it: `make test TORCH=2.14.1` builds .venv-torch2.14.1 beside .venv (CI keeps 2.13.0).
TORCH ?= 2.13.0
TORCHVISION_2.13.0 := 0.28.0
TORCHVISION_2.14.1 := 0.29.1
TORCHVISION ?= $(TORCHVISION_$(TORCH))
VENV := $(if $(filter 2.13.0,$(TORCH)),.venv,.venv-torch$(TORCH))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean property-explore property-thorough mutation

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@test -n "$(TORCHVISION)" || { echo "no torchvision release is paired with torch $(TORCH) here: give TORCHVISION=..."; exit 2; }
	# torch is pinned here: an unpinned install pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==$(TORCH) torchvision==$(TORCHVISION)
	$(PY) -m pip install --quiet -e '.[test]'
	# Graphviz's `dot` renders `fqlower diff --svg`; its tests skip, saying why, without it.
	@command -v dot >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
	      || echo "note: could not install graphviz; SVG tests will be skipped"; \
	  else \
	    echo "note: Graphviz's dot is missing and this is not root (sudo apt-get install graphviz); SVG tests will be skipped"; \
	  fi; }
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fqlower demo

# deterministic by default (the derandomized `ci` profile): a user's `make test` never
# fails by chance. `make property-explore` (HYPOTHESIS_PROFILE=dev) explores new examples.
HYPOTHESIS_PROFILE ?= ci
export HYPOTHESIS_PROFILE

test: $(STAMP)
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider tests property_tests

bench: $(STAMP)
	$(PY) bench/lower.py
	$(PY) bench/roundtrip.py --sizes 1000,10000
	$(PY) bench/codec.py
	$(PY) bench/vision.py
	$(PY) bench/validate.py

clean:
	rm -rf .venv .venv-torch*

# New random examples on every run (the default ci profile is derandomized): for
# exploring, never for CI. A failure prints the example to keep as an @example.
property-explore: $(STAMP)
	HYPOTHESIS_PROFILE=dev $(PY) -m pytest -q -p no:cacheprovider property_tests

# 1000 examples per property (the ci profile runs 40)
property-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -p no:cacheprovider property_tests

# Mutation testing of the passes, edits, change log and compare (docs/mutation.md); not
# part of CI. mutants/ starts afresh: mutmut never refreshes the unmutated copies of
# src/ it keeps there. MUTANTS narrows the run, e.g. MUTANTS='fqlower.engine.*'.
MUTMUT_CHILDREN ?= 2
MUTANTS ?=
mutation: $(STAMP)
	test -x $(VENV)/bin/mutmut || $(PY) -m pip install --quiet -e '.[test,mutation]'
	rm -rf mutants
	HYPOTHESIS_PROFILE=ci OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTMUT_CHILDREN) $(MUTANTS)
	$(VENV)/bin/mutmut results
	$(PY) scripts/mutation_score.py
