# Renders every document the Recycler module deploys — the two state machines, the IAM
# policies and the Kubernetes RBAC rules — from plain inputs, with built-in functions
# only. It needs no provider, so tests render it with `tofu apply` offline and check
# the result (internal/deploy).

terraform {
  required_version = ">= 1.6.0"
}

locals {
  # The placeholder the definitions name the Lambda with (recycle.FunctionPlaceholder):
  # `recycler asl --function-arn ARN` replaces it exactly like this.
  function_placeholder = "arn:aws:lambda:$${Region}:$${AccountId}:function:$${FunctionName}"

  actions = jsondecode(file("${path.module}/actions.json"))

  arn = "arn:${var.partition}"

  by_name = length(var.group_names) > 0

  # Auto Scaling write actions: only on the allowed groups, named by ARN, or carrying
  # the group tag.
  group_arns = [for g in var.group_names :
  "${local.arn}:autoscaling:${var.region}:${var.account_id}:autoScalingGroup:*:autoScalingGroupName/${g}"]

  # (jsondecode(cond ? jsonencode(a) : jsonencode(b)): the two shapes differ in type.)
  tag_key   = try(var.group_tag.key, "")
  tag_value = try(var.group_tag.value, "")
  autoscaling_scope = jsondecode(local.by_name ? jsonencode({
    Resource = local.group_arns
    }) : jsonencode({
    Resource  = "*"
    Condition = { StringEquals = { "aws:ResourceTag/${local.tag_key}" = local.tag_value } }
  }))

  # EC2 write actions: only on instances of the allowed groups. Auto Scaling tags every
  # instance it launches with aws:autoscaling:groupName; in tag mode the group's tag
  # must be propagated at launch.
  instance_condition = jsondecode(local.by_name ? jsonencode({
    StringEquals = { "ec2:ResourceTag/aws:autoscaling:groupName" = var.group_names }
    }) : jsonencode({
    StringEquals = { "ec2:ResourceTag/${local.tag_key}" = local.tag_value }
  }))
  instance_arns = "${local.arn}:ec2:${var.region}:${var.account_id}:instance/*"

  lambda_statements = concat([
    {
      Sid      = "DescribeGroupsAndInstances"
      Effect   = "Allow"
      Action   = concat(local.actions.autoscaling_read, local.actions.ec2_read)
      Resource = "*" # these Describe actions support no resource-level permissions
    },
    merge({
      Sid    = "ChangeAllowedGroupsOnly"
      Effect = "Allow"
      Action = local.actions.autoscaling_write
    }, local.autoscaling_scope),
    {
      Sid       = "RetireInstancesOfAllowedGroupsOnly"
      Effect    = "Allow"
      Action    = local.actions.ec2_write
      Resource  = local.instance_arns
      Condition = local.instance_condition
    },
    {
      # Recycler records each change on the instance before making it (recycler/*).
      Sid      = "RecordOnInstancesWithOurKeysOnly"
      Effect   = "Allow"
      Action   = local.actions.ec2_tag
      Resource = local.instance_arns
      Condition = merge(local.instance_condition, {
        "ForAllValues:StringLike" = { "aws:TagKeys" = ["recycler/*"] }
      })
    },
    {
      Sid      = "FindTheCluster"
      Effect   = "Allow"
      Action   = local.actions.eks
      Resource = "${local.arn}:eks:${var.region}:${var.account_id}:cluster/${var.cluster_name}"
    },
    {
      Sid      = "WriteOwnLogs"
      Effect   = "Allow"
      Action   = local.actions.logs
      Resource = "${var.lambda_log_group_arn}:*"
    },
    ], var.vpc ? [{
      Sid      = "ReachAPrivateClusterEndpoint"
      Effect   = "Allow"
      Action   = local.actions.vpc
      Resource = "*" # as AWS's own AWSLambdaVPCAccessExecutionRole: ENIs are created before they have an ARN
  }] : [])
}
