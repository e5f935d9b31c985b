# The README's two commands are `make lab` and `make test`; everything else is plumbing.
SHELL := /bin/sh
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/seqshiftd
# The version `seqshiftd version` prints and the package carries: the VERSION file, one fact.
VERSION := $(shell cat VERSION)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all deps build lab test unit vet fmt-check netns systemd-verify bench bench-net fuzz generate clean deb man deb-test

all: build

deps:
	./tools/install-deps

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/seqshiftd

# bin/seqshiftd_VERSION_ARCH.deb, built with dpkg-deb (tools/build-deb says why not nfpm).
deb:
	./tools/build-deb

# The manual pages alone, generated from README.md, into bin/man.
man:
	mkdir -p bin/man
	$(GO) run ./tools/genman -readme README.md -o bin/man -version $(VERSION) -date $$(date -u +%Y-%m-%d)

# Build the package twice (a bumped version too), lintian it, install, upgrade over an edited
# conffile and purge in a scratch dpkg root. Part of `unit` as well; this runs it alone.
deb-test:
	$(GO) test -count=1 -v ./test/deb/

# The main job: build a namespace lab, run real connections through seqshiftd, print what each side saw.
lab: deps build
	./$(BIN) lab

# Every test: formatting, vet, unit tests under the race detector, the systemd unit, and the
# real-kernel integration suite in network namespaces (runs as root; skips clearly otherwise).
test: deps fmt-check vet unit systemd-verify netns

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v /test/netns)

systemd-verify: build
	@if [ -f deploy/systemd/seqshiftd.service ]; then \
		./tools/verify-unit deploy/systemd/seqshiftd.service; \
	fi

# The real-kernel suite runs once per datapath: the kernel (tc/eBPF) one, then the TUN one.
netns: build
	$(GO) test -count=1 -timeout 12m ./test/netns/ -seqshiftd=$(CURDIR)/$(BIN) -datapath=kernel
	$(GO) test -count=1 -timeout 12m ./test/netns/ -seqshiftd=$(CURDIR)/$(BIN) -datapath=tun

bench:
	$(GO) test -p 1 -run '^$$' -bench . -benchmem ./rewrite/ ./flowtable/ ./datapath/ ./policy/ ./tcshift/

bench-net: build
	$(GO) test -count=1 -timeout 20m -run '^TestBenchmarkThroughput$$' -v ./test/netns/ -seqshiftd=$(CURDIR)/$(BIN) -throughput

# Rebuild the committed tc programs (tcshift/bpf_bpf{el,eb}.{o,go}) from tcshift/bpf/*.c. Needs
# clang, llvm and libbpf-dev (apt-get install clang llvm libbpf-dev); building and testing do not.
generate:
	cd tcshift && $(GO) generate ./

clean:
	rm -rf bin
