"""Prometheus metrics of one server process (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rtdetr_edge.api.spec import IN_FLIGHT_METRIC

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class ServerMetrics:
    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "rtdetr_request_duration_seconds",
            "Request latency, by route, status code and protocol (http, grpc: a gRPC error counts under the HTTP "
            "status it maps from, so one error-ratio query covers both).",
            ["route", "code", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.preprocess = Histogram(
            "rtdetr_preprocess_duration_seconds",
            "Decode + resize + normalize time per image.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "rtdetr_inference_duration_seconds",
            "Predictor time per batch.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rtdetr_batch_size",
            "Images per predictor call.",
            buckets=tuple(float(size) for size in range(1, max_batch_size + 1)),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "rtdetr_queue_depth", "Images waiting for the predictor.", registry=self.registry
        )
        self.in_flight = Gauge(
            IN_FLIGHT_METRIC,
            "Requests accepted for the model and not yet answered (queued, preparing or in a batch): what an "
            "autoscaler's pods metric reads.",
            registry=self.registry,
        )
        self.ready = Gauge("rtdetr_model_ready", "1 once warm-up has finished and the model serves.", registry=self.registry)
        self.warmup_seconds = Gauge(
            "rtdetr_warmup_duration_seconds", "Duration of the last warm-up.", registry=self.registry
        )
        self.engine_cache = Counter(
            "rtdetr_engine_cache_total",
            "Engine-cache outcomes at warm-up: hit, built, rebuilt (corrupt entry discarded).",
            ["result"],
            registry=self.registry,
        )
        self.shape_collection = Counter(
            "rtdetr_shape_collection_total",
            "Shape-range files at warm-up: reused (cache), seeded (from the quantize Job) or collected.",
            ["result"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "rtdetr_rejected_requests_total",
            "Requests refused: a 4xx, a 503 while warming up, or shed (code overloaded); by error code.",
            ["code"],
            registry=self.registry,
        )
        self.shed = Counter(
            "rtdetr_shed_requests_total",
            "Requests refused with 503 by the queue-time budget: predicted (on arrival) or expired (waited past it).",
            ["reason"],
            registry=self.registry,
        )
        self.credential_reloads = Counter(
            "rtdetr_credential_reloads_total",
            "TLS certificate / token file changes picked up (loaded) or refused, the previous ones kept (failed).",
            ["result"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "rtdetr_model_swaps_total",
            "In-place model swaps (serving.rollout InPlace): the new model loaded beside and switched to "
            "(succeeded), or refused while the old one kept serving (failed).",
            ["result"],
            registry=self.registry,
        )
