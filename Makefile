# Seq2seq chatbot: train, archive and serve with TorchServe.
# `make help` lists the targets. Variables can be overridden: `make mar CHECKPOINT=runs/x/4000_checkpoint.tar`.
# Each variable is the flag of the same name (DATA_PATH is --data-path, CHECKPOINT is --checkpoint).

SHELL := /bin/bash
REPO_DIR := $(dir $(abspath $(firstword $(MAKEFILE_LIST))))
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The KServe runtime's own venv (kserve 0.21.0 pins psutil<6, TorchServe's venv has psutil 7): requirements-kserve.txt
KSERVE_VENV := .venv-kserve
export PYTHONPATH := $(CURDIR)

.DEFAULT_GOAL := help

print-%: # A variable's value, for scripts (harness/images.py): make -s print-IMAGE
	@echo '$($*)'

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- setup
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-ui.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	# KServe's API field tables for tests/test_deploy.py: read from source, so none of its dependencies
	$(VENV)/bin/pip install -q --no-deps kserve==0.21.0
	touch $@

install: $(VENV)/.installed ## Create .venv and install pinned dependencies

test: install $(KSERVE_VENV)/.installed ## Run the test suite (starts and stops its own TorchServe and KServe runtime)
	$(PY) -m pytest -q -m "not images" tests

# The images, built and run as real containers (tests/test_images.py): a Docker engine is started if none answers
# (docker/engine.sh; stopped afterwards), and the bases are pulled, or built as stand-ins where they cannot be
# (docker/standin/bases.sh). Each image's bill of materials: logs/images/*.cdx.json.
test-images: install ## Build our three images and test the running containers (~15 min the first time, starts a Docker engine if needed)
	@eval "$$(docker/engine.sh start)" && trap 'docker/engine.sh stop' EXIT && \
	  DOCKER=$$DOCKER docker/standin/bases.sh && \
	  DOCKER=$$DOCKER $(PY) -m pytest -q -m images tests/test_images.py

test-unit: install ## The tests that need no server, browser or Java (pytest -m "not server"): ~1.5 min instead of ~4
	$(PY) -m pytest -q -m "not server and not images" tests

# The serving image's runtime (pytorch/torchserve:0.12.0-gpu: Python 3.9, torch 2.4.0, TorchServe 0.12.0),
# natively: torch 2.4 from PyPI is ~2.8 GB of CUDA wheels, kept in IMAGE_WHEELS after the first download.
IMAGE_PYTHON ?= $(or $(shell ls -d $(HOME)/.pyenv/versions/3.9*/bin/python 2>/dev/null | tail -1),\
	$(shell python3.9 -c 'import sys; print(sys.executable)' 2>/dev/null))
IMAGE_VENV := .venv-image
IMAGE_WHEELS ?= $(HOME)/.cache/seq2seq-py39-wheels

$(IMAGE_VENV)/.installed: requirements-image.txt
	@[ -n "$(IMAGE_PYTHON)" ] || { echo "error: no Python 3.9 found: install one (pyenv install 3.9) or pass IMAGE_PYTHON=" >&2; exit 1; }
	$(IMAGE_PYTHON) -m venv $(IMAGE_VENV)
	$(IMAGE_VENV)/bin/pip install -q --no-index --find-links $(IMAGE_WHEELS) -r requirements-image.txt 2>/dev/null || \
	  { $(IMAGE_VENV)/bin/pip download -q -d $(IMAGE_WHEELS) -r requirements-image.txt && \
	    $(IMAGE_VENV)/bin/pip install -q --no-index --find-links $(IMAGE_WHEELS) -r requirements-image.txt; }
	touch $@

test-image-runtime: install $(IMAGE_VENV)/.installed ## Serve the archive on Python 3.9 / torch 2.4 / TorchServe 0.12 and compare replies
	$(PY) -m harness.image_runtime --python $(IMAGE_VENV)/bin/python

$(KSERVE_VENV)/.installed: requirements-kserve.txt
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install -q --upgrade pip
	$(KSERVE_VENV)/bin/pip install -q -r requirements-kserve.txt
	touch $@

install-kserve: $(KSERVE_VENV)/.installed ## Create .venv-kserve: KServe's model server for make serve-kserve

.PHONY: help install install-kserve test test-images test-unit test-image-runtime

