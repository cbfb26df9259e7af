variable "partition" {
  type        = string
  description = "AWS partition of every ARN (aws, aws-cn, aws-us-gov)."
}

variable "region" {
  type        = string
  description = "Region of the cluster, the groups and the deployed resources."
}

variable "account_id" {
  type        = string
  description = "Account id of the cluster, the groups and the deployed resources."
}

variable "cluster_name" {
  type        = string
  description = "EKS cluster whose nodes are recycled."
}

variable "group_names" {
  type        = list(string)
  description = "Auto Scaling groups the Lambda may change, by name; empty = select them by group_tag."
}

variable "group_tag" {
  type = object({
    key   = string
    value = string
  })
  description = "Tag that selects the groups (and, propagated at launch, their instances) when group_names is empty."
  default     = null
}

variable "function_arn" {
  type        = string
  description = "ARN of the Recycler Lambda the state machines invoke."
}

variable "lambda_log_group_arn" {
  type        = string
  description = "ARN of the Lambda's log group."
}

variable "recycle_state_machine_arn" {
  type        = string
  description = "ARN of the recycle state machine (the triggers start it)."
}

variable "vpc" {
  type        = bool
  description = "Whether the Lambda runs in a VPC (a private cluster endpoint): it then needs network-interface actions."
  default     = false
}
