# llmlab's verbs. Every install goes through constraints.txt (torch==2.13.0, the CPU build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
PROFILE ?= quick
# pytest-xdist workers for make test (tests/conftest.py keeps tests that share a fixture on one worker)
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

.PHONY: install system-deps run test test-all bench loadtest charts lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -q --upgrade pip
	$(PIP) -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

system-deps:  ## Debian packages the tests use (run as root; .ci/run does): Prometheus, PostgreSQL, Graphviz, bubblewrap (the grader's sandbox)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus postgresql graphviz bubblewrap

run: install  ## the main job: every built lab's deliverable and grading as Ray jobs, on a local Ray head
	$(VENV)/bin/llmlab run --profile $(PROFILE)

test: install  ## the test suite (without the slow tests), on TEST_WORKERS cores
	$(PYTEST)

test-all: install  ## everything, slow tests (notebooks, full-scale checks) included
	$(PYTEST) -m ""

bench: install  ## side-by-side benchmarks; figures land in benchmarks/results/
	$(PY) benchmarks/run.py

loadtest: install  ## the grading and retrieval services (and with MODEL=DIR the inference service) under load, gated by loadtests/slos.yaml
	$(VENV)/bin/llmlab up --retrieval $(if $(MODEL),--model $(MODEL))
	$(PY) loadtests/run.py --users 5 --duration 30s
	$(PY) loadtests/run.py --service retrieval --users 4 --duration 30s
	$(if $(MODEL),$(PY) loadtests/run.py --service inference --users 4 --duration 30s)

charts: install  ## lint, render and validate the Helm chart offline (Helm engine, kubernetes-validate, CRDs)
	$(PY) -m pytest tests/test_chart.py -q

lint: install
	$(VENV)/bin/ruff check llmlab services operators tests benchmarks ray-jobs loadtests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache runs benchmarks/results loadtests/results
