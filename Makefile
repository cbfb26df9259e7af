# Recycler. `make demo` runs the main job on the built-in simulated cluster;
# `make test` runs golangci-lint, then every test. Both build or install what they need.
GO      ?= go
BIN     := bin/recycler
# Control-plane binaries (etcd, kube-apiserver, …, kwok) are built once per version here.
export RECYCLER_CACHE ?= $(CURDIR)/.cache
NODE_DIR := tools/node

.PHONY: deploy-documents demo-aws all build test demo bench lint node-deps controlplane tools clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/recycler

# The Lambda function: bootstrap for provided.al2023, arm64 and amd64, each zipped
# (bin/lambda/recycler-lambda-<arch>.zip, what deploy/terraform uploads).
LAMBDA_ARCHS := arm64 amd64
lambda-zip:
	@for arch in $(LAMBDA_ARCHS); do \
		mkdir -p bin/lambda/$$arch && \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -tags lambda.norpc -trimpath -ldflags='-s -w' \
			-o bin/lambda/$$arch/bootstrap ./cmd/lambda && \
		rm -f bin/lambda/recycler-lambda-$$arch.zip && \
		(cd bin/lambda/$$arch && python3 -m zipfile -c ../recycler-lambda-$$arch.zip bootstrap) && \
		echo bin/lambda/recycler-lambda-$$arch.zip || exit 1; \
	done

# npm packages used by tests (asl-validator, aws-local-stepfunctions).
node-deps: $(NODE_DIR)/node_modules/.installed
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Builds the control plane into $(RECYCLER_CACHE) (only what is missing).
controlplane:
	$(GO) run ./cmd/recycler controlplane build

# Builds the test tools (Lambda Runtime Interface Emulator, aws-iam-authenticator,
# tofu, tflint, terraform-config-inspect) into $(RECYCLER_CACHE) (only what is missing).
tools:
	$(GO) run ./cmd/recycler controlplane tools

# Lint first: a finding fails the gate in a minute, before the long run. The builds
# the tests need are made from the recipe, so they follow lint even under make -j.
test: lint
	$(MAKE) --no-print-directory node-deps controlplane tools
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...

demo: controlplane
	$(GO) run ./cmd/recycler demo

# The same recycle on the Step Functions path: the module's state machines on the
# simulated Step Functions, driven through the CLI's Step Functions client.
demo-aws: controlplane
	$(GO) run ./cmd/recycler demo --engine stepfunctions

bench: node-deps controlplane
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 60m ./...

# golangci-lint (pinned in tools/lint/go.mod, built into $(RECYCLER_CACHE) on first use)
# with .golangci.yaml: gofmt, goimports, go vet, staticcheck, errorlint, revive, gocyclo, ….
lint:
	@line=$$($(GO) run ./cmd/recycler controlplane tools golangci-lint) || exit 1; \
	echo "$${line#* } run ./..."; "$${line#* }" run ./...

# The Terraform module is published alone, so it carries copies of the state machines
# and of the recycle's RBAC rules (internal/kube.RBAC); deploy/kubernetes/rbac.yaml is
# serve's RBAC (internal/serve.RBAC). internal/deploy and internal/serve fail until
# they match the code.
deploy-documents:
	cp internal/recycle/statemachine.asl.json deploy/terraform/modules/documents/recycle.asl.json
	cp internal/recycle/rollback.asl.json deploy/terraform/modules/documents/rollback.asl.json
	mkdir -p bin && $(GO) build -o bin/recycler-documents ./cmd/recycler
	bin/recycler-documents rbac -o json > deploy/terraform/modules/documents/rbac.json
	bin/recycler-documents rbac --serve --serve-namespace recycler > deploy/kubernetes/rbac.yaml
	rm bin/recycler-documents

clean:
	rm -rf bin
