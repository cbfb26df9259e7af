output "recycle_state_machine_arn" {
  description = "ARN of the recycle state machine: `recycler recycle --engine stepfunctions --state-machine ARN NODE`, or StartExecution with {\"request\": {...}}."
  value       = aws_sfn_state_machine.this["recycle"].arn
}

output "rollback_state_machine_arn" {
  description = "ARN of the rollback state machine `recycler abort` starts after stopping a recycle."
  value       = aws_sfn_state_machine.this["rollback"].arn
}

output "lambda_function_arn" {
  description = "ARN of the Recycler Lambda."
  value       = aws_lambda_function.recycler.arn
}

output "lambda_role_arn" {
  description = "ARN of the Lambda's role (mapped to the Kubernetes group by the EKS access entry)."
  value       = aws_iam_role.lambda.arn
}

output "states_role_arn" {
  description = "ARN of the state machines' role."
  value       = aws_iam_role.states.arn
}

output "events_role_arn" {
  description = "ARN of the triggers' role (null without triggers)."
  value       = try(aws_iam_role.events[0].arn, null)
}

output "kubernetes_group" {
  description = "Kubernetes group the Lambda's role is mapped to; the ClusterRole of the same name prefix is bound to it."
  value       = local.kubernetes_group
}
