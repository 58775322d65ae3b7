# sdlab: `make run` serves the default model, `make test` runs the whole suite.
# Both do all set-up on a fresh machine.

CARGO      ?= cargo
SDLAB_CACHE_DIR ?= .cache
export SDLAB_CACHE_DIR
RELEASE    := target/release/sdlab
MODEL      ?= smollm2-135m-instruct
PROMPT     ?= What is the capital of France?

.PHONY: all build run chat learn test models vulkan bench bench-rag clean lint fmt check lora-demo

all: build

build:
	$(CARGO) build --release

## Fetch the real models and data into .cache/ (idempotent, checksummed).
models:
	./scripts/fetch-models.sh

HOST       ?= 127.0.0.1
PORT       ?= 8000

## Build, fetch the default model, and serve it (OpenAI-compatible API).
run: models build
	@echo "try: curl http://$(HOST):$(PORT)/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "       -d '{\"model\": \"$(MODEL)\", \"messages\": [{\"role\": \"user\", \"content\": \"$(PROMPT)\"}]}'"
	$(RELEASE) serve --model $(MODEL) --host $(HOST) --port $(PORT)

## An interactive chat in the terminal on the same engine.
chat: models build
	$(RELEASE) chat --model $(MODEL)

## The lesson menu: modules, lessons, run / explain / code (q quits).
learn: models build
	$(RELEASE) learn

## A Vulkan driver for the GPU kernel tests: lavapipe (Mesa's software
## Vulkan) unless it is installed. The tests prefer a real GPU when one is there.
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
vulkan:
	@if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then :; else \
	  echo "installing lavapipe (mesa-vulkan-drivers, libvulkan1)"; \
	  $(SUDO) apt-get install -y mesa-vulkan-drivers libvulkan1 || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y mesa-vulkan-drivers libvulkan1; }; \
	fi

## Everything the suite needs, then the suite (real-model and GPU checks included).
test: models vulkan
	SDLAB_REQUIRE_REAL_MODELS=1 SDLAB_REQUIRE_NETWORK_TESTS=1 SDLAB_REQUIRE_GPU=1 $(CARGO) test --workspace --all-targets
	SDLAB_REQUIRE_REAL_MODELS=1 $(CARGO) test --workspace --doc
	$(CARGO) test -p hld --features shuttle --test shuttle

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

check: lint test

## Speed of the default model: single-stream decode and prompt processing,
## quantized against f32 weights (see docs/BENCHMARKS.md).
bench: models build
	$(RELEASE) bench model --model $(MODEL)
	$(RELEASE) bench batching --model $(MODEL) --json target/bench-batching.json --plot target/bench-batching.svg

## Retrieval: embedding throughput (batch 32 and 1, both encoders), FAQ
## retrieval per chunker against BM25 and hybrid, and the GloVe-50 ANN sweep
## (about 25 minutes on 2 cores, most of it the HNSW build).
SENTENCES  := target/python-doc-sentences.txt
bench-rag: models build
	./scripts/doc-sentences.sh $(SDLAB_CACHE_DIR)/data/python3.11-doc 2000 > $(SENTENCES)
	for bs in 32 1; do for be in packed candle; do \
	  $(RELEASE) embed --stdin --batch-size $$bs --backend $$be --stats < $(SENTENCES) > /dev/null; done; done
	$(RELEASE) rag eval --dataset python-faq --json target/rag-eval.json
	$(RELEASE) rag eval-ann --dataset glove50 --ef 10,20,40,80,120,160,320 --json target/eval-ann.json

## Train the pirate-style LoRA adapter on data/lora/pirate.jsonl (about 10
## minutes on 2 cores), then answer one question with and without it.
LORA_DIR   ?= $(SDLAB_CACHE_DIR)/lora
QUESTION   ?= What is the capital of Portugal?
lora-demo: models build
	$(RELEASE) lora train --model $(MODEL) --data data/lora/pirate.jsonl --rank 8 --steps 80 --out $(LORA_DIR)/pirate
	$(RELEASE) generate --model $(MODEL) --chat --max-tokens 60 --prompt "$(QUESTION)"
	$(RELEASE) generate --model $(MODEL) --chat --max-tokens 60 --prompt "$(QUESTION)" --lora $(LORA_DIR)/pirate

clean:
	$(CARGO) clean
	rm -rf $(SDLAB_CACHE_DIR)/dl
