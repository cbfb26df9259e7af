data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

# In tag mode, the groups carrying the tag (for the lifecycle hooks).
data "aws_autoscaling_groups" "tagged" {
  count = length(var.group_names) == 0 && var.group_tag != null ? 1 : 0
  filter {
    name   = "tag-key"
    values = [var.group_tag.key]
  }
  filter {
    name   = "tag-value"
    values = [var.group_tag.value]
  }
}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  function_name = "${var.name_prefix}-recycler"
  # Known before anything exists, so the documents and the roles do not wait on each other.
  function_arn          = "arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:${local.function_name}"
  recycle_machine_name  = "${var.name_prefix}-recycle"
  rollback_machine_name = "${var.name_prefix}-rollback"
  recycle_machine_arn   = "arn:${local.partition}:states:${local.region}:${local.account_id}:stateMachine:${local.recycle_machine_name}"
  kubernetes_group      = "${var.name_prefix}:recycler"

  groups = length(var.group_names) > 0 ? var.group_names : try(data.aws_autoscaling_groups.tagged[0].names, [])
  vpc    = length(var.subnet_ids) > 0
}

module "documents" {
  source = "./modules/documents"

  partition                 = local.partition
  region                    = local.region
  account_id                = local.account_id
  cluster_name              = var.cluster_name
  group_names               = var.group_names
  group_tag                 = var.group_tag
  function_arn              = local.function_arn
  lambda_log_group_arn      = aws_cloudwatch_log_group.lambda.arn
  recycle_state_machine_arn = local.recycle_machine_arn
  vpc                       = local.vpc
}

resource "aws_cloudwatch_log_group" "lambda" {
  name              = "/aws/lambda/${local.function_name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "states" {
  name              = "/aws/vendedlogs/states/${var.name_prefix}-recycler"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

# The Lambda: one function that dispatches by task name (cmd/lambda).
resource "aws_iam_role" "lambda" {
  name = "${var.name_prefix}-recycler-lambda"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "lambda.amazonaws.com" } }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "lambda" {
  name   = "recycler"
  role   = aws_iam_role.lambda.id
  policy = module.documents.lambda_policy

  lifecycle {
    precondition {
      condition     = (length(var.group_names) > 0) != (var.group_tag != null)
      error_message = "Set exactly one of group_names and group_tag: the Lambda may only change the groups they name."
    }
    precondition {
      condition     = (length(var.subnet_ids) > 0) == (length(var.security_group_ids) > 0)
      error_message = "subnet_ids and security_group_ids go together: set both for a private cluster endpoint, or neither."
    }
  }
}

resource "aws_lambda_function" "recycler" {
  function_name    = local.function_name
  role             = aws_iam_role.lambda.arn
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  handler          = "bootstrap"
  runtime          = "provided.al2023"
  architectures    = [var.lambda_architecture]
  memory_size      = 256
  # Above every Task's TimeoutSeconds (at most 900 - 60), so a hung invocation ends as
  # States.Timeout, which the state machine retries, not as Lambda.Unknown.
  timeout = 900

  environment {
    variables = {
      RECYCLER_CLUSTER = var.cluster_name
    }
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.lambda.name
  }

  dynamic "vpc_config" {
    for_each = local.vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.lambda]
}

# The state machines: exactly `recycler asl [--rollback] --function-arn <the Lambda>`.
resource "aws_iam_role" "states" {
  name = "${var.name_prefix}-recycler-states"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow", Action = "sts:AssumeRole", Principal = { Service = "states.amazonaws.com" }
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "states" {
  name   = "recycler"
  role   = aws_iam_role.states.id
  policy = module.documents.states_policy
}

resource "aws_sfn_state_machine" "this" {
  for_each = {
    recycle  = { name = local.recycle_machine_name, definition = module.documents.recycle_definition }
    rollback = { name = local.rollback_machine_name, definition = module.documents.rollback_definition }
  }
  name       = each.value.name
  role_arn   = aws_iam_role.states.arn
  type       = "STANDARD"
  definition = each.value.definition

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.states.arn}:*"
    include_execution_data = false
    level                  = "ERROR"
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.states]
}
