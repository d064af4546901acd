# The Makefile is the contract (STYLE.md): CI runs `bash .ci/run`, which runs
# `make lint check-deps test`.
SHELL     := /bin/bash
GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 30s
# Fuzzing per target inside `make test` (a smoke run, not a search), as an
# input count: a duration makes go's fuzzer fail now and then with "context
# deadline exceeded" when time runs out while it minimizes a new input.
TESTFUZZ  ?= 100000x
PKG       := github.com/tdfs/tdfs
FUZZ_TARGETS := FuzzParseOp FuzzFrameReader FuzzControl FuzzParseResyncItem FuzzParseResyncReply

.PHONY: all build test unit e2e chaos fuzz fuzz-smoke lint check-deps demo bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/tdfs-master ./cmd/tdfs-slave ./cmd/tdfs-certs

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
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(TESTFUZZ) -fuzzminimizetime 100x ./quictransport/wire/ || exit 1; \
	done

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./quictransport/wire/ || exit 1; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed: skipped"; fi
	@# House rules: no naked panic in library code, no InsecureSkipVerify outside tests.
	@if grep -rn --include='*.go' --exclude='*_test.go' -E '\bpanic\(' certs mirrorfs quictransport replayer slave; then echo "naked panic in library code"; exit 1; fi
	@if grep -rn --include='*.go' --exclude='*_test.go' InsecureSkipVerify .; then echo "InsecureSkipVerify outside tests"; exit 1; fi

# Dependencies point one way (STYLE.md): go list -deps shows what each
# package really pulls in.
check-deps:
	@bad=$$($(GO) list -deps ./replayer/... ./quictransport/wire | grep -E 'hanwen/go-fuse|quic-go/quic-go|/quictransport$$|/mirrorfs|/certs$$'); \
		if [ -n "$$bad" ]; then echo "replayer/wire import forbidden packages: $$bad"; exit 1; fi
	@bad=$$($(GO) list -deps ./mirrorfs/... | grep -E 'quic-go/quic-go|/quictransport$$|/replayer|/certs$$'); \
		if [ -n "$$bad" ]; then echo "mirrorfs imports forbidden packages: $$bad"; exit 1; fi
	@bad=$$($(GO) list -deps ./quictransport/... | grep -E 'hanwen/go-fuse|/mirrorfs|/replayer|$(PKG)/certs$$'); \
		if [ -n "$$bad" ]; then echo "quictransport imports forbidden packages: $$bad"; exit 1; fi
	@bad=$$($(GO) list -deps ./slave/... | grep -E 'hanwen/go-fuse|/mirrorfs|$(PKG)/certs$$'); \
		if [ -n "$$bad" ]; then echo "slave imports forbidden packages: $$bad"; exit 1; fi
	@bad=$$($(GO) list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./quictransport/wire ./certs | grep -vE '^$$|/quictransport/wire$$|/certs$$|klauspost/compress'); \
		if [ -n "$$bad" ]; then echo "wire/certs import non-standard packages: $$bad"; exit 1; fi
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
