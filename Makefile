# calltrace: set-up, demo, tests, benchmarks. `make demo` and `make test` do all
# set-up on a fresh machine (Python 3.11, gcc; root with apt-get).
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
BUILD   := build
FIX     := $(BUILD)/fixtures
CC      ?= gcc
CXX     ?= g++
FIXFLAGS := -g -finstrument-functions -rdynamic -pthread
# System packages: gdb (debug backend), chromium (HTML export test),
# uftrace (benchmark comparison), binutils (c++filt).
SYSPKGS := gdb:gdb chromium:chromium uftrace:uftrace c++filt:binutils valgrind:valgrind

C_FIXTURES   := $(wildcard fixtures/*.c)
CXX_FIXTURES := $(wildcard fixtures/*.cpp)
FIX_NAMES := $(basename $(notdir $(C_FIXTURES) $(CXX_FIXTURES)))
FIX_BINS  := $(foreach n,$(FIX_NAMES),$(FIX)/$(n) $(FIX)/$(n)-O2)

.PHONY: all setup sysdeps venv install fixtures demo test bench clean

all: test

sysdeps:
	@missing=""; for pair in $(SYSPKGS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@touch $@

# Reinstall whenever a source file changes (pip install . builds the runtime).
$(VENV)/.installed: $(VENV)/.created pyproject.toml setup.py $(wildcard runtime/*.c runtime/*.h) \
		$(shell find calltrace gdb_scripts -name '*.py' -o -name '*.json' 2>/dev/null)
	@# setuptools' staging copy would bring back modules since removed from the tree
	rm -rf $(BUILD)/lib.* $(BUILD)/bdist.*
	$(PY) -m pip install -q '.[test]'
	@touch $@

venv: $(VENV)/.installed
install: venv
setup: sysdeps venv fixtures

fixtures: $(FIX_BINS)

# Fixtures named plain_* are built without -finstrument-functions.
$(FIX)/%: fixtures/%.c | $(FIX)/.dir
	$(CC) -O0 $(if $(filter plain_%,$*),-g -rdynamic -pthread,$(FIXFLAGS)) $< -o $@ -lm
$(FIX)/%-O2: fixtures/%.c | $(FIX)/.dir
	$(CC) -O2 $(if $(filter plain_%,$*),-g -rdynamic -pthread,$(FIXFLAGS)) $< -o $@ -lm
$(FIX)/%: fixtures/%.cpp | $(FIX)/.dir
	$(CXX) -O0 $(FIXFLAGS) $< -o $@
$(FIX)/%-O2: fixtures/%.cpp | $(FIX)/.dir
	$(CXX) -O2 $(FIXFLAGS) $< -o $@
$(FIX)/.dir:
	@mkdir -p $(FIX) && touch $@

demo: setup
	@echo; echo '$$ calltrace run -o $(BUILD)/demo.json $(FIX)/recursion'
	@$(VENV)/bin/calltrace run -o $(BUILD)/demo.json $(FIX)/recursion
	@echo; if command -v jq >/dev/null; then \
	  echo '$$ jq .metadata.total_calls $(BUILD)/demo.json'; \
	  jq .metadata.total_calls $(BUILD)/demo.json; \
	else \
	  echo '$$ python3 -c "import json; print(json.load(open('"'"'$(BUILD)/demo.json'"'"'))['"'"'metadata'"'"']['"'"'total_calls'"'"'])"'; \
	  $(PY) -c "import json; print(json.load(open('$(BUILD)/demo.json'))['metadata']['total_calls'])"; \
	fi
	@if $(VENV)/bin/calltrace replay --help >/dev/null 2>&1; then \
	  echo; echo '$$ calltrace replay $(BUILD)/demo.json'; $(VENV)/bin/calltrace replay $(BUILD)/demo.json; fi

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(BUILD) $(VENV) *.egg-info

# ---- Issue 6 hard cases: the instrumented library fixtures/dlopener.c loads
# (fixtures/lib/*.c -> build/fixtures/lib*.so, next to the programs).
$(FIX)/lib%.so: fixtures/lib/%.c | $(FIX)/.dir
	$(CC) -g -O2 -finstrument-functions -fPIC -shared $< -o $@
fixtures: $(patsubst fixtures/lib/%.c,$(FIX)/lib%.so,$(wildcard fixtures/lib/*.c))

# A madvise without MADV_POPULATE_WRITE, preloaded ahead of the runtime: not instrumented.
$(FIX)/libnopopulate.so: fixtures/lib/nopopulate.c | $(FIX)/.dir
	$(CC) -O2 -fPIC -shared $< -o $@ -ldl

# fixtures/linked.c is linked against fixtures/lib/shapes.c at each level.
$(FIX)/libshapes.so: fixtures/lib/shapes.c | $(FIX)/.dir
	$(CC) -g -O0 -finstrument-functions -fPIC -shared $< -o $@
$(FIX)/libshapes-O2.so: fixtures/lib/shapes.c | $(FIX)/.dir
	$(CC) -g -O2 -finstrument-functions -fPIC -shared $< -o $@
$(FIX)/linked: fixtures/linked.c $(FIX)/libshapes.so
	$(CC) -O0 $(FIXFLAGS) $< -o $@ -L$(FIX) -lshapes -Wl,-rpath,'$$ORIGIN'
$(FIX)/linked-O2: fixtures/linked.c $(FIX)/libshapes-O2.so
	$(CC) -O2 $(FIXFLAGS) $< -o $@ -L$(FIX) -lshapes-O2 -Wl,-rpath,'$$ORIGIN'


# calltrace attach: the long-running attachee in each way a hook can be
# reached (PIE is the default build above).
ATTACH_FLAGS := -O2 $(FIXFLAGS)
$(FIX)/attachee-nopie: fixtures/attachee.c | $(FIX)/.dir
	$(CC) $(ATTACH_FLAGS) -no-pie -fno-pie $< -o $@
$(FIX)/attachee-noplt: fixtures/attachee.c | $(FIX)/.dir
	$(CC) $(ATTACH_FLAGS) -fno-plt $< -o $@
$(FIX)/attachee-znow: fixtures/attachee.c | $(FIX)/.dir
	$(CC) $(ATTACH_FLAGS) -Wl,-z,now,-z,relro $< -o $@
$(FIX)/attachee-lib: fixtures/attachee.c $(FIX)/libattlib.so
	$(CC) $(ATTACH_FLAGS) -DATT_LIB $< -o $@ -L$(FIX) -lattlib -Wl,-rpath,'$$ORIGIN'
$(FIX)/attachee-static: fixtures/attachee.c | $(FIX)/.dir
	$(CC) $(ATTACH_FLAGS) -static $< -o $@
fixtures: $(FIX)/attachee-nopie $(FIX)/attachee-noplt $(FIX)/attachee-znow $(FIX)/attachee-lib \
	$(FIX)/attachee-static
