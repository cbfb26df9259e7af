output "recycle_state_machine_arn" {
  description = "Press the button: StartExecution on this ARN."
  value       = module.recycler.recycle_state_machine_arn
}

output "rollback_state_machine_arn" {
  description = "The rollback state machine."
  value       = module.recycler.rollback_state_machine_arn
}
