# graft: `make run` and `make test` are all a newcomer needs; `make help` lists the rest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The machine's Debian release (12 or 13).
HOST_DEBIAN := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_ID)
# Debian's packages: the distribution's nginx and Lua module, what
# building against them needs, etcd (the fleet test's cluster; protoc
# for the etcd client's generated gRPC code), cmake (Pingora's zlib-ng,
# under graft-edge) and curl (graft-edge's HTTP/2 test). OpenResty's
# LuaJIT is luajit2 on Debian 12, luajit on 13.
DEB_LUAJIT := $(if $(filter 12,$(HOST_DEBIAN)),luajit2 libluajit2-5.1-dev,luajit libluajit-5.1-dev)
DEB_PACKAGES := nginx nginx-dev libnginx-mod-http-lua libnginx-mod-http-ndk \
	lua-resty-core lua-cjson $(DEB_LUAJIT) libclang-dev \
	binutils wrk chromium etcd-server etcd-client protobuf-compiler cmake curl
# Rust, when the machine has none: Debian's own rustc-web/cargo-web (1.96,
# bookworm-security on 12, trixie on 13). Debian 13's rustc (1.85) is too
# old: graft's dependencies need RUST_MIN (encoding_rs, tonic).
RUST_PACKAGES := rustc-web cargo-web
RUST_MIN := 1.88
# The nginx source tree the module is built against: Debian's nginx-dev
# (its configure flags in conf_flags) unless NGINX_SRC names another (an
# upstream release, OpenResty's bundle/nginx-*, a trixie nginx-dev
# unpacked); NGINX_CONF_FLAGS, the configure arguments of the nginx the
# module will be loaded into (nginx/configure.sh says what it uses when
# it is not given). Another tree is copied and configured under
# build/nginx-<version>-<hash of its path and flags>/ and built into
# target/nginx-<same>/: two trees never share a build.
DEBIAN_NGINX_SRC := /usr/share/nginx/src
NGINX_SRC ?= $(DEBIAN_NGINX_SRC)
NGINX_CONF_FLAGS ?=
export NGINX_CONF_FLAGS
CARGO_TARGET := $(abspath $(or $(CARGO_TARGET_DIR),target))
ifeq ($(abspath $(NGINX_SRC)):$(strip $(NGINX_CONF_FLAGS)),$(DEBIAN_NGINX_SRC):)
NGINX_SOURCE := $(DEBIAN_NGINX_SRC)
NGINX_BUILD := build/nginx
NGINX_COPY :=
NGINX_TARGET := $(CARGO_TARGET)
else
NGINX_VERSION := $(shell sed -n 's/.*define NGINX_VERSION *"\(.*\)"/\1/p' '$(abspath $(NGINX_SRC))/src/core/nginx.h' 2>/dev/null)
NGINX_KEY := $(or $(NGINX_VERSION),unknown)-$(shell printf '%s|%s' '$(abspath $(NGINX_SRC))' '$(subst ','\'',$(NGINX_CONF_FLAGS))' | md5sum | cut -c1-8)
NGINX_SOURCE := $(CURDIR)/build/nginx-$(NGINX_KEY)/source
NGINX_BUILD := build/nginx-$(NGINX_KEY)/objs
NGINX_COPY := $(NGINX_SOURCE)
NGINX_TARGET := $(CARGO_TARGET)/nginx-$(NGINX_KEY)
endif
# What nginx-sys reads (.cargo/config.toml has Debian's tree as the default).
NGINX_ENV := NGINX_SOURCE_DIR=$(NGINX_SOURCE) NGINX_BUILD_DIR=$(CURDIR)/$(NGINX_BUILD)
MODULE := $(NGINX_TARGET)/release/libngx_http_graft_module.so
# nginx's workers run as another user: the run prefix lives where they can
# reach it, whatever directory graft was cloned into.
RUN_PREFIX ?= /tmp/graft-run-$(shell id -u)
CONFIG ?= $(CURDIR)/nginx/graft.json
RUN_PORT ?= 8080
ADMIN_PORT ?= 8081
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A team's own code in graft's nginx (make run, make diff, make test):
# INIT, a Lua file run in init_by_lua before graft loads (its
# graft.legacy.declare calls); SITE, a file of more locations for the main
# server (its own handlers); NATIVE=1, the native pipeline in location /.
INIT ?=
SITE ?=
NATIVE ?=
export GRAFT_INIT := $(if $(INIT),$(abspath $(INIT)))
export GRAFT_SITE := $(if $(SITE),$(abspath $(SITE)))
export GRAFT_NATIVE := $(NATIVE)
REPLAY_SITE := $(if $(INIT),--init $(abspath $(INIT))) $(if $(SITE),--site $(abspath $(SITE))) $(if $(NATIVE),--native)

