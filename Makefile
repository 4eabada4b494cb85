# The two commands a newcomer needs: `make run` and `make test`.
# Both install what is missing first (Debian packages, the virtualenv) and are safe to repeat.
VENV ?= .venv
BAKERY_ROOT ?= $(CURDIR)/data
export BAKERY_ROOT
# TFTP's port 69 needs root; an unprivileged `make run` serves TFTP on 6969 instead.
ifneq ($(shell id -u),0)
BAKERY_TFTP_BIND ?= 127.0.0.1:6969
export BAKERY_TFTP_BIND
endif

.PHONY: run serve test deps lint format bench

deps:
	@VENV=$(VENV) scripts/install-deps

# The demo: Bakery plus simulated Pis enrolled and a bakeform `demo` (netns mode as root,
# loopback otherwise); it prints what to type next. `make serve` runs Bakery alone.
run: deps
	$(VENV)/bin/bakery sim run

serve: deps
	$(VENV)/bin/bakery serve

test: deps lint
	$(VENV)/bin/pytest

# ruff (lint and format) over everything; mypy, strict, over src/ (pyproject.toml).
lint:
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: deps
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench
