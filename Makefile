# Two entry points, each doing its own set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TFSTAMP := $(VENV)/.installed-tf
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install demo test data browser clean

install: $(STAMP) data

# Re-runs only when the declared requirements change; a second `make` does nothing slow.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps dl-backtrace==0.0.25
	# lrp and attnlrp: zennit and lxt declare torchvision, bitsandbytes and open_clip_torch, which
	# their modules used here never import (baselines/lrp_packages.py enters them without __init__).
	$(PY) -m pip install -q --no-deps -c constraints.txt zennit lxt
	touch $(STAMP)

# Fashion-MNIST ships as a Debian package; install it where apt exists and it is missing.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: could not install dataset-fashion-mnist; the loader will look in data/ or download"; \
	fi

# The report page's test drives Debian's chromium (apt); where it cannot be installed, `make test` stops and says so.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1) || \
	  true; \
	fi
	@command -v chromedriver >/dev/null 2>&1 || \
	  { echo "error: chromium and chromedriver are needed by the report page's browser test; install them (Debian: apt-get install chromium chromium-driver)"; exit 1; }

demo: install
	$(PY) run.py model=resnet method=backtrace

# The tests also cover Keras models: the test target adds the `tf` extra (TensorFlow CPU).
$(TFSTAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,tf]'
	touch $(TFSTAMP)

test: install $(TFSTAMP) browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .cache results/runs
