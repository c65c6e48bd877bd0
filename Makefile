# The two Quick start commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint bench install clean man

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# contrib/fedmsg_meta_busgate: the optional fedmsg.meta processor (its tests run stock fedmsg).
$(VENV)/.installed: setup.cfg pyproject.toml contrib/fedmsg_meta_busgate/setup.cfg | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,fast,openpgp,irc]' -e contrib/fedmsg_meta_busgate \
		--config-settings editable_mode=compat
	touch $@

install: $(VENV)/.installed

## Start the gateway on its embedded defaults (ZeroMQ on 127.0.0.1:9940, state in ./var).
run: install
	$(BIN)/busgate run

## Install and run the whole test suite.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check gateway adapters tests bench busgate contrib

## Man pages (build/man) and bash completion (build/bash-completion/busgate), generated
## from the argparse definitions as the Debian package build does.
man: install
	$(BIN)/python -m gateway.docgen man build/man
	$(BIN)/python -m gateway.docgen bash-completion build/bash-completion/busgate

bench: install
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
