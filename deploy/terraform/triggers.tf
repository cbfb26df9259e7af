locals {
  hook       = var.triggers.lifecycle_hook
  hook_name  = "${var.name_prefix}-recycler-drain"
  any_events = local.hook != null || length(var.triggers.alarm_names) > 0

  # The execution input every trigger builds: {"request": {...}} with the module's
  # defaults (recycle.Request's JSON form). EventBridge fills <instance> (and the
  # hook's fields) from the event; the markers survive jsonencode, which escapes < >.
  request_defaults = {
    selector           = var.defaults.selector
    namespaces         = var.defaults.namespaces
    maxWait            = var.defaults.max_wait
    onTimeout          = var.defaults.on_timeout
    evictOthers        = true
    replacementTimeout = var.defaults.replacement_timeout
    workloadTimeout    = "10m"
    forceGrace         = "30s"
    retire             = var.defaults.retire
    noSurge            = false
    checkSeconds       = var.defaults.check_seconds
  }
  hook_input = replace(replace(replace(replace(jsonencode({ request = merge(local.request_defaults, {
    instanceId    = "@instance@"
    lifecycleHook = { group = "@group@", name = "@hook@", token = "@token@" }
  }) }), "@instance@", "<instance>"), "@group@", "<group>"), "@hook@", "<hook>"), "@token@", "<token>")
  alarm_input = replace(jsonencode({ request = merge(local.request_defaults, { instanceId = "@instance@" }) }), "@instance@", "<instance>")
}

# Terminate lifecycle hook: the group waits in Terminating:Wait while Recycler drains
# the instance, then Retire completes the action with CONTINUE.
resource "aws_autoscaling_lifecycle_hook" "drain" {
  for_each               = local.hook != null ? toset(local.groups) : toset([])
  name                   = local.hook_name
  autoscaling_group_name = each.value
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = local.hook.heartbeat_timeout
  # If Recycler never answers, the instance is terminated anyway once the timeout passes.
  default_result = "CONTINUE"
}

resource "aws_iam_role" "events" {
  count = local.any_events || var.triggers.rollout_schedule != null ? 1 : 0
  name  = "${var.name_prefix}-recycler-events"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow", Action = "sts:AssumeRole"
      Principal = { Service = ["events.amazonaws.com", "scheduler.amazonaws.com"] }
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "events" {
  count = length(aws_iam_role.events)
  name  = "recycler"
  role  = aws_iam_role.events[0].id
  # Start recycles; with a rollout schedule, also the rollout state machine.
  policy = var.triggers.rollout_schedule == null ? module.documents.events_policy : jsonencode({
    Version = "2012-10-17"
    Statement = concat(jsondecode(module.documents.events_policy).Statement, [{
      Sid      = "StartRollouts"
      Effect   = "Allow"
      Action   = ["states:StartExecution"]
      Resource = [var.triggers.rollout_schedule.rollout_state_machine_arn]
    }])
  })
}

resource "aws_cloudwatch_event_rule" "lifecycle_hook" {
  count       = local.hook != null ? 1 : 0
  name        = "${var.name_prefix}-recycler-lifecycle-hook"
  description = "Recycle (drain) an instance its group is terminating."
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = ["EC2 Instance-terminate Lifecycle Action"]
    detail = {
      AutoScalingGroupName = local.groups
      LifecycleHookName    = [local.hook_name]
    }
  })
  tags = var.tags
}

resource "aws_cloudwatch_event_target" "lifecycle_hook" {
  count    = length(aws_cloudwatch_event_rule.lifecycle_hook)
  rule     = aws_cloudwatch_event_rule.lifecycle_hook[0].name
  arn      = aws_sfn_state_machine.this["recycle"].arn
  role_arn = aws_iam_role.events[0].arn
  input_transformer {
    input_paths = {
      instance = "$.detail.EC2InstanceId"
      group    = "$.detail.AutoScalingGroupName"
      hook     = "$.detail.LifecycleHookName"
      token    = "$.detail.LifecycleActionToken"
    }
    input_template = local.hook_input
  }
}

resource "aws_cloudwatch_event_rule" "alarm" {
  count       = length(var.triggers.alarm_names) > 0 ? 1 : 0
  name        = "${var.name_prefix}-recycler-alarm"
  description = "Recycle the instance an alarm names when it goes to ALARM."
  event_pattern = jsonencode({
    source        = ["aws.cloudwatch"]
    "detail-type" = ["CloudWatch Alarm State Change"]
    resources     = [for a in var.triggers.alarm_names : "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:${a}"]
    detail        = { state = { value = ["ALARM"] } }
  })
  tags = var.tags
}

resource "aws_cloudwatch_event_target" "alarm" {
  count    = length(aws_cloudwatch_event_rule.alarm)
  rule     = aws_cloudwatch_event_rule.alarm[0].name
  arn      = aws_sfn_state_machine.this["recycle"].arn
  role_arn = aws_iam_role.events[0].arn
  input_transformer {
    input_paths = {
      instance = "$.detail.configuration.metrics[0].metricStat.metric.dimensions.InstanceId"
    }
    input_template = local.alarm_input
  }
}

# Periodic rollouts: EventBridge Scheduler starts the rollout state machine (built by
# the rollout workflow; pass its ARN).
resource "aws_scheduler_schedule" "rollout" {
  count                        = var.triggers.rollout_schedule != null ? 1 : 0
  name                         = "${var.name_prefix}-recycler-rollout"
  schedule_expression          = var.triggers.rollout_schedule.expression
  schedule_expression_timezone = var.triggers.rollout_schedule.timezone
  flexible_time_window {
    mode = "OFF"
  }
  target {
    arn      = var.triggers.rollout_schedule.rollout_state_machine_arn
    role_arn = aws_iam_role.events[0].arn
    input    = jsonencode({ rollout = { defaults = local.request_defaults } })
  }
}
