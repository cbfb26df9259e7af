output "recycle_definition" {
  description = "The recycle state machine, as `recycler asl --function-arn` prints it."
  value       = replace(file("${path.module}/recycle.asl.json"), local.function_placeholder, var.function_arn)
}

output "rollback_definition" {
  description = "The rollback state machine, as `recycler asl --rollback --function-arn` prints it."
  value       = replace(file("${path.module}/rollback.asl.json"), local.function_placeholder, var.function_arn)
}

output "lambda_policy" {
  description = "The Lambda role's only policy: exactly the API actions the code calls, writes scoped to the allowed groups."
  value       = jsonencode({ Version = "2012-10-17", Statement = local.lambda_statements })
}

output "states_policy" {
  description = "The state machines' role policy: invoke the Recycler Lambda, nothing else."
  value = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "InvokeTheRecyclerLambda"
      Effect   = "Allow"
      Action   = ["lambda:InvokeFunction"]
      Resource = [var.function_arn, "${var.function_arn}:*"]
      }, {
      # Vended logs (CloudWatch Logs for Step Functions) are configured by these
      # account-level calls; AWS documents Resource "*" for them.
      Sid    = "DeliverExecutionLogs"
      Effect = "Allow"
      Action = [
        "logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups", "logs:DescribeResourcePolicies",
        "logs:GetLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:UpdateLogDelivery",
      ]
      Resource = "*"
    }]
  })
}

output "events_policy" {
  description = "The triggers' role policy (EventBridge rules and Scheduler): start recycles, nothing else."
  value = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "StartRecycles"
      Effect   = "Allow"
      Action   = ["states:StartExecution"]
      Resource = [var.recycle_state_machine_arn]
    }]
  })
}

output "rbac_rules" {
  description = "Rules of the Kubernetes ClusterRole bound to the Lambda's access-entry group."
  value       = jsondecode(file("${path.module}/rbac.json"))
}
