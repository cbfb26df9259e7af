// Package deploy tests the Terraform module in deploy/terraform against the code it
// deploys: the state machines it renders are what `recycler asl` prints, its IAM
// policies and state machines pass cfn-lint (AWS's own resource specs), its interface
// is typed and described, and it is formatted and lint-clean. No AWS provider is
// reachable here, so the documents live in a provider-free submodule
// (deploy/terraform/modules/documents) that tofu renders offline.
package deploy
