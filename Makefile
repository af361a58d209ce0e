# mnist-edge: `make train export` builds the models, `make test` checks everything.
# Each stage is a file target, so re-running a stage whose inputs did not change does nothing.

PYTHON_FOR_VENV ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
ARTIFACTS ?= artifacts
# Optional: your own data, an IDX directory or a Keras-layout .npz (see docs/training.md).
DATA ?=
DATA_FLAG := $(if $(DATA),--data $(DATA),)
# Optional: class names, one a line (default: the digits for MNIST, else labels.txt beside DATA).
LABELS ?=
LABELS_FLAG := $(if $(LABELS),--labels $(LABELS),)
# Optional: samples collected on the device (mnist-edge samples DIR --out samples.npz): train adds
# their x_train to the training images, compare tests on their x_test as a second test set.
EXTRA_DATA ?=
RUNTIME_SOURCES := $(wildcard edge_runtime/*.py edge_runtime/*/*.py)
VENV_STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help venv train export compare bundle bench handwriting test test-fast test-device system-deps lock clean
.DELETE_ON_ERROR:

# Bare `make` says what there is to make: each target's line ends in "## what it does".
help:  ## this list of targets and what each makes
	@echo "mnist-edge: make TARGET [DATA=... LABELS=... EXTRA_DATA=... SIGNING_KEY=...]; quick start: make train export"
	@sed -n 's/^\([a-z-]*\):.*## \(.*\)$$/  \1|\2/p' $(firstword $(MAKEFILE_LIST)) | awk -F'|' '{printf "%-16s %s\n", $$1, $$2}'

venv: $(VENV_STAMP)  ## the workstation venv from requirements/workstation.lock (made by any target that needs it)

# The venv is (re)built from the lock file: exact versions, so a clone builds the same thing later.
# It says what it is doing, a line per stage and pip's line per package (no progress bars: they are
# "\r" frames in a log); the first time this is the longest step (a minute or more, ~1.9 GB).
LOCKED_PACKAGES = $(shell grep -c '^[A-Za-z0-9]' requirements/workstation.lock)
$(VENV_STAMP): requirements/workstation.lock pyproject.toml
	@test -x $(PYTHON) || { echo "venv: creating $(VENV) with $(PYTHON_FOR_VENV)"; $(PYTHON_FOR_VENV) -m venv $(VENV); }
	@echo "venv: installing the $(LOCKED_PACKAGES) pinned packages of requirements/workstation.lock (the first time: a minute or more, about 1.9 GB); pip's lines follow"
	@$(PYTHON) -m pip install --progress-bar off --disable-pip-version-check -r requirements/workstation.lock
	@echo "venv: installing mnist-edge itself (editable)"
	@$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@
	@echo "venv: ready ($$(du -sh $(VENV) | cut -f1))"

train: $(ARTIFACTS)/model.keras  ## train the seed model 3 epochs on MNIST (or DATA=...) into artifacts/model.keras

# DATA, LABELS and EXTRA_DATA are words on the command line, not files make can date. The train
# recipe records them, with the size and sha256 of the files behind them, in data-inputs.txt; when
# the ones given now differ (another path, or new content behind the same one), the model is out of
# date (train/inputs.py).
DATA_INPUTS := $(ARTIFACTS)/data-inputs.txt
DATA_INPUTS_GIVEN := DATA=$(DATA) LABELS=$(LABELS) EXTRA_DATA=$(EXTRA_DATA)
# Asked only when a goal may train (hashing a large DATA costs seconds; `make test` needs none of it).
ifneq ($(filter-out venv test test-fast system-deps lock clean,$(or $(MAKECMDGOALS),venv)),)
DATA_INPUTS_CHANGED := $(shell $(PYTHON_FOR_VENV) -m train.inputs check $(DATA_INPUTS) $(DATA_INPUTS_GIVEN))
endif
.PHONY: data-inputs-changed

