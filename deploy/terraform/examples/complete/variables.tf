variable "cluster_name" {
  type        = string
  description = "The EKS cluster."
}

variable "region" {
  type        = string
  description = "Region of the cluster."
  default     = "eu-west-1"
}
