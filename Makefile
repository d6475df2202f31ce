# The two set-up commands of the README. Both work on a fresh machine from a clean clone.
PY ?= python3
VENV ?= .venv
REFS ?= .refs

.PHONY: install main test

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	# Reference implementations whose pins conflict with torch 2.13 (see REFERENCE.md section 0).
	$(VENV)/bin/pip install -q --no-deps moshi==0.2.13
	mkdir -p $(REFS) && $(VENV)/bin/pip download -q --no-deps audiocraft==1.3.0 -d $(REFS)
	touch $@

install: $(VENV)/.installed

# Main job: trains the tiny AuT + Thinker speech recogniser on the embedded espeak speech set.
main: install
	$(VENV)/bin/python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny_asr \
		--workdir=runs/tiny_asr

test: install
	AUDIOLM_AUDIOCRAFT_WHEEL=$(REFS) NO_TORCH_COMPILE=1 $(VENV)/bin/python -m pytest -q -n 2 tests
