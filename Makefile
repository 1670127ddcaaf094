# Entry points named in the README. Each target installs first (idempotent).
PYTHON := .venv/bin/python

.PHONY: install demo test kafka-start kafka-stop

install:
	bash infra/install.sh

demo: install
	$(PYTHON) -m streams demo $(ARGS)

test: install
	$(PYTHON) -m pytest -q -rs $(ARGS)

kafka-start:
	bash infra/kafka.sh start

kafka-stop:
	bash infra/kafka.sh stop