GRAFT_MODULE ?= $(MODULE)
# graft's own test module (`probe`) is in the module that `make run` and the
# tests load; the package's module is built without it, apart.
TEST_FEATURES := --features graft-nginx/probe
# ... and graft-agent (which checks files with it) and graft-edge (which runs
# it), in the tests.
WORKSPACE_FEATURES := --features graft-nginx/probe,graft-agent/probe,graft-edge/probe
PACKAGE_TARGET := $(NGINX_TARGET)/package
PACKAGE_MODULE := $(PACKAGE_TARGET)/release/libngx_http_graft_module.so
# Every module crate with criterion benches (modules/<name>/benches).
BENCH_CRATES := $(foreach d,$(filter-out modules/template/benches,$(wildcard modules/*/benches)),-p graft-$(subst _,-,$(notdir $(patsubst %/benches,%,$(d)))))
export GRAFT_MODULE

.PHONY: help deps build edge run stop test diff parity replay corpus bench lint fmt clean new-module \
	deb docker-base docker package-test

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

deps: ## Install the Debian packages graft builds and runs with (when missing)
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done; \
		command -v cargo >/dev/null || echo $(RUST_PACKAGES)); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@v=$$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p'); \
	set -- $$v 0 0; \
	if [ "$$1" -lt 1 ] || { [ "$$1" = 1 ] && [ "$$2" -lt $(lastword $(subst ., ,$(RUST_MIN))) ]; }; then \
		echo "graft needs Rust $(RUST_MIN) or newer (this machine's: $$(rustc --version 2>&1 | head -n1));" \
			"Debian's $(RUST_PACKAGES) have 1.96 ($(SUDO) apt-get install $(RUST_PACKAGES)), or rustup.rs"; \
		exit 1; \
	fi

# nginx-sys needs the headers of the nginx graft is loaded into, and the
# files `configure` writes for it: run the tree's configure with the flags
# of the nginx the module is for (Debian's own, from conf_flags, by default;
# --with-compat among them, which makes the module signature match).
$(NGINX_BUILD)/ngx_auto_config.h: | deps
	nginx/configure.sh $(abspath $(NGINX_SRC)) $(CURDIR)/$(NGINX_BUILD) $(NGINX_COPY)

build: deps $(NGINX_BUILD)/ngx_auto_config.h ## Build the nginx module against the distribution's nginx (NGINX_SRC=another nginx tree, NGINX_CONF_FLAGS=its nginx's flags)
	$(NGINX_ENV) cargo build --release -p graft-nginx $(TEST_FEATURES) --target-dir $(NGINX_TARGET)
	@echo "module: $(MODULE) (nginx $$(sed -n 's/.*define NGINX_VERSION *"\(.*\)"/\1/p' $(NGINX_SOURCE)/src/core/nginx.h), from $(abspath $(NGINX_SRC)))"

edge: deps ## Build graft-edge, the all-Rust server on Pingora (target/release/graft-edge), and Pingora alone for the bench
	cargo build --release -p graft-edge --bins --example pingora_floor

run: build ## Start nginx with graft on 127.0.0.1:8080 (RUN_PORT=, CONFIG=your graft file, INIT=, SITE=, NATIVE=1)
	@if [ -f $(RUN_PREFIX)/nginx.pid ] && kill -0 $$(cat $(RUN_PREFIX)/nginx.pid) 2>/dev/null; then \
		echo "already running (make stop first)"; exit 1; fi
	mkdir -p $(RUN_PREFIX)/html/native $(RUN_PREFIX)/logs
	echo "native origin" > $(RUN_PREFIX)/html/native/index.html
	nginx/prefix.sh $(RUN_PREFIX)
	sed -e 's#@GRAFT_MODULE@#$(GRAFT_MODULE)#' -e 's#@PREFIX@#$(RUN_PREFIX)#g' \
		-e 's#@GRAFT_ROOT@#$(RUN_PREFIX)/graft#' -e 's#@GRAFT_CONFIG@#$(abspath $(CONFIG))#' \
		-e 's#@PORT@#$(RUN_PORT)#' -e 's#@NATIVE@#$(if $(NATIVE),graft_native on;)#' -e 's#@WORKERS@#2#' -e 's#@ADMIN_PORT@#$(ADMIN_PORT)#' -e 's#@LOG_DIR@#$(RUN_PREFIX)/logs#' \
		$(if $(SITE),-e '/@EXTRA@/{r $(abspath $(SITE))' -e 'd}',-e 's#@EXTRA@##') \
		$(if $(INIT),-e '/@INIT@/{r $(abspath $(INIT))' -e 'd}',-e 's#@INIT@##') \
		nginx/graft.conf.in > $(RUN_PREFIX)/nginx.conf
	nginx -p $(RUN_PREFIX) -c $(RUN_PREFIX)/nginx.conf -e $(RUN_PREFIX)/error.log
	@echo "graft serves http://127.0.0.1:$(RUN_PORT)/ (try /old, /blog/x); dashboard: /graft/status; metrics: /graft/metrics"
	@echo "admin API: http://127.0.0.1:$(ADMIN_PORT)/graft/admin/ (apply, kill, revive, status), with -H \"Authorization: Bearer \$$(cat $(RUN_PREFIX)/admin.token)\""
	@echo "log: $(RUN_PREFIX)/error.log; stop: make stop"

stop: ## Stop the nginx that `make run` started
	@if [ -f $(RUN_PREFIX)/nginx.pid ]; then kill -QUIT $$(cat $(RUN_PREFIX)/nginx.pid) && echo stopped; \
	else echo "not running"; fi

# Every test: unit and property tests, parity, ABI, and the integration tests
# against a real nginx. A run in which no test ran is a failure.
test: build ## Run every test
	mkdir -p build
	cargo fmt --all --check
	cargo test --release --workspace $(WORKSPACE_FEATURES) 2>&1 | tee build/test.log
	@awk '/^test result:/ { passed += $$4; failed += $$6 } \
		END { printf "%d passed, %d failed\n", passed, failed; exit (passed == 0 || failed > 0) }' build/test.log

diff: build ## Replay the shipped corpus through Lua and Rust and show every difference
	cargo run --release -q -p graft-tools --bin graft-replay -- --config tests/corpus/config.json $(REPLAY_SITE) \
		tests/corpus/hostile.txt tests/corpus/requests.txt

parity: build ## Run one module's parity test through nginx (NAME=bot_filter; INIT=, SITE=, NATIVE=1: the team's own code)
	@[ -n '$(NAME)' ] && [ -f tests/tests/parity_$(NAME).rs ] || { echo "make parity NAME=<module> (tests/tests/parity_<module>.rs)"; exit 2; }
	cargo test --release -p graft-tests --test parity_$(NAME)

replay: build ## Replay a file of requests through Lua and Rust (CORPUS=requests.txt, CONFIG=graft.json; INIT=, SITE=, NATIVE=1)
	@[ -n '$(CORPUS)' ] || { echo "make replay CORPUS=<requests file> [CONFIG=<graft file>]"; exit 2; }
	cargo run --release -q -p graft-tools --bin graft-replay -- --config $(abspath $(CONFIG)) $(REPLAY_SITE) $(abspath $(CORPUS))

# Flamingo: the origin, FL1 and FL2 (graft-edge before an FL1 of its own)
# on loopback (tests/src/edge.rs), the shipped corpus and a capture sent to
# FL1 and FL2 at once, every module in lua, then zone by zone in rust;
# fails on any difference. CAPTURE=a graft_capture file of your own
# (else 300 requests are captured through FL1 on the fly).
IN_FLIGHT ?= 256
CAPTURE ?=
.PHONY: flamingo
flamingo: build edge ## Replay the corpus and a capture through FL1 and FL2 at once, zones moved to rust one by one (CAPTURE=, IN_FLIGHT=256)
	GRAFT_EDGE=$(CARGO_TARGET)/release/graft-edge cargo run --release -q -p graft-tools --bin graft-replay -- \
		--flamingo --config tests/corpus/config.json --in-flight $(IN_FLIGHT) $(if $(CAPTURE),,--capture 300) \
		tests/corpus/hostile.txt tests/corpus/requests.txt $(if $(CAPTURE),$(abspath $(CAPTURE)))

corpus: ## Regenerate the replay corpus (tests/corpus) from its fixed seed
	cargo run --release -q -p graft-tools --bin graft-corpus -- tests/corpus 10000

# The bench's files go beside the build: target/graft-bench, or under
# CARGO_TARGET_DIR when it is set (with GRAFT_MODULE naming the module built
# there).
BENCH_OUT ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/graft-bench

# graft-edge (FL2, beside FL1 in the side-by-side part) as `make edge` built it.
BENCH_ENV := GRAFT_EDGE=$(CARGO_TARGET)/release/graft-edge

bench: build edge ## Measure every variant with wrk and callgrind on loopback, and FL1 beside FL2 (about 20 minutes); writes target/graft-bench/
	@command -v valgrind >/dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q valgrind; }
	$(BENCH_ENV) cargo run --release -q -p graft-tools --bin graft-bench -- --rounds 3 --seconds 5 --out $(BENCH_OUT)
	cargo bench -q $(BENCH_CRATES)

# Not a measurement: each variant, job, series and side-by-side setup
# once, for a second, at its smallest; fails when one did not run, did not
# do its work, or wrote no figures. CI runs it after the tests.
.PHONY: bench-smoke
bench-smoke: build edge ## Run every bench variant, series and setup once, briefly (about 3 minutes); fails when one did not run
	$(BENCH_ENV) cargo run --release -q -p graft-tools --bin graft-bench -- --smoke --out $(BENCH_OUT)-smoke

new-module: ## Write a new product module and everything around it (NAME=geo_block)
	modules/new-module.sh '$(NAME)'

VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
# The Debian release the packages and images are for: 12 (bookworm, nginx
# 1.22.1) or 13 (trixie, nginx 1.26.3); the machine's own by default. The
# machine's release is built here; the other one in a container of that
# release (docker/build.Dockerfile), offline, from crates vendored here.
DEBIAN ?= $(or $(filter 12 13,$(HOST_DEBIAN)),12)
ifeq ($(filter 12 13,$(DEBIAN)),)
$(error DEBIAN=$(DEBIAN): graft is packaged for Debian 12 and 13)
endif
# Debian 12's names stay as they were; Debian 13's carry its number.
RELEASE_SUFFIX := $(if $(filter-out 12,$(DEBIAN)),-debian$(DEBIAN))
DEB_VERSION := $(VERSION)-1$(if $(filter-out 12,$(DEBIAN)),+deb$(DEBIAN))
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
GRAFT_DEB := target/deb/libnginx-mod-http-graft_$(DEB_VERSION)_$(DEB_ARCH).deb
AGENT_DEB := target/deb/graft-agent_$(DEB_VERSION)_$(DEB_ARCH).deb
EDGE_DEB := target/deb/graft-edge_$(DEB_VERSION)_$(DEB_ARCH).deb
IMAGE ?= graft:$(VERSION)$(RELEASE_SUFFIX)
PROMETHEUS_IMAGE ?= graft-prometheus:$(VERSION)$(RELEASE_SUFFIX)
EDGE_IMAGE ?= graft-edge:$(VERSION)$(RELEASE_SUFFIX)
FLEET_IMAGE := graft-fleet-test:$(VERSION)$(RELEASE_SUFFIX)
VENDOR := $(CARGO_TARGET)/vendor
DOCKER_OK = @docker info >/dev/null 2>&1 || { echo "no Docker engine: apt-get install docker.io, then start dockerd"; exit 1; }

.PHONY: vendor
vendor: ## Copy every crate graft builds with into target/vendor (for builds in containers, which cannot fetch them)
	cargo vendor --quiet --locked --versioned-dirs $(VENDOR) >/dev/null

ifeq ($(DEBIAN),$(HOST_DEBIAN))
deb: deps $(NGINX_BUILD)/ngx_auto_config.h ## Build the Debian packages (target/deb: libnginx-mod-http-graft, graft-agent, graft-edge; DEBIAN=12|13)
	$(NGINX_ENV) cargo build --release -p graft-nginx -p graft-agent -p graft-edge --target-dir $(PACKAGE_TARGET)
	rm -f $(GRAFT_DEB) $(AGENT_DEB) $(EDGE_DEB)
	GRAFT_DEB_SUFFIX=$(if $(filter-out 12,$(DEBIAN)),+deb$(DEBIAN)) \
		nginx/debian/build.sh $(PACKAGE_MODULE) $(PACKAGE_TARGET)/release/graft-agent \
		$(PACKAGE_TARGET)/release/graft-edge target/deb
else
deb: docker-base vendor
	$(DOCKER_OK)
	docker build -q --network host --build-arg BASE=debian:$(DEBIAN) -t graft-build:debian$(DEBIAN) \
		-f docker/build.Dockerfile docker >/dev/null
	mkdir -p target/deb $(CARGO_TARGET)/debian$(DEBIAN)
	rm -f $(GRAFT_DEB) $(AGENT_DEB) $(EDGE_DEB)
	docker run --rm --network none --user $$(id -u):$$(id -g) \
		-e GRAFT_DEB_SUFFIX=+deb$(DEBIAN) -e GRAFT_COMMIT=$$(git rev-parse --short HEAD) \
		-e GRAFT_DATE="$$(git log -1 --format=%aD)" \
		-v $(CURDIR):/src:ro -v $(VENDOR):/vendor:ro -v $(CARGO_TARGET)/debian$(DEBIAN):/target \
		-v $(CURDIR)/target/deb:/out graft-build:debian$(DEBIAN) /src/docker/build-deb.sh
endif

docker-base: ## Make the debian:12 (or DEBIAN=13) base image from Debian's archive (no registry needed)
	$(DOCKER_OK)
	docker/make-base.sh debian:$(DEBIAN)

docker: deb docker-base ## Build the images (graft:<version> from the package, graft-edge:<version>, graft-prometheus:<version>; DEBIAN=13: <version>-debian13)
	$(DOCKER_OK)
	rm -rf target/docker$(RELEASE_SUFFIX) && mkdir -p target/docker$(RELEASE_SUFFIX)
	cp $(GRAFT_DEB) target/docker$(RELEASE_SUFFIX)/graft.deb
	cp $(AGENT_DEB) target/docker$(RELEASE_SUFFIX)/graft-agent.deb
	cp $(EDGE_DEB) target/docker$(RELEASE_SUFFIX)/graft-edge.deb
	docker build -q --network host --build-arg BASE=debian:$(DEBIAN) -f docker/Dockerfile -t $(IMAGE) target/docker$(RELEASE_SUFFIX)
	docker build -q --network host --build-arg BASE=debian:$(DEBIAN) -f docker/edge.Dockerfile -t $(EDGE_IMAGE) target/docker$(RELEASE_SUFFIX)
	docker build -q --network host --build-arg BASE=debian:$(DEBIAN) -t $(PROMETHEUS_IMAGE) docker/prometheus

package-test: docker ## Install the packages in a fresh Debian 12 (DEBIAN=13: 13) container and test them there
	docker build -q --network host --build-arg IMAGE=$(IMAGE) -t $(FLEET_IMAGE) \
		-f docker/fleet-test.Dockerfile target/docker$(RELEASE_SUFFIX)
	docker/package-test.sh $(IMAGE) $(PROMETHEUS_IMAGE) $(FLEET_IMAGE) $(EDGE_IMAGE)

.PHONY: bare-test
bare-test: docker-base vendor ## On a bare Debian 12 (DEBIAN=13: 13) in a container, a clean clone's `make run` must serve
	$(DOCKER_OK)
	docker/bare-test.sh debian:$(DEBIAN) $(VENDOR)

lint: $(NGINX_BUILD)/ngx_auto_config.h ## clippy and rustfmt, warnings as errors
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets $(WORKSPACE_FEATURES) -- -D warnings
	cargo clippy --release -p graft-nginx -- -D warnings

# Fuzzing: fuzz/ is a cargo workspace of its own (libFuzzer through
# cargo-fuzz, whose sanitizer flags need nightly features: RUSTC_BOOTSTRAP
# lets the stable toolchain give them). Each target runs FUZZ_SECONDS from
# its seeds (fuzz/corpus/<target>); what it learns is kept in fuzz/work, not
# committed. A panic, a failed property or a crash writes its input to
# fuzz/artifacts/<target>/ and fails the make, after every target ran.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(sort $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs))))
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_BUILD := --release --debug-assertions --sanitizer none
.PHONY: fuzz fuzz-smoke
fuzz: ## Fuzz every parser for FUZZ_SECONDS each (default 60; FUZZ_TARGETS= picks some)
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build $(FUZZ_BUILD)
	@failed=; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/work/$$t; \
		if (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $(FUZZ_BUILD) $$t work/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1) > fuzz/work/$$t.log 2>&1; \
		then r=ok; else r=FAILED; failed="$$failed $$t"; fi; \
		printf '%-18s %-6s %s runs, %s/s, %s\n' $$t $$r \
			"$$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz/work/$$t.log)" \
			"$$(sed -n 's/^stat::average_exec_per_sec: *//p' fuzz/work/$$t.log)" \
			"$$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' fuzz/work/$$t.log | tail -1)"; \
		if [ $$r = FAILED ]; then grep -m1 -A1 -E 'panicked at|ERROR: libFuzzer' fuzz/work/$$t.log; \
			grep -m1 'Test unit written' fuzz/work/$$t.log; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzzing failed:$$failed (logs: fuzz/work/<target>.log)"; exit 1; fi

fuzz-smoke: ## Fuzz every parser for 10 s each (CI)
	$(MAKE) fuzz FUZZ_SECONDS=10

fmt: ## Format the code
	cargo fmt --all

clean: ## Remove build output and the run prefix
	cargo clean
	rm -rf build $(RUN_PREFIX)
