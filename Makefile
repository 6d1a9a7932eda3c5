# The two commands a new user needs: `make demo` and `make test`.
# Both bootstrap the Debian packages (as root, through apt-get) and the .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEBS   := etcd-server etcd-client runc podman busybox-static iproute2 procps
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test lint typecheck unit soak bench deps venv clean

demo: venv deps
	$(PY) -m corral demo

test: venv deps lint typecheck
	$(PY) -m pytest -n 2 --hypothesis-profile=ci -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

soak: venv deps
	$(PY) -m corral sim --seeds 1-10000
	$(PY) -m pytest -p no:cacheprovider --hypothesis-profile=ci --run-soak -m slow -rP tests

bench: venv deps
	$(PY) -m benchmarks.run --out docs/benchmarks.md

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "corral needs python3 >= 3.11"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed; installing python3-venv"; \
	  apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Debian packages: the real etcd 3.4 and etcdctl (interop tests, benchmarks), runc and podman
# (container units), busybox-static (a rootfs for test images).
deps: $(VENV)/.debs

$(VENV)/.debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi
	@mkdir -p $(VENV) && touch $@

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
