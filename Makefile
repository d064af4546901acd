# The Makefile is the contract: CI runs `bash .ci/run`, which runs
# `make lint check-deps test`, then builds and installs the package.
SHELL     := /bin/bash
GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 30s
# Fuzzing per target inside `make test` (a smoke run, not a search), as an
# input count: a duration makes go's fuzzer fail now and then with "context
# deadline exceeded" when time runs out while it minimizes a new input.
TESTFUZZ  ?= 100000x
PKG       := github.com/tdfs/tdfs
PROGS     := tdfs-master tdfs-slave tdfs-certs

# The version stamped into the binaries (tdfs-master --version) and the
# package: "VERSION COMMIT DATE" from packaging/version.sh (git and
# CHANGELOG.md), computed once when first used. Override on the command
# line: make deb VERSION=1.2.3
VERSION_INFO = $(eval VERSION_INFO := $$(shell sh packaging/version.sh))$(VERSION_INFO)
VERSION      = $(word 1,$(VERSION_INFO))
COMMIT       = $(word 2,$(VERSION_INFO))
BUILD_DATE   = $(word 3,$(VERSION_INFO))
LDFLAGS      = -X $(PKG)/cmd/internal/version.Version=$(VERSION) \
               -X $(PKG)/cmd/internal/version.Commit=$(COMMIT) \
               -X $(PKG)/cmd/internal/version.Date=$(BUILD_DATE)

# make install: where things go below $(DESTDIR). With PREFIX=/usr the
# units go to /lib/systemd/system. The example configs go to
# $(DOCDIR)/examples, and to $(SYSCONFDIR)/tdfs unless already there (the
# units read /etc/tdfs/*.yaml).
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(if $(filter /usr,$(PREFIX)),,$(PREFIX))/lib/systemd/system
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
DOCDIR      ?= $(PREFIX)/share/doc/tdfs
# make deb: dist/tdfs_VERSION_ARCH.deb
DIST        ?= dist
FUZZ_TARGETS := FuzzParseOp FuzzFrameReader FuzzControl FuzzParseResyncItem FuzzParseResyncReply

.PHONY: all build test unit e2e chaos fuzz fuzz-smoke lint check-deps demo bench clean install deb

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS) $(EXTRA_LDFLAGS)' -o $(BIN)/ ./cmd/tdfs-master ./cmd/tdfs-slave ./cmd/tdfs-certs

