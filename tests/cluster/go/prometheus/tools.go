//go:build tools

// Builds Prometheus and promtool: the chart's alert rules are checked and unit-tested with
// promtool, and a real Prometheus scrapes a serving pod to prove every dashboard query.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
