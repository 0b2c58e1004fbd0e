# Developer entry points. `make run` and `make test` are the README's two
# commands; both set themselves up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install install-runtime lock run test unit lint typecheck opa-test bench policies dashboards alerts check-generated clean image image-test

install:            ## virtualenv from hack/lock/ (exact, hashed) + system test deps
	hack/setup.sh

install-runtime:
	hack/setup.sh --runtime-only

lock:               ## the only step that moves Python dependency versions (hack/lock/*.txt)
	hack/lock.sh $(ARGS)

run: install-runtime ## run the webhook locally: http://127.0.0.1:5000, metrics on :9090
	$(VENV)/bin/magtape serve $(ARGS)

test: install        ## the whole suite: lint, types, generated files, opa test, pytest
	$(MAKE) lint typecheck check-generated opa-test
	# The unit suite (target: under 3 minutes on 2 cores) on up to two cores, a test
	# file per process (its module fixtures start once); then the real-cluster suite,
	# one test at a time. Each prints its own time and slowest tests.
	$(PY) -m pytest -m "not e2e" -n auto --maxprocesses 2 --dist loadfile $(ARGS)
	$(PY) -m pytest -m e2e tests/e2e $(ARGS)

unit:
	$(PY) -m pytest -x -q $(ARGS)

lint:
	$(VENV)/bin/ruff check app tests hack

typecheck:
	$(VENV)/bin/mypy

opa-test:            ## the policies' own tests under real OPA, the reference (docs/policies.md)
	.tools/bin/opa check --strict --ignore '*.yaml' policies/
	.tools/bin/opa test --ignore '*.yaml' policies/

bench:               ## throughput and latency figures, printed side by side
	$(PY) hack/bench.py $(ARGS)

policies:            ## render base/policies/ from policies/*/ (jinja2), record the built-ins' vetting
	$(PY) hack/render_policies.py
	$(PY) hack/vet_builtins.py
	$(PY) hack/rego_builtins.py

dashboards:          ## regenerate dashboards/*.json from hack/dashboards.py
	$(PY) hack/dashboards.py

alerts:              ## regenerate the alerting rules (dashboards/magtape-alerts.yml, components/prometheusrule)
	$(PY) hack/alerts.py

check-generated:     ## fail when committed generated files are stale
	$(PY) hack/render_policies.py --check
	$(PY) hack/vet_builtins.py --check
	$(PY) hack/rego_builtins.py --check
	$(PY) hack/dashboards.py --check
	$(PY) hack/alerts.py --check

image:               ## build the image with buildah (hack/image.sh; docs/install.md)
	hack/image.sh build

image-test:          ## build the image, then run `magtape check` and `magtape serve` inside it
	hack/image.sh test

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache build dist
