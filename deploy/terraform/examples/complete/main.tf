# A whole use of the module: an EKS cluster's two node groups, recycled on a button
# press (`recycler recycle --engine stepfunctions`), when their group terminates an
# instance (lifecycle hook), and when an instance's alarm fires.
#
#   make lambda-zip                 # builds dist/recycler-lambda-arm64.zip
#   tofu init && tofu apply -var cluster_name=prod
#   recycler recycle --engine stepfunctions --state-machine "$(tofu output -raw recycle_state_machine_arn)" NODE

provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_eks_cluster_auth" "this" {
  name = var.cluster_name
}

# Applying the ClusterRole needs Kubernetes access for whoever runs tofu.
provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
  token                  = data.aws_eks_cluster_auth.this.token
}

resource "aws_cloudwatch_metric_alarm" "cpu" {
  alarm_name          = "${var.cluster_name}-node-cpu"
  alarm_description   = "A worker node's CPU has been pegged for 15 minutes: recycle it."
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  dimensions          = { InstanceId = "i-0123456789abcdef0" }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  threshold           = 95
  comparison_operator = "GreaterThanThreshold"
}

module "recycler" {
  source = "../.."

  cluster_name = var.cluster_name
  name_prefix  = "${var.cluster_name}-nodes"
  group_names  = ["${var.cluster_name}-workers-a", "${var.cluster_name}-workers-b"]
  lambda_zip   = "${path.root}/../../../../dist/recycler-lambda-arm64.zip"

  defaults = {
    selector   = "app.kubernetes.io/component=long-job"
    namespaces = ["airflow"]
    max_wait   = "20h"
    on_timeout = "fail"
  }

  # A private cluster endpoint: the Lambda runs in the cluster's subnets.
  subnet_ids         = data.aws_eks_cluster.this.vpc_config[0].subnet_ids
  security_group_ids = [data.aws_eks_cluster.this.vpc_config[0].cluster_security_group_id]

  triggers = {
    lifecycle_hook = { heartbeat_timeout = 7200 }
    alarm_names    = [aws_cloudwatch_metric_alarm.cpu.alarm_name]
  }

  log_retention_days = 90
  tags               = { team = "platform", app = "recycler" }
}
