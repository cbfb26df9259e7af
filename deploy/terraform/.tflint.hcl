# tflint's built-in Terraform rules, all of them (the AWS ruleset is a plugin
# download, which the tests cannot make; cfn-lint checks the AWS side instead).
plugin "terraform" {
  enabled = true
  preset  = "all"
}
