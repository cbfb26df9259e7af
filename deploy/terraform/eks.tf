# Kubernetes access without aws-auth and without an access policy: an EKS access entry
# maps the Lambda's role to one Kubernetes group, and a ClusterRole grants that group
# exactly what the recycle calls.
resource "aws_eks_access_entry" "lambda" {
  cluster_name      = var.cluster_name
  principal_arn     = aws_iam_role.lambda.arn
  kubernetes_groups = [local.kubernetes_group]
  type              = "STANDARD"
  tags              = var.tags
}

resource "kubernetes_cluster_role_v1" "recycler" {
  metadata {
    name   = "${var.name_prefix}-recycler"
    labels = { "app.kubernetes.io/name" = "recycler" }
  }

  dynamic "rule" {
    for_each = module.documents.rbac_rules
    content {
      api_groups = rule.value.apiGroups
      resources  = rule.value.resources
      verbs      = rule.value.verbs
    }
  }
}

resource "kubernetes_cluster_role_binding_v1" "recycler" {
  metadata {
    name   = "${var.name_prefix}-recycler"
    labels = { "app.kubernetes.io/name" = "recycler" }
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.recycler.metadata[0].name
  }
  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Group"
    name      = local.kubernetes_group
  }
}
