# kiln: the two commands that set up a fresh Debian 12 machine and do the work.
#   make run     build, then generate text from the embedded default model
#   make test    build, then run the whole CPU suite through CTest
# Knobs: BUILD=dir  SANITIZE=address,undefined|thread  KILN_CUDA=ON|OFF  PREFIX=/usr/local  JOBS=n
#        PROMPT="..."  FUZZ_SECONDS=60

SANITIZE ?=
ifeq ($(SANITIZE),)
BUILD ?= build
CUDA_FLAG := $(if $(KILN_CUDA),-DKILN_CUDA=$(KILN_CUDA),)
else
BUILD ?= build-san-$(subst $(comma),-,$(SANITIZE))
# Sanitised builds test the host code; the CUDA backend is compiled and tested in the plain build.
CUDA_FLAG := -DKILN_CUDA=OFF
endif
comma := ,
PREFIX ?= /usr/local
JOBS ?= $(shell nproc)
PROMPT ?= In the beginning
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=
CTEST_ARGS ?=

.PHONY: all deps configure build run test test-gpu install fuzz clean bench

all: build

deps:
	@bash scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	@bash scripts/deps.sh
	cmake -S . -B $(BUILD) -DKILN_SANITIZE=$(SANITIZE) $(CUDA_FLAG) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The embedded default model (models/default), sampled: a model this small loops under greedy decoding.
run: deps build
	./$(BUILD)/bin/kiln run -p "$(PROMPT)" -n 96 --temp 0.8 --top-p 0.95 --seed 1

test: deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE 'gpu|soak' $(CTEST_ARGS)

test-gpu: deps build
	cd $(BUILD) && ctest --output-on-failure -L gpu $(CTEST_ARGS)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DKILN_FUZZ=ON -DKILN_CUDA=OFF -DBUILD_TESTING=OFF
	cmake --build build-fuzz -j $(JOBS)
	@bash scripts/run-fuzz.sh build-fuzz $(FUZZ_SECONDS)

bench: build
	@echo "see docs/benchmarks.md"

clean:
	rm -rf build build-* 
