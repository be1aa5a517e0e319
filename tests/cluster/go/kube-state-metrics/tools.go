//go:build tools

// Builds kube-state-metrics, which turns RTDETRModel conditions into the metrics the chart's model
// alerts read (charts/rtdetr-edge/files/kube-state-metrics.yaml), against the real API server.
package tools

import _ "k8s.io/kube-state-metrics/v2"
