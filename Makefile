# ferry: build, test, check, bench, demo, install.
PREFIX ?= /usr/local
DESTDIR ?=
LUA ?= lua5.4
BUSTED ?= busted --lua=$(LUA)
PKGS := lua5.4 libuv libarchive libcrypto libssl libedit libcurl libh2o

CC ?= cc
PKG_CONFIG ?= pkg-config
CJSON := -llua5.4-cjson

# Before anything asks pkg-config for flags, the build checks that each library (and lua-cjson, the compiler and
# pkg-config) is installed: a missing one stops it with the Debian packages to install and the one apt-get line
# (engine/tools/missing_debs.sh), rather than a wall of pkg-config errors and a missing header. `make deps`
# (as root) installs them. Goals that build nothing skip the check.
missing_debs = $(shell sh engine/tools/missing_debs.sh '$(CC)' '$(PKG_CONFIG)')
NO_DEPS_GOALS := deps clean lint
ifneq ($(filter-out $(NO_DEPS_GOALS),$(or $(MAKECMDGOALS),all)),)
MISSING_DEBS := $(missing_debs)
ifneq ($(MISSING_DEBS),)
$(info ferry: the build needs these Debian packages, which are missing: $(MISSING_DEBS))
$(info ferry: install them with:  apt-get install -y $(MISSING_DEBS)   (or, as root: make deps))
$(error missing build packages: $(MISSING_DEBS))
endif
endif

WARN := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
CFLAGS ?= -O2 -g
ALL_CFLAGS := $(WARN) $(CFLAGS) -fPIC -D_GNU_SOURCE -Iengine/include -Iengine/src $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lm

