# The two set-up commands of the README. Both work on a fresh machine from a clean clone.
# `make main` installs the runtime dependencies only (no torch); `make test` adds the [test]
# and [judge] extras (reference implementations, test tools, the ASR judge) to the same venv.
PY ?= python3
VENV ?= .venv
REFS ?= .refs

.PHONY: install install-test main test

$(VENV)/.runtime: setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(VENV)/bin/pip install -q -e '.[test,judge]'
	# moshi pins torch<2.10 (it runs on 2.13): no deps. audiocraft's package import fails on torch
	# 2.13; the tests load its codebook-pattern file from the downloaded wheel.
	$(VENV)/bin/pip install -q --no-deps moshi==0.2.13
	mkdir -p $(REFS) && $(VENV)/bin/pip download -q --no-deps audiocraft==1.3.0 -d $(REFS)
	touch $@

install: $(VENV)/.runtime

install-test: $(VENV)/.test

# Main job: trains the tiny AuT + Thinker speech recogniser on the embedded espeak speech set.
main: install
	$(VENV)/bin/python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny_asr \
		--workdir=runs/tiny_asr

test: install-test
	AUDIOLM_AUDIOCRAFT_WHEEL=$(REFS) NO_TORCH_COMPILE=1 $(VENV)/bin/python -m pytest -q -n 2 tests