# ---------------------------------------------------------------- data and training
# make data [DATA_PATH=dir]; make train [CORPUS=cornell DATA_PATH=... ITERATIONS=4000 DEVICE=auto TRAIN_ARGS=...];
# make chat [CHECKPOINT=...]. More knobs: python -m train.main --help.
DATA_PATH ?=
CORPUS ?= cornell
ITERATIONS ?= 4000
DEVICE ?= auto
TRAIN_ARGS ?=
data_path_flag = $(if $(DATA_PATH),--data-path "$(DATA_PATH)")

data: ## Put the Cornell corpus in data/cornell (DATA_PATH=dir links an existing copy, else downloads)
	$(PY) -m train.get_cornell $(data_path_flag)

train: ## Train the tutorial's recipe -> runs/<corpus>/ (CORPUS=cornell DATA_PATH ITERATIONS DEVICE TRAIN_ARGS)
	$(PY) -m train.main --corpus $(CORPUS) $(data_path_flag) --iterations $(ITERATIONS) --device $(DEVICE) $(TRAIN_ARGS)

# The bundled chatterbot corpus is small: keep every word (min-count 1). With DATA_PATH, the Cornell corpus there.
# LANGUAGE=chinese (or any chatterbot-corpus language: spanish, japanese, ...): a byte-level BPE bot on that
# language's conversations, which the word recipe's a-z normaliser would empty.
LANGUAGE ?=
DEMO_BPE = --tokenizer bpe --vocab-size 2000 --max-length 24
# The demo's small talk (greetings, name, thanks, goodbye) beside the chatterbot corpus, where there is one
DEMO_SMALLTALK = $(if $(DATA_PATH),,$(addprefix --extra-pairs ,$(wildcard train/smalltalk/$(or $(LANGUAGE),english).tsv)))
DEMO_DATA = $(if $(DATA_PATH),--corpus cornell $(data_path_flag),$(if $(LANGUAGE),\
	--corpus chatterbot --language $(LANGUAGE) $(DEMO_BPE),--corpus chatterbot --min-count 1)) $(DEMO_SMALLTALK)
# The demo archives' served default: no bigram twice in a reply (a small bot stutters otherwise: 1 Chinese
# held-out reply in 24 repeated one token three times; docs/benchmarks.md). Tutorial archives keep greedy's 0.
# The everyday bot (CORPUS=chitchat) searches 5 beams besides: its greedy replies read sensibly to 2 of 20 unseen
# student prompts, beam 5 to 6 (docs/benchmarks.md "The everyday bot")
DEMO_DEFAULTS = $(if $(filter chitchat,$(CORPUS)),--default beam_size=5) --default no_repeat_ngram_size=2
# CORPUS=chitchat: the everyday bot, chitchat-dataset's 7,168 student conversations plus the small talk, reading the
# turn before the user's (docs/benchmarks.md "The everyday bot"). --minutes caps a loaded machine's run.
CHITCHAT_RECIPE = --corpus chitchat --context-turns 1 --context-dropout 0.5 --hidden-size 500 \
	--heldout-fraction 0.1 --iterations 1250 --minutes 18 --save-every 250 $(DEMO_SMALLTALK)
DEMO_RECIPE = $(if $(filter chitchat,$(CORPUS)),$(CHITCHAT_RECIPE),$(DEMO_DATA) --hidden-size 256 --iterations 1000 \
	--save-every 250)
MAR_ARGS ?=
# What make demo asks the bot: examples/hello.<LANGUAGE>.txt when there is one
HELLO ?= $(firstword $(wildcard examples/hello.$(LANGUAGE).txt) hello.txt)

train-demo: ## Train a small bot (~2-3 CPU minutes) on the bundled chatterbot corpus (LANGUAGE=chinese: BPE; CORPUS=chitchat: the everyday bot, ~10), or DATA_PATH's Cornell -> runs/demo/
	$(PY) -m train.main $(DEMO_RECIPE) --save-dir runs/demo --device $(DEVICE)

chat: ## Chat with a checkpoint in the terminal (CHECKPOINT=path, default: newest runs/**/best_checkpoint.tar)
	$(PY) -m tools.chat $(checkpoint_flag)

.PHONY: data train train-demo chat