$(ARTIFACTS)/model.keras: $(VENV_STAMP) $(wildcard train/*.py) $(RUNTIME_SOURCES) $(if $(DATA_INPUTS_CHANGED),data-inputs-changed,)
	$(PYTHON) -m train --output-dir $(ARTIFACTS) $(DATA_FLAG) $(LABELS_FLAG) $(if $(EXTRA_DATA),--extra-data $(EXTRA_DATA),)
	$(PYTHON_FOR_VENV) -m train.inputs record $(DATA_INPUTS) $(DATA_INPUTS_GIVEN)

export: $(ARTIFACTS)/manifest.json  ## int8 and float TFLite and ONNX files, each checked, and artifacts/manifest.json

# A manifest whose files are missing or changed (an interrupted or tampered export) is not up to date.
EXPORT_SET_WHOLE := $(shell test -x $(PYTHON) && $(PYTHON) -m export.check_set $(ARTIFACTS) 2>/dev/null && echo yes)
.PHONY: export-incomplete

$(ARTIFACTS)/manifest.json: $(ARTIFACTS)/model.keras $(wildcard export/*.py) $(RUNTIME_SOURCES) $(if $(EXPORT_SET_WHOLE),,export-incomplete)
	$(PYTHON) -m export --model $(ARTIFACTS)/model.keras --output-dir $(ARTIFACTS) $(DATA_FLAG) $(LABELS_FLAG)

# Float vs int8, every model in every installed runtime: $(ARTIFACTS)/report/ (Markdown, JSON, PNGs).
# Always re-runs (it measures speed); exits 3 when an int8 model loses more than the manifest's
# tolerance (COMPARE_TOLERANCE=points overrides it). EXTRA_DATA=samples.npz adds its x_test as a
# second test set: the report shows both, and the gate holds on both.
COMPARE_TOLERANCE ?=
compare: $(ARTIFACTS)/manifest.json  ## float vs int8, every model in every runtime: artifacts/report/
	$(PYTHON) -m compare --artifacts $(ARTIFACTS) $(if $(COMPARE_TOLERANCE),--tolerance $(COMPARE_TOLERANCE),) $(DATA_FLAG) \
		$(if $(EXTRA_DATA),--second-test-set $(EXTRA_DATA),) $(COMPARE_FLAGS)

# SIGNING_KEY=keys/mnist-edge-signing also signs it: mnist-edge-bundle.tar.gz.sig beside it, what
# `mnist-edge install` checks on the device against its trusted keys (make signing-key makes a pair).
SIGNING_KEY ?=
BUNDLE := $(ARTIFACTS)/mnist-edge-bundle.tar.gz
bundle: $(BUNDLE) $(if $(SIGNING_KEY),$(BUNDLE).sig,)  ## the one tarball for the device (SIGNING_KEY=... signs it)

$(BUNDLE).sig: $(BUNDLE) $(SIGNING_KEY)
	$(PYTHON) -m export.signing sign $(BUNDLE) --key $(SIGNING_KEY)

# An ed25519 key pair for signing bundles: keep the private half off the devices and out of git.
SIGNING_KEY_PATH ?= keys/mnist-edge-signing
.PHONY: signing-key
signing-key: $(VENV_STAMP)  ## make an ed25519 key pair for signing bundles
	$(PYTHON) -m export.signing new-key $(SIGNING_KEY_PATH)

$(ARTIFACTS)/mnist-edge-bundle.tar.gz: $(ARTIFACTS)/manifest.json $(RUNTIME_SOURCES) $(wildcard edge_runtime/serve/static/*) export/bundle.py export/mnist-edge.service pyproject.toml
	$(PYTHON) -m export.bundle --artifacts $(ARTIFACTS)

# The bundle ships docs/device.md, the device page, as its DEPLOY.md.
$(ARTIFACTS)/mnist-edge-bundle.tar.gz: docs/device.md

# Our runtime against the bare interpreter and Keras, side by side on one core (ratios, not timings);
# then `serve` on one core against in-process predict, its time to ready and its memory; then what
# each precision the export's recovery ladder can pick (int8, mixed, 16x8) costs beside plain int8.
bench: $(ARTIFACTS)/manifest.json  ## our runtime against the bare interpreter and Keras, side by side
	$(PYTHON) benchmarks/bench_runtime.py --artifacts $(ARTIFACTS)
	$(PYTHON) benchmarks/bench_serve.py --artifacts $(ARTIFACTS)
	$(PYTHON) benchmarks/bench_precisions.py --artifacts $(ARTIFACTS)

# predict's accuracy on handwritten-looking digits (Debian handwriting fonts and mouse strokes; written to
# $(ARTIFACTS)/handwriting once) against a plain reference preparation, per style, paired (McNemar).
# Exits 3 when predict is below HANDWRITING_FLOOR % or below the reference. Needs `make system-deps`.
HANDWRITING_FLOOR ?= 90
handwriting: $(ARTIFACTS)/manifest.json  ## predict's accuracy on the handwriting set
	$(PYTHON) -m handwriting --artifacts $(ARTIFACTS) --min-accuracy $(HANDWRITING_FLOOR) --json $(ARTIFACTS)/handwriting.json

# The bundle installed and run on every emulated Raspberry Pi OS (64-bit bookworm and trixie, 32-bit
# bookworm and trixie armhf, ARMv6 armel rootfs, qemu-user; needs root, installs debootstrap and qemu 10 itself, caches
# each rootfs in /var/cache/mnist-edge), compared with x86. PI_ROWS=a,b checks some rows only. The
# install runs make their signed bundles from $(ARTIFACTS) (an outlier export: TensorFlow, ~25 s).
PI_ROWS ?=
.PHONY: pi-check
pi-check: $(ARTIFACTS)/mnist-edge-bundle.tar.gz  ## the bundle on every emulated Raspberry Pi OS (root; builds qemu rootfs)
	bash pi/check.sh --bundle $(ARTIFACTS)/mnist-edge-bundle.tar.gz --artifacts $(ARTIFACTS) --python $(PYTHON) $(if $(PI_ROWS),--rows $(PI_ROWS),)

test: $(VENV_STAMP) test-device  ## every test, as CI runs it (root: installs qemu, builds Pi rootfs; see README)
	$(PYTHON) -m pytest

# Unit and CLI tests only: seconds instead of minutes.
test-fast: $(VENV_STAMP)  ## unit and CLI tests only (about a minute)
	$(PYTHON) -m pytest -m "not slow"

# The fast tests in a second venv holding only what a device installs (the edge, serve and install extras, at
# the workstation lock's versions) and pytest: no TensorFlow, no onnxruntime. The runtime, engine,
# pictures and serve tests read the bundle checked in under tests/fixtures/; a test that needs the
# workstation skips, saying what it needs (MNIST_EDGE_DEVICE_TESTS lets it skip in CI too). pytest
# runs from the checkout, so the tree's code is what is tested; the install brings the dependencies.
DEVICE_VENV := .venv-device
DEVICE_STAMP := $(DEVICE_VENV)/.installed
$(DEVICE_STAMP): requirements/workstation.lock pyproject.toml
	test -x $(DEVICE_VENV)/bin/python || $(PYTHON_FOR_VENV) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/workstation.lock \
		".[edge,serve,install]" pytest
	touch $@

test-device: $(DEVICE_STAMP)  ## the fast tests in a venv with only the device's packages (no TensorFlow)
	MNIST_EDGE_DEVICE_TESTS=1 $(DEVICE_VENV)/bin/python -m pytest -m "not slow"

# Debian packages some tests use: real IDX files (Fashion-MNIST); headless Chromium with its WebDriver
# for the page test of `serve`; curl, the real HTTP client of serve's fault tests; handwriting fonts
# for the handwriting set (handwriting/generate.py says which file of each it uses); Ansible (with
# community.general's chroot connection) for the fleet rollout; Prometheus and promtool for the fleet
# alerts (its postinst starts no service where systemd is not PID 1, as in CI). Needs root; CI runs it.
HANDWRITING_FONTS := fonts-dkg-handwriting fonts-breip fonts-rufscript fonts-sjfonts fonts-comic-neue fonts-bwht \
	fonts-humor-sans fonts-klee fonts-kristi fonts-dancingscript fonts-kaushanscript fonts-yusei-magic \
	fonts-tlwg-purisa-otf fonts-kiloji fonts-tomsontalks fonts-seto
SYSTEM_PACKAGES := dataset-fashion-mnist chromium chromium-driver curl prometheus ansible $(HANDWRITING_FONTS)
system-deps:  ## Debian packages the tests use (root)
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then echo "system packages present"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); fi

# Prometheus' file_sd targets from the fleet's Ansible inventory (deploy/prometheus/prometheus.yml reads
# deploy/prometheus/targets/*.json); re-run it when the inventory changes.
INVENTORY ?= deploy/ansible/inventory.yml
.PHONY: fleet-targets
fleet-targets: $(VENV_STAMP)  ## Prometheus file_sd targets from the Ansible inventory
	$(PYTHON) -m deploy.prometheus.targets $(INVENTORY) --out deploy/prometheus/targets/fleet.json

# Re-resolve the workstation pins from pyproject's extras (needs the package index).
lock:  ## re-resolve the workstation pins
	rm -rf .venv-lock && $(PYTHON_FOR_VENV) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e '.[train,serve,dev,install]'
	{ echo "# Exact versions for the workstation venv (make venv). Regenerate with 'make lock'."; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^mnist-edge'; } > requirements/workstation.lock
	rm -rf .venv-lock

clean:  ## remove artifacts/
	rm -rf $(ARTIFACTS)
