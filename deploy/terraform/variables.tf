variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster whose worker nodes are recycled."

  validation {
    condition     = can(regex("^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be an EKS cluster name: 1–100 letters, digits, - and _, starting with a letter or digit."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every named resource (Lambda, roles, state machines, log groups, rules), so two instances of the module never collide."
  default     = "recycler"

  validation {
    # 32 characters leave room for the longest suffix within the 64-character limits of IAM role and Lambda names.
    condition     = can(regex("^[A-Za-z][A-Za-z0-9-]{0,31}$", var.name_prefix))
    error_message = "name_prefix must be 1–32 letters, digits and -, starting with a letter."
  }
}

variable "group_names" {
  type        = list(string)
  description = "Auto Scaling groups Recycler may change, by name. Set this or group_tag."
  default     = []

  validation {
    condition     = alltrue([for g in var.group_names : length(g) >= 1 && length(g) <= 255 && !startswith(g, "arn:")])
    error_message = "group_names must be Auto Scaling group names (1–255 characters), not ARNs."
  }
}

variable "group_tag" {
  type = object({
    key   = string
    value = string
  })
  description = "Tag selecting the Auto Scaling groups Recycler may change, when group_names is empty. The groups must propagate it to their instances at launch (PropagateAtLaunch), since instance actions are scoped by it too."
  default     = null

  validation {
    condition     = var.group_tag == null || (try(length(var.group_tag.key), 0) >= 1 && !startswith(try(var.group_tag.key, ""), "aws:"))
    error_message = "group_tag.key must be a non-empty tag key that does not start with aws:."
  }
}

variable "lambda_zip" {
  type        = string
  description = "Path of the Lambda package built by `make lambda-zip` (a zip holding the `bootstrap` binary)."

  validation {
    condition     = endswith(var.lambda_zip, ".zip")
    error_message = "lambda_zip must be the path of a .zip file (make lambda-zip builds it)."
  }
}

variable "lambda_architecture" {
  type        = string
  description = "Architecture of the bootstrap binary in lambda_zip: arm64 or x86_64."
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "defaults" {
  type = object({
    selector            = optional(string, "")
    namespaces          = optional(list(string), [])
    max_wait            = optional(string, "24h")
    on_timeout          = optional(string, "fail")
    retire              = optional(string, "terminate")
    replacement_timeout = optional(string, "15m")
    check_seconds       = optional(number, 600)
  })
  description = "Request options of the recycles the triggers start: pods to wait for (label selector and namespaces), how long (max_wait, a Go duration), what happens then (on_timeout: fail, evict or force), retire (terminate or stop), and how long one check may block (check_seconds, 1–600: longer saves Step Functions history events)."
  default     = {}

  validation {
    condition     = can(regex("^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$", var.defaults.max_wait)) && can(regex("^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$", var.defaults.replacement_timeout))
    error_message = "defaults.max_wait and defaults.replacement_timeout must be Go durations such as 90m or 24h."
  }
  validation {
    condition     = contains(["fail", "evict", "force"], var.defaults.on_timeout)
    error_message = "defaults.on_timeout must be fail, evict or force."
  }
  validation {
    condition     = contains(["terminate", "stop"], var.defaults.retire)
    error_message = "defaults.retire must be terminate or stop."
  }
  validation {
    condition     = var.defaults.check_seconds >= 1 && var.defaults.check_seconds <= 600 && floor(var.defaults.check_seconds) == var.defaults.check_seconds
    error_message = "defaults.check_seconds must be a whole number from 1 to 600."
  }
  validation {
    condition     = alltrue([for ns in var.defaults.namespaces : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", ns))])
    error_message = "defaults.namespaces must be Kubernetes namespace names."
  }
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets for the Lambda when the cluster endpoint is private (with security_group_ids); empty = no VPC."
  default     = []
}

variable "security_group_ids" {
  type        = list(string)
  description = "Security groups of the Lambda in subnet_ids; they must reach the cluster endpoint on 443."
  default     = []
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the Lambda's and the state machines' CloudWatch log groups, in days."
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags for every resource that takes tags."
  default     = {}
}

variable "triggers" {
  type = object({
    lifecycle_hook = optional(object({
      heartbeat_timeout = optional(number, 7200)
    }))
    alarm_names = optional(list(string), [])
    rollout_schedule = optional(object({
      expression                = string
      timezone                  = optional(string, "UTC")
      rollout_state_machine_arn = string
    }))
  })
  description = "Which triggers to create, each optional. lifecycle_hook: a terminate lifecycle hook on each allowed group plus an EventBridge rule that starts a recycle, heartbeated by the steps and completed with CONTINUE (heartbeat_timeout, 30–7200 s, default 7200, must exceed twice the longest gap between two checks). alarm_names: CloudWatch alarms (with an InstanceId dimension) whose ALARM state recycles the alarmed instance. rollout_schedule: an EventBridge Scheduler entry (cron(...) or rate(...)) that starts the rollout state machine."
  default     = {}

  validation {
    condition     = var.triggers.lifecycle_hook == null || (try(var.triggers.lifecycle_hook.heartbeat_timeout, 0) >= 30 && try(var.triggers.lifecycle_hook.heartbeat_timeout, 0) <= 7200)
    error_message = "triggers.lifecycle_hook.heartbeat_timeout must be 30–7200 seconds (Auto Scaling's limits)."
  }
  validation {
    condition     = var.triggers.rollout_schedule == null || can(regex("^(cron|rate|at)\\(.+\\)$", try(var.triggers.rollout_schedule.expression, "")))
    error_message = "triggers.rollout_schedule.expression must be cron(...), rate(...) or at(...)."
  }
}