# The binaries, the systemd units (ExecStart in $(BINDIR)), bash and zsh
# completion and man pages (made by the binaries themselves), the docs and
# the example configs. An existing $(SYSCONFDIR)/tdfs/*.yaml is kept.
install: build
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(MANDIR)/man8" \
		"$(DESTDIR)$(BASHCOMPDIR)" "$(DESTDIR)$(ZSHCOMPDIR)" "$(DESTDIR)$(DOCDIR)/examples"
	install -m 0755 $(addprefix $(BIN)/,$(PROGS)) "$(DESTDIR)$(BINDIR)/"
	@set -e; for u in tdfs-master tdfs-slave; do \
		echo "install contrib/systemd/$$u.service $(DESTDIR)$(UNITDIR)/"; \
		sed 's|/usr/local/bin/|$(BINDIR)/|g' contrib/systemd/$$u.service > "$(DESTDIR)$(UNITDIR)/$$u.service"; \
		chmod 0644 "$(DESTDIR)$(UNITDIR)/$$u.service"; \
	done
	@set -e; for p in $(PROGS); do \
		echo "install completion (bash, zsh) and man page of $$p"; \
		$(BIN)/$$p completion bash > "$(DESTDIR)$(BASHCOMPDIR)/$$p"; \
		$(BIN)/$$p completion zsh > "$(DESTDIR)$(ZSHCOMPDIR)/_$$p"; \
		$(BIN)/$$p man > "$(DESTDIR)$(MANDIR)/man8/$$p.8"; \
		chmod 0644 "$(DESTDIR)$(BASHCOMPDIR)/$$p" "$(DESTDIR)$(ZSHCOMPDIR)/_$$p" "$(DESTDIR)$(MANDIR)/man8/$$p.8"; \
	done
	install -m 0644 README.md LICENSE CHANGELOG.md "$(DESTDIR)$(DOCDIR)/"
	install -d -m 0755 "$(DESTDIR)$(DOCDIR)/docs"
	install -m 0644 docs/*.md "$(DESTDIR)$(DOCDIR)/docs/"
	install -m 0644 contrib/systemd/master.yaml contrib/systemd/slave.yaml "$(DESTDIR)$(DOCDIR)/examples/"
	@set -e; [ -d "$(DESTDIR)$(SYSCONFDIR)/tdfs" ] || install -d -m 0700 "$(DESTDIR)$(SYSCONFDIR)/tdfs"; \
	for f in master.yaml slave.yaml; do \
		if [ -e "$(DESTDIR)$(SYSCONFDIR)/tdfs/$$f" ]; then \
			echo "$(DESTDIR)$(SYSCONFDIR)/tdfs/$$f exists: kept (the example is in $(DOCDIR)/examples)"; \
		else \
			echo "install -m 0600 contrib/systemd/$$f $(DESTDIR)$(SYSCONFDIR)/tdfs/"; \
			install -m 0600 contrib/systemd/$$f "$(DESTDIR)$(SYSCONFDIR)/tdfs/"; \
		fi; \
	done

# A Debian package: make install PREFIX=/usr into a staging tree, which
# packaging/ (a module of its own, so that the packaging library nfpm stays
# out of tdfs's dependencies) packs into $(DIST)/tdfs_VERSION_ARCH.deb.
# The binaries are stripped (-s -w: panics still print their stacks). Built
# with cgo as make build is, the package depends on libc6; with
# CGO_ENABLED=0 the binaries are static and it depends on nothing.
deb:
	rm -rf "$(DIST)/stage" "$(DIST)/bin"
	$(MAKE) --no-print-directory install DESTDIR="$(abspath $(DIST))/stage" PREFIX=/usr \
		ZSHCOMPDIR=/usr/share/zsh/vendor-completions BIN="$(abspath $(DIST))/bin" EXTRA_LDFLAGS='-s -w' \
		VERSION=$(VERSION) COMMIT=$(COMMIT) BUILD_DATE=$(BUILD_DATE)
	gzip -9n "$(DIST)"/stage/usr/share/man/man8/*.8
	install -m 0644 LICENSE "$(DIST)/stage/usr/share/doc/tdfs/copyright"
	cd packaging && SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
		$(GO) run . -root "$(abspath $(DIST))/stage" -version $(VERSION) -arch $$($(GO) env GOARCH) -out "$(abspath $(DIST))"
	rm -rf "$(DIST)/stage" "$(DIST)/bin"

# Everything: unit tests under the race detector, the end-to-end tests with
# the built binaries, and a few seconds of each fuzz target.
test: unit e2e fuzz-smoke

unit:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /cmd/e2e)

e2e:
	$(GO) test -count=1 -timeout 15m -v ./cmd/e2e/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

# Fault injection (cmd/e2e/chaos_test.go): TestChaos kills, freezes,
# partitions, starves and wipes the master and two slaves for CHAOS_TIME (a
# Go duration) while checking its invariants. CHAOS_SEED (default: from the
# clock; every run prints the one it used) reruns a run's random decisions.
# The test's own timeout is CHAOS_TIME plus 15 minutes: Go adds up the
# durations of a concatenation ("10m15m" is 25m).
CHAOS_TIME ?= 10m
CHAOS_SEED ?=
chaos:
	CHAOS_TIME=$(CHAOS_TIME) CHAOS_SEED=$(CHAOS_SEED) $(GO) test -count=1 -run '^TestChaos$$' -timeout $(CHAOS_TIME)15m -v ./cmd/e2e/

fuzz-smoke:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t ($(TESTFUZZ))"; \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(TESTFUZZ) -fuzzminimizetime 100x ./wire/ || exit 1; \
	done

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./wire/ || exit 1; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed: skipped"; fi
	@# House rules: no naked panic in library code, no InsecureSkipVerify outside tests.
	@if grep -rn --include='*.go' --exclude='*_test.go' -E '\bpanic\(' certs mirrorfs quictransport replayer slave; then echo "naked panic in library code"; exit 1; fi
	@if grep -rn --include='*.go' --exclude='*_test.go' InsecureSkipVerify .; then echo "InsecureSkipVerify outside tests"; exit 1; fi

# Dependencies point one way (docs/design.md, Processes and packages): go list -deps shows what each
# package really pulls in.
check-deps:
	@deny() { bad=$$($(GO) list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' "./$$1/..." | \
		grep -vE "^$(PKG)/$$1(/|$$)" | grep -E "$$2"); \
		if [ -n "$$bad" ]; then echo "check-deps: $$1 imports forbidden packages:" $$bad; exit 1; fi; }; \
	deny wire              '^$(PKG)/|quic-go|go-fuse' && \
	deny journal           '^$(PKG)/|quic-go|go-fuse' && \
	deny certs             '^$(PKG)/|quic-go|go-fuse' && \
	deny replayer          '^$(PKG)/(quictransport|mirrorfs|certs|journal|slave)|quic-go|go-fuse' && \
	deny mirrorfs          '^$(PKG)/(quictransport|replayer|certs|journal|slave)|quic-go' && \
	deny quictransport     '^$(PKG)/(mirrorfs|replayer|certs|slave)|go-fuse' && \
	deny slave             '^$(PKG)/(mirrorfs|certs$$)|go-fuse' && \
	deny internal          '^$(PKG)/(cmd|quictransport|mirrorfs|replayer|slave)'
	@echo "check-deps: ok"

# Generates certificates, starts two slaves and a master on loopback, writes
# a sample tree through the mount, shows that the slaves match, cleans up.
demo: build
	bash cmd/demo.sh $(BIN)

# Measures tdfs against a bare go-fuse loopback, raw QUIC and rsync/lsyncd
# (README, Performance): prints a markdown table, writes bench-results/.
# BENCH_QUICK=1 for a smaller run (under 3 minutes); BENCH_DIR=/some/disk to
# put the backing dirs on a disk instead of a tmpfs; tdfs-bench --help.
bench: build
	$(GO) build -o $(BIN)/ ./cmd/tdfs-bench
	$(BIN)/tdfs-bench --bin $(BIN) --out $${BENCH_OUT:-bench-results}

clean:
	rm -rf $(BIN)
