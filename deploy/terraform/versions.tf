terraform {
  # Terraform ≥ 1.6 or OpenTofu ≥ 1.6; the caller configures both providers.
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0" # EKS access entries, Lambda logging_config
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.20.0"
    }
  }
}