# ---------------------------------------------------------------- serving
# make mar [CHECKPOINT=...] -> model-store/seq2seq.mar; make serve [TOKEN_AUTH=1] (Docker when an engine
# answers, else native; DOCKER_GPUS= for a host without the NVIDIA runtime); make stop.
# ping/predict/models send the keys of key_file.json when it exists (token mode).
CHECKPOINT ?=
checkpoint_flag = $(if $(CHECKPOINT),--checkpoint "$(CHECKPOINT)")
TEXT ?= Hello there! How are you?
TOKEN_AUTH ?= 0
# The served model and its archive: config.properties' load_models=<model>=<archive>.mar, their one definition
# (tools/server_config.py reads it, and renders every variant of that file: plain Python, no install needed)
# by path, so the Makefile also works from another directory (make -f .../Makefile -C checkout)
SERVER_CONFIG := $(PYTHON) $(REPO_DIR)tools/server_config.py
MODEL_NAME := $(shell $(SERVER_CONFIG) --print model_name)
ARCHIVE_NAME := $(shell $(SERVER_CONFIG) --print archive_name)
# The allocator the servers preload: tcmalloc where installed (apt install libtcmalloc-minimal4), ~15% more
# requests/s; MALLOC=path for another, MALLOC= for glibc's (tools/server_config.py's malloc_library decides)
PRELOAD := $(shell $(SERVER_CONFIG) --print malloc)
MODEL_STORE := model-store
INFERENCE_URL := http://127.0.0.1:8080
MANAGEMENT_URL := http://127.0.0.1:8081
METRICS_URL := http://127.0.0.1:8082
KEY_FILE := key_file.json
TS_TMP := $(CURDIR)/logs/tmp
comma := ,
# TorchServe keeps its pid file in $$TMPDIR: a project-local one; PYTHONPATH unset so the workers
# import the `model` package shipped in the archive.
TS_ENV := env -u PYTHONPATH -u LD_PRELOAD $(if $(PRELOAD),LD_PRELOAD=$(PRELOAD)) TMPDIR=$(TS_TMP) TEMP=$(TS_TMP) \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH
TS_CONFIG := $(if $(filter 1,$(TOKEN_AUTH)),logs/token-config.properties,config.properties)
token_flag = $(if $(filter 1,$(TOKEN_AUTH)),--token-auth)
DOCKER ?= docker
# BuildKit for every build: the per-Dockerfile .dockerignore files keep the context to what the image copies (the
# legacy builder ignores them and sends the whole checkout, .venv included)
DOCKER_BUILD = DOCKER_BUILDKIT=1 $(DOCKER) build $(docker_build_flags)
# An engine without a bridge network (dockerd --bridge=none, as docker/engine.sh starts one in a sandbox) runs
# builds and containers on the host's network: -p would be dropped silently, so the container binds 127.0.0.1 itself
docker_host_network = $$($(DOCKER) network inspect bridge >/dev/null 2>&1 || echo 1)
docker_build_flags = $$([ -n "$(docker_host_network)" ] && echo --network host) $(DOCKER_BUILD_SECRETS)
# How a container is reached: its ports published on the host's loopback, or (host network) bound there
docker_ports = $$(if [ -n "$(docker_host_network)" ]; then echo --network host -e TS_BIND_ADDRESS=127.0.0.1; \
	else echo -p 127.0.0.1:8080:8080 -p 127.0.0.1:8081:8081 -p 127.0.0.1:8082:8082; fi)
# The GPUs: --gpus all where the engine has the NVIDIA runtime, else CPU (said so); DOCKER_GPUS= forces CPU
DOCKER_GPUS ?= $$($(DOCKER) info -f '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"' && echo --gpus all)
gpu_note = $$([ -n "$(DOCKER_GPUS)" ] && echo "on the GPUs ($(DOCKER_GPUS))" || \
	echo "on the CPU: the engine has no NVIDIA runtime")
# pip inside a build reaches the index as pip does here: this machine's pip.conf, PIP_* variables and CA bundle, as
# BuildKit secrets (never stored in a layer). Nothing of them is written into the repo.
PIP_ENV_FILE := logs/pip.env
CA_BUNDLE ?= $(or $(PIP_CERT),$(wildcard /etc/ssl/certs/ca-certificates.crt))
DOCKER_BUILD_SECRETS = --secret id=pip.env$(comma)src=$(PIP_ENV_FILE) \
	$(if $(wildcard /etc/pip.conf),--secret id=pip.conf$(comma)src=/etc/pip.conf) \
	$(if $(CA_BUNDLE),--secret id=ca$(comma)src=$(CA_BUNDLE))
