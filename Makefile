# shmkit - the two commands of the README do all set-up on a fresh machine:
#   make run    build, then a live demonstration across several processes
#   make test   build, then the C core tests and the whole Python test suite
#   make typecheck   mypy --strict and pyright on the package, the examples and tests/typing,
#                    and the compiled module's stub checked against the module (CI runs it)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CC ?= gcc
CORE_SRC := $(wildcard src/shmkit/core/*.c)
CORE_HDR := $(wildcard src/shmkit/core/*.h src/shmkit/core/*.def)
CTESTS := $(patsubst tests/c/%.c,build/ctest/%,$(wildcard tests/c/test_*.c))
CFLAGS_CORE := -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Isrc/shmkit/core -Itests/c
SAN := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
PYTEST_ARGS ?=

.PHONY: run test ctest pytest sanitize bench bench-quick clean venv build typecheck

$(VENV)/.stamp: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.stamp

# rebuild the extension in place whenever a C file changed
# (and libshmkit.so, the C API: src/shmkit/capi/, src/shmkit/include/shmkit.h)
build/.ext-stamp: $(VENV)/.stamp $(CORE_SRC) $(CORE_HDR) $(wildcard src/shmkit/*.c) $(wildcard src/shmkit/_binding/*) \
		$(wildcard src/shmkit/capi/*) $(wildcard src/shmkit/include/*.h)
	$(PY) setup.py -q build_ext --inplace $$(test -e build/.sanitized && echo --force)
	@mkdir -p build && rm -f build/.sanitized && touch $@

build: build/.ext-stamp

run: build
	$(VENV)/bin/shmkit demo

test: ctest pytest

pytest: build
	$(PY) -m pytest $(PYTEST_ARGS)

build/ctest/%: tests/c/%.c $(CORE_SRC) $(CORE_HDR) tests/c/check.h
	@mkdir -p build/ctest
	$(CC) $(CFLAGS_CORE) $(SAN) $(CORE_SRC) $< -o $@ -lpthread

ctest: $(CTESTS)
	@for t in $(CTESTS); do ./$$t || exit 1; done
	@touch build/ctest/.passed

# the C tests (already built with ASan/UBSan) as make sanitize's first part: run unless
# they passed since they were last built (make test runs them every time)
build/ctest/.passed: $(CTESTS)
	@$(MAKE) --no-print-directory ctest

# C tests and the Python suite with AddressSanitizer + UndefinedBehaviorSanitizer
# The sanitizer pass is for C: suites that never reach the extension's C code (the Redis
# backend and cluster, pure Python over redis-py; the benchmark harness; packaging and
# type-checking), and the suites of the layers above the structures (the CLI, the status
# page and its CGI mode, the layering and naming checks: the C they reach is the calls the
# structures' own suites make) run once, in make test, not a second time under ASan.  So do
# the short campaigns whose finding is a process-level property, not a memory error:
# nothing left behind (soak), no SIGBUS on a full tmpfs (fullshm), permissions (perms),
# and the queue's kill storm (the kill campaign, which stays, kills queue producers and
# consumers under ASan too, and the corruption and API fuzz stay: they are why this exists).
SANITIZE_SKIP := -k "not redis and not cluster" --ignore=tests/test_bench.py \
	--deselect tests/test_campaigns.py::test_soak_leaves_nothing_and_does_not_grow \
	--deselect tests/test_campaigns.py::test_full_dev_shm_never_sigbus \
	--deselect tests/test_campaigns.py::test_permissions_with_a_second_user \
	--deselect tests/test_queue_crash.py::test_kill_storm \
	--ignore=tests/test_packaging.py --ignore=tests/test_capi_packaging.py \
	--ignore=tests/test_typing_usage.py --ignore=tests/test_cli.py \
	--ignore=tests/test_serve.py --ignore=tests/test_serve_cgi.py \
	--ignore=tests/test_serve_browser.py --ignore=tests/test_layers.py \
	--ignore=tests/test_naming.py

# The plain builds (the extension and libshmkit.so) are kept aside while the sanitized ones
# are in place and put back after (also when the suite fails), instead of being rebuilt; the
# stamp is gone and build/.sanitized is there meanwhile, so after an interrupted run the
# next build rebuilds them (--force: their sources have not changed).
BUILT = src/shmkit/_core.*.so src/shmkit/lib/libshmkit.so
sanitize: build/ctest/.passed build
	@rm -rf build/plain && mkdir -p build/plain && cp $(BUILT) build/plain/ && \
	  rm -f build/.ext-stamp && touch build/.sanitized
	SHMKIT_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --force
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) $(PY) -m pytest -x -q -p no:cacheprovider \
	  -m "not slow and not examples" $(SANITIZE_SKIP) $(PYTEST_ARGS); rc=$$?; \
	  cp build/plain/_core.*.so src/shmkit/ && cp build/plain/libshmkit.so src/shmkit/lib/ && \
	  rm -f build/.sanitized && touch build/.ext-stamp && exit $$rc

# Types users can check (docs/ARCHITECTURE.md, "Types"): the package, the examples and a
# typed usage file must pass both checkers; usage_bad.py's marked lines must be reported
# by both and nothing else; _core.pyi must match the built module.
TYPED := src/shmkit examples tests/typing/usage_ok.py
typecheck: build
	$(PY) -m mypy $(TYPED)
	$(PY) -m pyright $(TYPED)
	$(PY) tests/typing/check_bad.py
	$(PY) -m mypy.stubtest shmkit._core --mypy-config-file pyproject.toml \
	  --allowlist tests/typing/stubtest-allowlist.txt --ignore-unused-allowlist
	$(PY) tests/typing/stub_check.py

bench: build
	$(PY) -m pip install -q -e '.[bench]'
	$(VENV)/bin/shmkit bench

bench-quick: build
	$(VENV)/bin/shmkit bench --quick

clean:
	rm -rf build src/shmkit/*.so src/shmkit/lib src/*.egg-info