B := build
# Core: what `require "ferry.core"` needs.  Engine: the embedding API, line editing, the built-in Lua files.
CORE_SRC := $(filter-out engine/src/main.c engine/src/engine.c engine/src/lineedit.c,$(wildcard engine/src/*.c))
ENGINE_SRC := engine/src/engine.c engine/src/lineedit.c
LUA_FILES := $(shell find scripts/ferry scripts/adapters providers -name '*.lua' 2>/dev/null | sort)
CORE_OBJ := $(CORE_SRC:engine/src/%.c=$(B)/obj/%.o)
ENGINE_OBJ := $(ENGINE_SRC:engine/src/%.c=$(B)/obj/%.o) $(B)/obj/embedded.o
HEADERS := $(wildcard engine/src/*.h) engine/include/ferry.h

# the path a Lua file is looked up by: scripts/ferry/x.lua -> ferry/x.lua, scripts/adapters/a.lua -> adapters/a.lua
embed_rel = $(patsubst scripts/%,%,$(1))

.PHONY: all test check bench demo install clean lint fuzz soak worker test-agents deps
all: $(B)/ferry $(B)/lua/ferry/core.so $(B)/libferry.a $(B)/libferry.so $(B)/ferry.pc

$(B)/obj/%.o: engine/src/%.c $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(B)/obj/embedded.c: engine/tools/embed.lua $(LUA_FILES)
	@mkdir -p $(@D)
	$(LUA) engine/tools/embed.lua $@ $(foreach f,$(LUA_FILES),$(call embed_rel,$(f))=$(f))

$(B)/obj/embedded.o: $(B)/obj/embedded.c engine/src/internal.h
	$(CC) $(ALL_CFLAGS) -Wno-overlength-strings -c $< -o $@

$(B)/libferry.a: $(CORE_OBJ) $(ENGINE_OBJ)
	rm -f $@
	ar rcs $@ $^

$(B)/libferry.so: $(CORE_OBJ) $(ENGINE_OBJ)
	$(CC) -shared -o $@ -Wl,-soname,libferry.so $^ $(CJSON) $(LIBS)

# -Wl,-E: system Lua C modules (lpeg, lfs, ...) resolve the Lua API from the binary.
$(B)/ferry: $(B)/obj/main.o $(B)/libferry.a
	$(CC) $(CFLAGS) -o $@ $(B)/obj/main.o $(B)/libferry.a $(CJSON) $(LIBS) -Wl,-E

$(B)/lua/ferry/core.so: $(CORE_OBJ)
	@mkdir -p $(@D)
	$(CC) -shared -o $@ $^ $(shell $(PKG_CONFIG) --libs libuv libarchive libcrypto libssl libcurl libh2o)

VERSION := $(shell sed -n 's/^\#define FERRY_VERSION "\(.*\)"/\1/p' engine/include/ferry.h)
make_pc = sed -e 's|@PREFIX@|$(1)|g' -e 's|@VERSION@|$(VERSION)|g' engine/tools/ferry.pc.in

$(B)/ferry.pc: engine/tools/ferry.pc.in engine/include/ferry.h
	$(call make_pc,$(PREFIX)) > $@

# The Cloudflare Worker (providers/bridge), compiled by tsc for its Node harness, which the bridge specs run
# next to `ferry bridge serve`. TypeScript, the Sandbox SDK and the Workers types (for tsc to check index.ts
# against them), at the versions providers/bridge/package.json pins, go into build/npm. Without node or npm
# the Worker specs are pending.
NPM_DIR := $(B)/npm
WORKER_DIR := $(B)/worker
WORKER_SRC := $(wildcard providers/bridge/src/*.ts)
worker:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory $(WORKER_DIR)/dist/worker.js || \
	  echo "worker: WARNING: the Worker did not build (see above): its conformance specs will be pending" >&2; \
	else echo "worker: node or npm is missing: the Cloudflare Worker specs will be pending"; fi

$(NPM_DIR)/.installed: providers/bridge/package.json
	npm install --prefix $(NPM_DIR) --no-audit --no-fund --ignore-scripts --no-save $$(node -e \
	  'const p = require("./providers/bridge/package.json"), d = {...p.dependencies, ...p.devDependencies}; \
	   console.log(["typescript", "@cloudflare/sandbox", "@cloudflare/workers-types"].map(n => n + "@" + d[n]).join(" "))')
	touch $@

$(WORKER_DIR)/dist/worker.js: $(WORKER_SRC) providers/bridge/tsconfig.json $(NPM_DIR)/.installed
	rm -rf $(WORKER_DIR) && mkdir -p $(WORKER_DIR)
	cp -r providers/bridge/src providers/bridge/tsconfig.json $(WORKER_DIR)/
	ln -s ../npm/node_modules $(WORKER_DIR)/node_modules
	$(NPM_DIR)/node_modules/.bin/tsc -p $(WORKER_DIR)

test: all worker
	$(BUSTED)

# Sanitizers: the specs run inside a ferry binary built with ASan/UBSan (busted is a Lua script), so the
# instrumented core is the one they load and child processes stay uninstrumented. Then the binary under
# valgrind, then luacheck.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
check: all lint worker
	$(MAKE) --no-print-directory B=$(B)/asan CFLAGS="-O1 -g $(ASAN_FLAGS)" $(B)/asan/ferry
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  FERRY_SANITIZED=1 $(B)/asan/ferry run $$(command -v busted)
	valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
	  --track-fds=yes --quiet $(B)/ferry run spec/support/valgrind_smoke.lua

# Fuzzing (not part of test): libFuzzer targets built with clang against a core built with the fuzz flags in
# $(B)/fuzz, each run for FUZZ_SECONDS, FUZZ_JOBS at a time, by spec/fuzz/run.lua (README "Fuzzing").
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
FUZZ_CC ?= clang
FUZZ_TARGETS := b64 tar_guard listing status state excludes tree_file
FUZZ_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
fuzz: all
	$(MAKE) --no-print-directory B=$(B)/fuzz CC=$(FUZZ_CC) CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" \
	  $(FUZZ_TARGETS:%=$(B)/fuzz/fuzz_%)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) $(B)/ferry run spec/fuzz/run.lua $(B)/fuzz $(FUZZ_TARGETS)

# (made by the sub-make above, where B is the fuzz build dir) the base64 target is C only; the others run a
# Lua driver, spec/fuzz/<target>.lua, inside an engine.
$(B)/fuzz_b64: spec/fuzz/b64.c $(B)/libferry.a
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $< $(B)/libferry.a $(CJSON) $(LIBS)

$(B)/fuzz_%: spec/fuzz/harness.c $(B)/libferry.a
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -DFERRY_FUZZ_DRIVER='"$(CURDIR)/spec/fuzz/$*.lua"' -o $@ $< \
	  $(B)/libferry.a $(CJSON) $(LIBS)

# Soak (not part of test): prepare/edit/restore cycles with SIGKILLs, edits on both sides and hostile archives,
# checked against a model after each cycle (README "Soak").
SOAK_CYCLES ?= 300
SOAK_SEED ?=
SOAK_RACES ?= 0
soak: all
	SOAK_CYCLES=$(SOAK_CYCLES) SOAK_SEED=$(SOAK_SEED) SOAK_RACES=$(SOAK_RACES) $(B)/ferry run spec/soak/soak.lua

# The real agent CLIs from the npm registry (not part of test: it needs the registry and ~3 GB of disk), installed
# through their adapters into a bwrap sandbox with network and over ssh as an unprivileged user, then run
# through `ferry exec --state` (README "Launching the agent"). ADAPTERS="codex pi" for fewer.
ADAPTERS ?=
test-agents: all
	$(B)/ferry run spec/agents/real_clients.lua $(ADAPTERS)

lint:
	luacheck --quiet scripts providers spec engine/tools

bench: all worker
	$(B)/ferry run spec/bench/run.lua

demo: all
	$(B)/ferry run spec/demo/demo.lua

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/ferry $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/adapters \
	  $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/providers $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/cli \
	  $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/bridge
	install -m 755 $(B)/ferry $(DESTDIR)$(PREFIX)/bin/ferry
	install -m 644 $(B)/libferry.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(B)/libferry.so $(DESTDIR)$(PREFIX)/lib/
	$(call make_pc,$(PREFIX)) > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ferry.pc
	install -m 644 engine/include/ferry.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(B)/lua/ferry/core.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/ferry/
	install -m 644 $(wildcard scripts/ferry/*.lua) $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/
	install -m 644 $(wildcard scripts/ferry/cli/*.lua) $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/cli/
	install -m 644 $(wildcard scripts/ferry/bridge/*.lua) $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/bridge/
	$(if $(wildcard scripts/adapters/*.lua),install -m 644 $(wildcard scripts/adapters/*.lua) $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/adapters/)
	$(if $(wildcard providers/*.lua),install -m 644 $(wildcard providers/*.lua) $(DESTDIR)$(PREFIX)/share/lua/5.4/ferry/providers/)

# Install the missing build packages (Debian/Ubuntu, as root); says what to run when not root.
deps:
	@missing="$(missing_debs)"; \
	if [ -z "$$missing" ]; then echo "deps: every build package is installed"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "deps: run as root: apt-get install -y $$missing" >&2; exit 1; \
	else echo "apt-get install -y $$missing"; \
	  apt-get install -y $$missing || { apt-get update && apt-get install -y $$missing; }; fi

clean:
	rm -rf $(B)
