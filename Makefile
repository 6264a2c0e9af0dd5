# riskwatch — `make help` lists the targets; the ones a newcomer needs come first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= uv
PY := $(UV) run --frozen
PROTO_FILES := $(wildcard proto/riskwatch/v1/*.proto)
GEN_STAMP := libs/riskwatch/v1/__init__.py
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := frame records reply llmsim config api-keys grpcweb

.PHONY: fuzz bench bench-detector bench-scheduler bench-taskgen bench-conflicts help up up-streaming down test test-unit infra-up infra-down topics install proto models assets lint typecheck format clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

up: install proto models ## Run the whole system embedded in one process on the sample video (no Kafka/Redis needed)
	$(PY) python -m riskwatch_embedded

up-streaming: install proto models infra-up topics ## Start Kafka, Redis and every service as its own process
	bash scripts/start_streaming_services.sh --all

down: ## Stop whatever `make up*` started (services, then Kafka and Redis)
	-bash scripts/stop_streaming_services.sh --all
	bash deploy/local/infra.sh down

test: install proto models infra-up topics ## Run every test suite against real Kafka and Redis (what CI runs)
	$(PY) pytest

test-unit: install proto ## Fast tests only: no Kafka, Redis or end-to-end
	$(PY) pytest -m "not infra and not e2e"

fuzz: install proto models infra-up ## Long fuzz run (~12 min): hypothesis "long" profile, then atheris on each parser for FUZZ_SECONDS
	RW_FUZZ_PROFILE=long $(PY) pytest tests/fuzz -p no:cacheprovider -q
	set -eo pipefail; for target in $(FUZZ_TARGETS); do \
		mkdir -p var/fuzz/corpus/$$target; \
		echo "atheris: $$target ($(FUZZ_SECONDS) s)"; \
		$(PY) python tests/fuzz/atheris_targets.py $$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 \
			-print_final_stats=1 -artifact_prefix=var/fuzz/crash- var/fuzz/corpus/$$target 2>&1 | grep -v '^#'; \
	done

install: ## Install system packages (apt), Kafka jars, grpcurl and the Python workspace (idempotent)
	bash scripts/bootstrap.sh

proto: $(GEN_STAMP) ## Generate Python code and type stubs from proto/ into libs/riskwatch/v1

$(GEN_STAMP): $(PROTO_FILES)
	rm -rf libs/riskwatch/v1 && mkdir -p libs/riskwatch/v1
	$(PY) python -m grpc_tools.protoc -Iproto --python_out=libs --grpc_python_out=libs \
		--mypy_out=libs --mypy_grpc_out=libs $(PROTO_FILES)
	echo '"""Generated from proto/riskwatch/v1 by `make proto`; do not edit."""' > $@
	$(PY) buf lint proto

assets: ## Fetch the offline YOLO model and the sample video if absent
	bash scripts/fetch_assets.sh

models: assets ## Export the YOLO weights to ONNX (int8) and link models/detector.onnx (skipped when up to date)
	$(PY) python scripts/export_model.py

bench: install proto models infra-up ## 50 cameras × 2 FPS through the streaming stack (real detector, then replayed events) → bench-results/system.{json,md}; BENCH_ARGS=--quick for a ~2 min smoke
	$(PY) python -m tests.bench.bench_system $(BENCH_ARGS)

bench-detector: install proto models ## Detector: ultralytics baseline vs ONNX Runtime vs the gRPC service → bench-results/detector.json
	$(PY) python -m services.detector.bench.bench_detector $(BENCH_ARGS)

bench-taskgen: install proto models ## Task-generator policy vs one LLM call per group per frame (vtest.avi, 8 cameras, 2 FPS) → bench-results/taskgen.json
	$(PY) python -m services.scheduler.bench.bench_taskgen $(BENCH_ARGS)

bench-conflicts: install proto models ## Near-misses vs analytic truth: scenarios at 2, 5, 10 FPS through the real stages, vtest.avi sanity check → bench-results/conflicts.{json,md}; BENCH_ARGS=--quick for CI
	$(PY) python -m tests.scenarios.bench_conflicts $(BENCH_ARGS)

bench-scheduler: install proto infra-up ## Key pool + scheduler at 120 tasks/s for 60 s against 10 keys x 10 QPS → bench-results/scheduler.json
	$(PY) python -m services.scheduler.bench.bench_scheduler $(BENCH_ARGS)

infra-up: ## Start local Kafka (KRaft) and Redis on 127.0.0.1 (idempotent)
	bash deploy/local/infra.sh up

infra-down: ## Stop local Kafka and Redis
	bash deploy/local/infra.sh down

topics: ## Create the Kafka topics from config/kafka.yaml (idempotent)
	$(PY) python scripts/init_kafka_topics.py

lint: proto ## Ruff and buf lint (checks only)
	$(PY) ruff check .
	$(PY) ruff format --check .
	$(PY) buf lint proto

typecheck: proto ## mypy in strict mode
	$(PY) mypy libs/riskwatch services/*/riskwatch_* services/*/bench tests/support tests/faults tests/bench scripts
	$(PY) mypy tests/scenarios  # apart: it imports services/scheduler/bench by its package path

format: ## Format the code (changes files)
	$(PY) ruff format .
	$(PY) ruff check --fix .

clean: ## Remove generated code and caches (keeps var/ data)
	rm -rf libs/riskwatch/v1 .mypy_cache .ruff_cache .pytest_cache
