"""What a cluster installer (kubeadm, kind) adds beside the control plane, for the test node:
kube-proxy's configuration (nftables mode: Services' ClusterIPs from pods and from the host)
CoreDNS (the binary built from its Go module, run as a Deployment behind the ``kube-dns``
Service at the cluster DNS address the kubelet hands pods) and metrics-server (the resource
metrics API the HorizontalPodAutoscaler reads CPU utilization from). Pure: objects and
configurations; tests/cluster/node.py starts and applies them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
COREDNS_REPOSITORY = "coredns"
METRICS_SERVER_REPOSITORY = "metrics-server"
METRICS_API = "/apis/metrics.k8s.io/v1beta1"


def kube_proxy_config(*, kubeconfig: Path, node: str, cluster_cidr: str, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node,
        "clusterCIDR": cluster_cidr,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # Leave the machine's conntrack sysctls alone (this is a shared test machine).
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "nodePortAddresses": ["primary"],
    }


COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
}}
"""


def coredns_objects(image: str, node: str) -> list[dict[str, Any]]:
    """kube-system's DNS: RBAC to read Services and EndpointSlices, the Corefile, the Deployment
    (on ``node``, the one that runs containers: kwok's simulated nodes would only pretend) and the
    ``kube-dns`` Service (kubeadm's names, so tools that look for them find them)."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"}, "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "labels": labels}, "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "coredns",
                "dnsPolicy": "Default",  # CoreDNS itself resolves upstream through the node's resolv.conf
                "priorityClassName": "system-cluster-critical",
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{"operator": "Exists"}],
                "containers": [{
                    "name": "coredns", "image": image, "args": ["-conf", "/etc/coredns/Corefile"],
                    "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                              {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "170Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                    "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 10},
                }],
                "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
            }},
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
         "spec": {"selector": labels, "clusterIP": DNS_SERVICE_IP, "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}},
    ]  # fmt: skip


def metrics_server_objects(image: str, node: str, node_selector: str) -> list[dict[str, Any]]:
    """kube-system's metrics-server as its upstream manifests install it (RBAC, the Service, the
    ``v1beta1.metrics.k8s.io`` APIService the API server proxies to), with two choices of ours: it
    verifies the kubelets' serving certificates against the cluster CA (the ``kube-root-ca.crt``
    ConfigMap every namespace holds) instead of skipping verification, and it scrapes only the
    nodes matching ``node_selector`` (kwok's simulated nodes have no kubelet to scrape)."""
    labels = {"k8s-app": "metrics-server"}
    meta = {"name": "metrics-server", "namespace": "kube-system"}
    account = [{"kind": "ServiceAccount", "name": "metrics-server", "namespace": "kube-system"}]
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        # Who may read the metrics API: aggregated into the view/edit/admin roles.
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:aggregated-metrics-reader", "labels": {
            f"rbac.authorization.k8s.io/aggregate-to-{role}": "true" for role in ("view", "edit", "admin")}},
         "rules": [{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        # What metrics-server itself reads: the kubelets' resource metrics, the pods and nodes.
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:metrics-server"}, "rules": [
            {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "system:metrics-server"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:metrics-server"},
         "subjects": account},
        # As an aggregated API server: it checks callers through the API server (delegated
        # authentication and authorization) and reads the front proxy's CA.
        {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "metrics-server:system:auth-delegator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
         "subjects": account},
        {"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "metrics-server-auth-reader", "namespace": "kube-system"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extension-apiserver-authentication-reader"},
         "subjects": account},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "labels": labels}, "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "metrics-server",
                "priorityClassName": "system-cluster-critical",
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{"operator": "Exists"}],
                "containers": [{
                    "name": "metrics-server", "image": image,
                    "args": ["--cert-dir=/tmp", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP",
                             "--kubelet-use-node-status-port", "--metric-resolution=15s",
                             "--kubelet-certificate-authority=/etc/cluster-ca/ca.crt", f"--node-selector={node_selector}"],
                    "ports": [{"name": "https", "containerPort": 10250, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "200Mi"}},
                    "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,  # the image's user: nobody
                                        "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"},
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                     {"name": "cluster-ca", "mountPath": "/etc/cluster-ca", "readOnly": True}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"}, "periodSeconds": 5},
                    "livenessProbe": {"httpGet": {"path": "/livez", "port": "https", "scheme": "HTTPS"}, "periodSeconds": 10},
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}},
                            {"name": "cluster-ca", "configMap": {"name": "kube-root-ca.crt"}}],
            }},
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {**meta, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}]}},
        # metrics-server serves with a certificate it makes itself (no CA to pin): upstream's choice too.
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1beta1.metrics.k8s.io", "labels": labels},
         "spec": {"service": {"name": "metrics-server", "namespace": "kube-system"}, "group": "metrics.k8s.io",
                  "version": "v1beta1", "insecureSkipTLSVerify": True, "groupPriorityMinimum": 100, "versionPriority": 100}},
    ]  # fmt: skip
