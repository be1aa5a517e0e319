//go:build tools

// metrics-server, the resource metrics API (metrics.k8s.io) the HorizontalPodAutoscaler reads
// CPU utilization from: it scrapes the real node's kubelet (/metrics/resource).
package tools

import _ "sigs.k8s.io/metrics-server/cmd/metrics-server"