write_pip_env = mkdir -p logs && env | grep '^PIP_' | while IFS='=' read -r k v; do printf 'export %s=%q\n' "$$k" "$$v"; \
	done > $(PIP_ENV_FILE)
# docker/Dockerfile's `runtime` stage: pytorch/torchserve:0.12.0-gpu plus tokenizers (byte-level BPE models)
RUNTIME_IMAGE ?= seq2seq-torchserve-runtime:0.12.0
TS_CONTAINER := seq2seq-torchserve
DOCKER_CONFIG := logs/$(if $(filter 1,$(TOKEN_AUTH)),token-)container-config.properties
# How long `make stop` (docker stop) lets the container drain and stop before killing it
STOP_TIMEOUT_S ?= 30
IMAGE ?= seq2seq-torchserve:1.0

# curl option with the key of the "inference" or "management" API, when key_file.json exists
ts_auth = $$([ -f $(KEY_FILE) ] && echo --oauth2-bearer \
	$$($(PY) -c 'import json; print(json.load(open("$(KEY_FILE)"))["$(1)"]["key"])'))
token_hint = $(if $(filter 1,$(TOKEN_AUTH)), --oauth2-bearer INFERENCE_KEY (token mode: keys in $(KEY_FILE)))
MAR ?= $(MODEL_STORE)/$(ARCHIVE_NAME).mar
check_mar = [ -f $(MAR) ] || { echo "error: $(MAR) not found: run 'make mar' first" >&2; exit 1; }
check_java = java_major=$$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -1); \
	[ "$${java_major:-0}" -ge 17 ] || { echo "error: native TorchServe needs Java 17+ (found: $${java_major:-none});" \
	"install it with: sudo apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
# $(1): where the logs are; $(2): a command that fails once the server has died (then waiting is over)
wait_ready = for i in $$(seq 120); do \
	  curl -sf $(call ts_auth,management) $(MANAGEMENT_URL)/models/$(MODEL_NAME) 2>/dev/null | grep -q '"READY"' && \
	  { echo "TorchServe is up: curl $(INFERENCE_URL)/predictions/$(MODEL_NAME) -T $(HELLO)$(token_hint)"; exit 0; }; \
	  $(or $(2),true) || { echo "error: TorchServe exited while starting: see $(1)" >&2; exit 1; }; \
	  sleep 1; done; \
	echo "error: $(MODEL_NAME) not ready after 120 s: see $(1)" >&2; exit 1
native_serve = $(check_java) && mkdir -p $(TS_TMP) && \
	$(TS_ENV) torchserve --start --ncs --ts-config $(TS_CONFIG) --model-store $(MODEL_STORE) >logs/torchserve.out 2>&1 && \
	$(call wait_ready,logs/torchserve.out$(comma) logs/ts_log.log and logs/model_log.log)
container_running = [ "$$($(DOCKER) inspect -f '{{.State.Running}}' $(TS_CONTAINER) 2>/dev/null)" = true ]
# No --rm: a container that dies at start-up keeps its logs for `docker logs` (make stop removes it)
docker_runtime = $(write_pip_env) && $(DOCKER_BUILD) -q --target runtime -f docker/Dockerfile -t $(RUNTIME_IMAGE) .
docker_serve = $(docker_runtime) >/dev/null || exit 1; \
	$(DOCKER) rm -f $(TS_CONTAINER) >/dev/null 2>&1; \
	echo "Serving in a container $(gpu_note)."; \
	$(DOCKER) run -d --name $(TS_CONTAINER) $(DOCKER_GPUS) $(docker_ports) \
	  -v "$(CURDIR)/$(MODEL_STORE):/home/model-server/model-store:ro" \
	  -v "$(CURDIR)/$(DOCKER_CONFIG):/home/model-server/config.properties:ro" \
	  -v "$(CURDIR)/handler/metrics.yaml:/home/model-server/metrics.yaml:ro" \
	  $(RUNTIME_IMAGE) >/dev/null && \
	$(if $(filter 1,$(TOKEN_AUTH)),$(copy_key_file) &&) \
	$(call wait_ready,$(DOCKER) logs $(TS_CONTAINER),$(container_running)) || \
	{ $(DOCKER) logs --tail 30 $(TS_CONTAINER) >&2; exit 1; }

copy_key_file = for i in $$(seq 60); do \
	  $(DOCKER) cp $(TS_CONTAINER):/home/model-server/$(KEY_FILE) $(KEY_FILE) 2>/dev/null && break; sleep 1; done; \
	[ -f $(KEY_FILE) ] && echo "Token mode: keys copied to $(KEY_FILE)"

mar: ## Validate the checkpoint (ours or the tutorial's) and build model-store/seq2seq.mar (CHECKPOINT=path, default: newest runs/**/best_checkpoint.tar)
	$(PY) -m tools.build_mar $(checkpoint_flag) $(MAR_ARGS)

serve: $(if $(filter 1,$(TOKEN_AUTH)),$(TS_CONFIG)) ## Serve the archive: Docker (the GPU runtime image, built from docker/Dockerfile) if an engine answers, else native; TOKEN_AUTH=1 for token mode
	@$(check_mar)
	@if $(DOCKER) info >/dev/null 2>&1; then \
	  mkdir -p logs && $(SERVER_CONFIG) container $(token_flag) -o $(DOCKER_CONFIG) && $(docker_serve); \
	else \
	  echo "No container engine answers ('$(DOCKER) info' failed): serving natively instead."; \
	  $(native_serve); \
	fi

serve-local: $(if $(filter 1,$(TOKEN_AUTH)),$(TS_CONFIG)) ## Serve the archive with native TorchServe (needs Java 17+); TOKEN_AUTH=1 for token mode
	@$(check_mar)
	@$(native_serve)

# make serve-kserve [KSERVE_PORT=8180]: the same archive on KServe's Python model server (kserve_runtime/), in the
# background on 127.0.0.1, beside TorchServe if it runs; make stop stops both.
KSERVE_PORT ?= 8180
KSERVE_URL = http://127.0.0.1:$(KSERVE_PORT)
KSERVE_PID ?= logs/kserve.pid
KSERVE_IMAGE ?= seq2seq-kserve:1.0

serve-kserve: $(KSERVE_VENV)/.installed ## Serve the archive on KServe's model server instead, on 127.0.0.1:$(KSERVE_PORT) (KSERVE_PORT=...)
	@$(check_mar)
	@mkdir -p logs
	@if [ -f $(KSERVE_PID) ] && kill -0 $$(cat $(KSERVE_PID)) 2>/dev/null; then \
	  echo "error: the KServe runtime already runs (pid $$(cat $(KSERVE_PID))): make stop first" >&2; exit 1; fi
	@nohup env -u LD_PRELOAD $(if $(PRELOAD),LD_PRELOAD=$(PRELOAD)) \
	  $(KSERVE_VENV)/bin/python -m kserve_runtime --mar $(MAR) --model-name $(MODEL_NAME) \
	  --http-port $(KSERVE_PORT) >logs/kserve.log 2>&1 < /dev/null & echo $$! > $(KSERVE_PID)
	@for i in $$(seq 120); do \
	  curl -sf $(KSERVE_URL)/v2/models/$(MODEL_NAME)/ready >/dev/null 2>&1 && { echo "KServe runtime is up:" \
	    "curl $(KSERVE_URL)/v1/models/$(MODEL_NAME):predict -H 'Content-Type: application/json'" \
	    "-d '{\"instances\": [{\"text\": \"hello\"}]}'"; exit 0; }; \
	  kill -0 $$(cat $(KSERVE_PID)) 2>/dev/null || break; sleep 1; done; \
	echo "error: the KServe runtime is not ready: see logs/kserve.log" >&2; tail -5 logs/kserve.log >&2; exit 1

# TORCH_WHEELS=dir: take the CPU torch wheel from that folder (e.g. one PIP_FIND_LINKS names) instead of PyTorch's
# CPU index (TORCH_INDEX); TORCH_INDEX=https://pypi.org/simple builds the CUDA variant for GPU nodes
TORCH_WHEELS ?=
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
docker-build-kserve: ## Build the KServe runtime image $(KSERVE_IMAGE), CPU torch (docker/Dockerfile.kserve; TORCH_WHEELS=dir, TORCH_INDEX=url)
	@rm -rf docker/.wheels && mkdir -p docker/.wheels
	$(if $(TORCH_WHEELS),cp -l $(TORCH_WHEELS)/torch-$(shell sed -n 's/^torch==//p' requirements-kserve.txt)+cpu-*.whl \
	  docker/.wheels/ 2>/dev/null || cp $(TORCH_WHEELS)/torch-*+cpu-*.whl docker/.wheels/)
	@$(write_pip_env)
	$(DOCKER_BUILD) --build-arg TORCH_INDEX=$(TORCH_INDEX) -f docker/Dockerfile.kserve -t $(KSERVE_IMAGE) .

logs/token-config.properties: config.properties tools/server_config.py
	@$(SERVER_CONFIG) local --token-auth -o $@

stop: ## Stop TorchServe (container and native) and the KServe runtime, and remove stale pid and key files
	@if $(DOCKER) inspect $(TS_CONTAINER) >/dev/null 2>&1; then \
	  $(DOCKER) stop -t $(STOP_TIMEOUT_S) $(TS_CONTAINER) >/dev/null; \
	  echo "Stopped container $(TS_CONTAINER) (exit code $$($(DOCKER) inspect -f '{{.State.ExitCode}}' $(TS_CONTAINER)))."; \
	  $(DOCKER) rm $(TS_CONTAINER) >/dev/null; fi
	@[ ! -d $(TS_TMP) ] || [ ! -x $(VENV)/bin/torchserve ] || $(TS_ENV) torchserve --stop --foreground
	@[ ! -f $(KSERVE_PID) ] || { kill $$(cat $(KSERVE_PID)) 2>/dev/null && echo "Stopped the KServe runtime."; \
	  rm -f $(KSERVE_PID); }
	@rm -f $(TS_TMP)/.model_server.pid $(KEY_FILE)

ping: ## Health check: GET :8080/ping
	@curl -sS $(call ts_auth,inference) $(INFERENCE_URL)/ping

predict: ## Ask the served bot: make predict TEXT="how are you?"
	@$(PY) -m tools.client --url $(INFERENCE_URL) --model $(MODEL_NAME) \
	  $$([ -f $(KEY_FILE) ] && echo --token-auth --key-file $(KEY_FILE)) '$(subst ','"'"',$(TEXT))'

models: ## List the models and describe the served one (management API, :8081)
	@curl -sS $(call ts_auth,management) $(MANAGEMENT_URL)/models
	@curl -sS $(call ts_auth,management) $(MANAGEMENT_URL)/models/$(MODEL_NAME)

metrics: ## Prometheus metrics (:8082): TorchServe's ts_* and the handler's seq2seq_*
	@curl -sS $(METRICS_URL)/metrics | grep -v '^#'

docker-runtime: ## Build the image make serve runs: $(RUNTIME_IMAGE) (docker/Dockerfile's runtime stage)
	@$(docker_runtime)

docker-build: ## Build the deployable image $(IMAGE) from docker/Dockerfile (config + archive baked in)
	@$(check_mar)
	@$(write_pip_env)
	$(DOCKER_BUILD) -f docker/Dockerfile -t $(IMAGE) .

UI_PORT ?= 7860

$(VENV)/.ui-installed: requirements-ui.txt
	@[ -d $(VENV) ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-ui.txt
	touch $@

ui: $(VENV)/.ui-installed ## Chat in the browser with the served bot: http://127.0.0.1:$(UI_PORT) (UI_PORT=...)
	$(PY) -m tools.chat_page --url $(INFERENCE_URL) --model $(MODEL_NAME) --port $(UI_PORT) \
	  $$([ -f $(KEY_FILE) ] && echo --token-auth --key-file $(KEY_FILE))

.PHONY: mar serve serve-local serve-kserve stop ping predict models metrics docker-runtime docker-build \
	docker-build-kserve ui

# ---------------------------------------------------------------- Kubernetes and KServe
# make k8s: deploy/rendered/{dev,prod}.yaml from the kustomize overlays (kubectl kustomize). Their ConfigMap is
# the kubernetes variant of config.properties: the container's, management API on the pod's loopback (and, in
# prod, token mode on). make kserve-store: KServe's storage layout from model-store/seq2seq.mar.
K8S_ENVS := dev prod
KSERVE_STORE ?= deploy/kserve/store

deploy/generated/config.properties: config.properties tools/server_config.py
	@$(SERVER_CONFIG) kubernetes -o $@

deploy/generated/token-config.properties: config.properties tools/server_config.py
	@$(SERVER_CONFIG) kubernetes --token-auth -o $@

k8s: deploy/generated/config.properties deploy/generated/token-config.properties ## Render the Kubernetes manifests: deploy/rendered/{dev,prod}.yaml
	@mkdir -p deploy/rendered
	@for env in $(K8S_ENVS); do \
	  kubectl kustomize --load-restrictor=LoadRestrictionsNone deploy/overlays/$$env > deploy/rendered/$$env.yaml && \
	  echo "wrote deploy/rendered/$$env.yaml"; done

kserve-store: ## Lay out deploy/kserve/store (config/config.properties, model-store/seq2seq.mar) for KServe
	@$(check_mar)
	@mkdir -p $(KSERVE_STORE)/model-store
	cp $(MAR) $(KSERVE_STORE)/model-store/$(ARCHIVE_NAME).mar
	$(PY) -m tools.server_config kserve -o $(KSERVE_STORE)/config/config.properties
	@echo "wrote $(KSERVE_STORE): copy it to the storage deploy/kserve/inferenceservice.yaml's storageUri names"

.PHONY: k8s kserve-store

# ---------------------------------------------------------------- performance
# make bench-serve [CHECKPOINT=...] [DATA_PATH=dir] [BENCH_ARGS="--concurrency 1 16"]: its own native TorchServe
# per scenario (echo, chatbot batch 1, batched; greedy, beam5, sample as JSON; openai; kserve; before: compiled_decode
# false; litserve: the tutorial's own loop under LitServe, the peer); docs/benchmarks.md explains the figures.
# make bench-quant [CHECKPOINT=...]: int8 and fp16 against float32 on the checkpoint's held-out pairs.
# make bench-decoding [CHECKPOINT=...]: greedy, beam5 and sample in-process (no TorchServe): time, steps, rows.
BENCH_ARGS ?=

bench-serve: ## Load-test TorchServe, echo vs chatbot at 1-64 clients (last lines: serve_ratio_vs_echo_c16, ...)
	$(PY) -m bench.serve_bench $(checkpoint_flag) $(data_path_flag) $(BENCH_ARGS)

bench-quant: ## Quantised vs float32 held-out loss and greedy replies (CHECKPOINT=path, default: newest runs/**/best_checkpoint.tar)
	$(PY) -m bench.quant_quality $(checkpoint_flag) $(data_path_flag)

bench-decoding: ## Greedy, beam-5 and sampling cost in-process: ms, decoder steps and rows per batch (last lines: *_vs_greedy_*)
	$(PY) -m bench.decoding_cost $(checkpoint_flag) $(data_path_flag)

bench-train: ## Time the tutorial's step loop against the fast training path (last line: train_speedup)
	$(PY) -m bench.train_bench $(data_path_flag)

.PHONY: bench-serve bench-quant bench-decoding bench-train

# ---------------------------------------------------------------- reliability
# make soak [SOAK_ARGS="--clients 64 --seconds 60 --checkpoint runs/x/4000_checkpoint.tar"]: not part of
# `make test`. Its own native TorchServe on free ports; every reply checked; exit 1 on any failure.
# `python -m harness.soak --help` lists the knobs; docs/SECURITY.md says what the tests prove.
SOAK_ARGS ?=
FAILOVER_ARGS ?=

soak: ## Long reliability runs: hostile mix, 64 clients x 60 s, worker SIGKILL; replica failover; 2-process training (SOAK_ARGS=...)
	$(PY) -m harness.soak $(SOAK_ARGS)
	$(PY) -m harness.failover $(FAILOVER_ARGS)
	$(PY) -m pytest -q tests/test_ddp.py

.PHONY: soak

# ---------------------------------------------------------------- demo
demo: install ## Install, train a small bot, archive the checkpoint training chose to serve, serve it natively, ask it hello.txt (LANGUAGE=chinese: a BPE bot asked 你好)
	rm -rf runs/demo
	$(MAKE) --no-print-directory train-demo
	$(MAKE) --no-print-directory mar CHECKPOINT=runs/demo/best_checkpoint.tar MAR_ARGS="$(DEMO_DEFAULTS)"
	$(MAKE) --no-print-directory stop
	$(MAKE) --no-print-directory serve-local
	@echo '$$ curl $(INFERENCE_URL)/predictions/$(MODEL_NAME) -T $(HELLO)'
	@curl -sS $(INFERENCE_URL)/predictions/$(MODEL_NAME) -T $(HELLO)
	@echo "The server is still up: make predict TEXT='how are you?', make models, make metrics; make stop ends it."

.PHONY: demo
