// Pins OpenTofu for the Terraform module's tests. OpenTofu's own go.mod has a
// replace directive, which `go install`/`go build` from another module ignore:
// internal/testenv downloads exactly this version (`go mod download -json`) and
// builds ./cmd/tofu inside that module's folder. Not buildable from here.
module github.com/recycler/recycler/tools/tofu

go 1.26.0

require github.com/opentofu/opentofu v1.12.6
