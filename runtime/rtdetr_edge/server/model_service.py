"""The model lifecycle (load → ready → predict → swap), independent of HTTP.

``start()`` returns at once; warm-up runs in a background thread so liveness
answers immediately and readiness turns true only after the self-test.

With a model file (``ServeOptions.model_config``: the operator's ConfigMap, serving.rollout
InPlace) the service watches it and swaps models in place: the new model is loaded and warmed
beside the one serving, which keeps answering; the switch happens on the inference thread
between two batches; the old predictor is closed after the batches that use it. A model that
cannot be loaded (missing files, another digest, out of memory) leaves the old one serving and
says why in the repository index (:meth:`ModelService.repository_index`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from rtdetr_edge.api.served import ModelIndexEntry, ServedModel
from rtdetr_edge.api.spec import DEFAULT_BATCH_WINDOW_MICROS, DEFAULT_MAX_QUEUE_MILLIS, DEFAULT_SCORE_THRESHOLD
from rtdetr_edge.cpu_isa import IsaLevel
from rtdetr_edge.errors import ModelFileError, NotReadyError, OverloadedError, RtdetrEdgeError
from rtdetr_edge.labels import load_labels
from rtdetr_edge.oci import Reference, RegistryAccess, pull_model
from rtdetr_edge.postprocess import ModelOutputs, select_detections, to_detections
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ModelInputs,
    PreprocessedImage,
    preprocess_bytes,
    stack_batch,
)
from rtdetr_edge.server.batcher import BatchInfo, DynamicBatcher
from rtdetr_edge.server.metrics import ServerMetrics
from rtdetr_edge.server.security import SecurityOptions
from rtdetr_edge.warmup import WarmedModel, warm_up

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_DETECTIONS_LIMIT = 1000
"""The most detections a request may ask for (``max_detections``)."""


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``rtdetr-edge serve`` needs; the CLI's defaults are these (and the resource's)."""

    model_dir: Path
    cache_dir: Path
    predictor: PredictorSettings = field(default_factory=PredictorSettings)
    model_name: str = "rtdetr"
    labels_file: Path | None = None
    """One label per line (or PaddleDetection's infer_cfg.yml); COCO's 80 by default."""
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    """Default for /v1/detect when the request does not pass ``score_threshold``."""
    max_detections: int = 100
    batch_window_seconds: float = DEFAULT_BATCH_WINDOW_MICROS / 1e6
    """How long a forming batch may wait for requests still being preprocessed."""
    max_queue_seconds: float = DEFAULT_MAX_QUEUE_MILLIS / 1000
    """Queue-time budget: a request that would wait longer for the model is refused with 503 and
    Retry-After (load shedding), so accepted requests keep their latency."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    access_log: bool = False
    """One JSON line per request on standard output (server/access_log.py); never a body."""
    tracing: bool = False
    """OpenTelemetry spans per request, exported as the OTEL_* environment says (server/tracing.py)."""
    security: SecurityOptions = field(default_factory=SecurityOptions)
    """TLS, client certificates and bearer tokens (server/security.py); default: none."""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    preprocess_threads: int = 2
    shape_seed: Path | None = None
    """A shape-range file collected by the quantize Job for this model (skips collection)."""
    measured_on_isa: IsaLevel | None = None
    """The CPU ISA level the model's accuracy gate ran on; an INT8 model computing other numbers
    on this CPU is refused (warm-up fails with the cause and what to do)."""
    expected_digest: str | None = None
    """The digest the model's files must have (a model with another is refused)."""
    model_config: Path | None = None
    """A :class:`ServedModel` file naming the model (it overrides model_dir, shape_seed,
    measured_on_isa and expected_digest), watched for a new model to swap to in place."""
    model_config_seconds: float = 2.0
    """How often the model file is checked (the kubelet updates ConfigMap volumes within ~1 min)."""
    model_ref: str | None = None
    """The model as an OCI artifact (oci://…@sha256:…), pulled into ``cache_dir`` before loading."""
    registry: RegistryAccess = field(default_factory=RegistryAccess)
    """Credentials and CA for pulling ``model_ref``."""

    def with_model(self, served: ServedModel) -> ServeOptions:
        """These options serving the model ``served`` names."""
        return replace(self, model_dir=Path(served.model_dir), expected_digest=served.digest, model_ref=served.oci,
                       shape_seed=Path(served.shape_ranges) if served.shape_ranges else None,
                       measured_on_isa=served.measured_on_isa)  # type: ignore[arg-type]  # fmt: skip

    def located(self) -> ServeOptions:
        """These options with the model on disk: an OCI model pulled (or found) in the cache."""
        if self.model_ref is None:
            return self
        pulled = pull_model(Reference.parse(self.model_ref), self.cache_dir, self.registry, self.expected_digest)
        return replace(self, model_dir=pulled.model_dir, shape_seed=pulled.shape_ranges or self.shape_seed, model_ref=None)


def read_served_model(path: Path) -> tuple[ServedModel, bytes]:
    """The model file and its bytes (what a change is detected by)."""
    try:
        data = path.read_bytes()
        return ServedModel.model_validate_json(data), data
    except OSError as error:
        raise ModelFileError(f"cannot read the model file {path}: {error.strerror or error}") from None
    except ValidationError as error:  # one line: the termination message shows the last one
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in error.errors())
        raise ModelFileError(f"the model file {path} is not a served-model document: {problems}") from None


class ModelService:
    def __init__(
        self,
        options: ServeOptions,
        metrics: ServerMetrics,
        on_fatal: Callable[[str], None],
        on_ready: Callable[[WarmedModel], None] | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.model_options = options  # where the serving model came from (a swap replaces it)
        self._config_bytes = b""  # the model file as last read
        if options.model_config is not None:
            served, self._config_bytes = read_served_model(options.model_config)
            self.model_options = options.with_model(served)
        self.labels = self._labels(self.model_options)
        self.state = "loading"
        self.terminating = False  # SIGTERM received: still serving, but no longer ready
        self.error: str | None = None
        self.warmed: WarmedModel | None = None
        self._on_fatal = on_fatal
        self._on_ready = on_ready
        self._preprocess_pool = ThreadPoolExecutor(options.preprocess_threads, thread_name_prefix="preprocess")
        self._batcher: DynamicBatcher[PreprocessedImage, np.ndarray] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.candidate: ModelIndexEntry | None = None  # a model loading beside, or refused
        self._watch: asyncio.Task[None] | None = None

    @staticmethod
    def _labels(options: ServeOptions) -> list[str]:
        """``--labels``, else the export's infer_cfg.yml label_list, else COCO's 80."""
        if options.labels_file is not None:
            return load_labels(options.labels_file)
        from rtdetr_edge.model_files import ModelFiles

        try:
            return ModelFiles.locate(options.model_dir).label_list() or load_labels(None)
        except RtdetrEdgeError:  # a missing model is reported by warm-up, with its cause
            return load_labels(None)

    @property
    def ready(self) -> bool:
        """What readiness probes see; requests are still served while terminating."""
        return self.state == "ready" and not self.terminating

    @property
    def warming_up(self) -> bool:
        return self.state not in ("ready", "failed")

    @property
    def loading(self) -> bool:
        """Paddle works in a loading thread: the first warm-up, or a model loading for a swap."""
        return self.warming_up or (self.candidate is not None and self.candidate.state == "LOADING")

    def counted_as_refusal(self, error: RtdetrEdgeError) -> bool:
        """Count a refused request (the client's doing, or expected: warming up, shedding) in
        ``rtdetr_rejected_requests_total``; False for a server failure, which the caller logs.
        One rule for HTTP and gRPC."""
        expected = isinstance(error, OverloadedError) or (isinstance(error, NotReadyError) and self.warming_up)
        if error.http_status < 500 or expected:
            self.metrics.rejected.labels(error.code).inc()
            return True
        return False

    def begin_termination(self) -> None:
        """Report not-ready so load balancers stop routing here; keep answering meanwhile."""
        self.terminating = True
        self.metrics.ready.set(0)

    @property
    def digest(self) -> str:
        return self.warmed.report.model_digest if self.warmed else ""

    @property
    def platform(self) -> str:
        settings = self.options.predictor
        return "onnxruntime_onnx" if settings.backend == "onnxruntime" else "paddle_inference"

    def repository_index(self) -> list[ModelIndexEntry]:
        """Triton's repository index: the model serving (READY, or LOADING/UNAVAILABLE before the
        first warm-up ends) and a model loading beside it or refused."""
        name = self.options.model_name
        if self.warmed is not None:
            entries = [ModelIndexEntry(name=name, version=self.digest, state="READY")]
        else:
            state = "UNAVAILABLE" if self.state == "failed" else "LOADING"
            entries = [ModelIndexEntry(name=name, version=self.model_options.expected_digest or "", state=state,
                                       reason=self.error or "")]  # fmt: skip
        return entries + ([self.candidate] if self.candidate is not None else [])

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._batcher = DynamicBatcher(
            self._run_batch,
            self.options.predictor.max_batch_size,
            self.options.batch_window_seconds,
            on_batch=self._record_batch,
            on_queue_depth=self.metrics.queue_depth.set,
            max_queue_seconds=self.options.max_queue_seconds,
            on_shed=lambda reason: self.metrics.shed.labels(reason).inc(),
        )
        self._batcher.start()
        threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
        if self.options.model_config is not None:
            self._watch = asyncio.create_task(self._watch_model_config(self.options.model_config))

    @staticmethod
    def _load(options: ServeOptions) -> tuple[WarmedModel, ServeOptions]:
        """Warm up the model ``options`` name (pulled first when it is an OCI artifact), checking
        its digest when one is expected; and the options naming it on disk."""
        options = options.located()
        warmed = warm_up(options.model_dir, options.predictor, options.cache_dir, options.shape_seed, options.measured_on_isa)
        found = warmed.report.model_digest
        if options.expected_digest and found != options.expected_digest:
            warmed.predictor.close()
            raise ModelFileError(f"the model in {options.model_dir} has digest {found}, not the expected "
                              f"{options.expected_digest}: the files changed after the pipeline wrote them")  # fmt: skip
        return warmed, options

    def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            warmed, located = self._load(self.model_options)
        except RtdetrEdgeError as error:
            self._fail(str(error))
            return
        except Exception as error:  # any failure must stop the server with its cause, not hang unready
            log.exception("warm-up crashed")
            self._fail(f"{type(error).__name__}: {error}")
            return
        self._record_warm_up(warmed, time.perf_counter() - started)
        if located is not self.model_options:  # pulled: its labels are known now
            self.labels, self.model_options = self._labels(located), located
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._became_ready, warmed)

    def _record_warm_up(self, warmed: WarmedModel, seconds: float) -> None:
        report = warmed.report
        self.metrics.warmup_seconds.set(seconds)
        self.metrics.engine_cache.labels(report.engine_cache).inc()
        self.metrics.shape_collection.labels(report.shape_collection).inc()
        log.info("warm-up report: %s", report.to_dict())

    def _became_ready(self, warmed: WarmedModel) -> None:
        self.warmed = warmed
        self.state = "ready"
        self.metrics.ready.set(1)
        log.info("model %s is ready (%s)", self.options.model_name, warmed.report.model_digest)
        if self._on_ready is not None:
            # Its own thread: a hook may call this very server (the demo does), which must not
            # wait on the event loop that is running the hook.
            threading.Thread(target=self._on_ready, args=(warmed,), name="on-ready", daemon=True).start()

    # -- swapping models in place ---------------------------------------------------------
    async def _watch_model_config(self, path: Path) -> None:
        """Check the model file every few seconds; swap to the model a changed file names."""
        while True:
            await asyncio.sleep(self.options.model_config_seconds)
            if self.state != "ready" or (self.candidate is not None and self.candidate.state == "LOADING"):
                continue  # one load at a time; the file is read again once it ends
            try:
                data = path.read_bytes()
            except OSError as error:
                log.warning("cannot read the model file %s: %s", path, error)
                continue
            if data == self._config_bytes:
                continue
            self._config_bytes = data
            try:
                served, _ = read_served_model(path)
            except ModelFileError as error:
                log.error("%s; the current model keeps serving", error)
                self._refuse("", str(error))
                continue
            if served.digest == self.digest:
                self.candidate = None
                continue
            self.swap(self.options.with_model(served))

    def swap(self, options: ServeOptions) -> None:
        """Load ``options``' model beside the serving one; switch to it once warm (or say why not)."""
        digest = options.expected_digest or ""
        self.candidate = ModelIndexEntry(name=self.options.model_name, version=digest, state="LOADING")
        log.info("loading %s from %s beside the serving %s", digest or "a new model", options.model_dir, self.digest)
        threading.Thread(target=self._load_candidate, args=(options,), name="swap", daemon=True).start()

    def _load_candidate(self, options: ServeOptions) -> None:
        started = time.perf_counter()
        try:
            warmed, options = self._load(options)
        except Exception as error:  # whatever it is, the serving model must keep serving
            message = str(error) if isinstance(error, RtdetrEdgeError) else f"{type(error).__name__}: {error}"
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._refuse, options.expected_digest or "", message)
            return
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._switch(warmed, options, time.perf_counter() - started), self._loop)

    def _refuse(self, digest: str, message: str) -> None:
        log.error("cannot swap to %s: %s; %s keeps serving", digest or "the new model", message, self.digest)
        self.candidate = ModelIndexEntry(name=self.options.model_name, version=digest, state="UNAVAILABLE", reason=message)
        self.metrics.model_swaps.labels("failed").inc()

    async def _switch(self, warmed: WarmedModel, options: ServeOptions, seconds: float) -> None:
        assert self._batcher is not None
        labels = self._labels(options)

        def exchange() -> WarmedModel | None:  # on the inference thread: between two batches
            old, self.warmed, self.labels, self.model_options = self.warmed, warmed, labels, options
            return old

        old = await self._batcher.run_exclusive(exchange)
        self.candidate = None
        self.metrics.model_swaps.labels("succeeded").inc()
        self._record_warm_up(warmed, seconds)
        log.info("model %s now serves %s (loaded in %.1f s beside %s)", self.options.model_name,
                 warmed.report.model_digest, seconds, old.report.model_digest if old else "nothing")  # fmt: skip
        if old is not None:
            await self._batcher.run_exclusive(old.predictor.close)  # after the batches that ran on it

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        log.error("warm-up failed: %s", message)
        self._on_fatal(message)

    def require_ready(self) -> WarmedModel:
        if self.state != "ready" or self.warmed is None:
            detail = f": {self.error}" if self.error else " (warm-up in progress)"
            raise NotReadyError(f"model {self.options.model_name!r} is not ready{detail}")
        return self.warmed

    def _run_batch(self, items: list[PreprocessedImage]) -> list[np.ndarray]:
        warmed = self.warmed  # read on the inference thread, where swaps happen
        assert warmed is not None
        outputs = warmed.predictor.predict(stack_batch(items))
        return outputs.split()

    def _record_batch(self, info: BatchInfo) -> None:
        self.metrics.batch_size.observe(info.batch_size)
        self.metrics.inference.observe(info.inference_seconds)

    async def detect(self, body: bytes, score_threshold: float, max_detections: int) -> dict[str, object]:
        """Detections for one image body, with per-stage timings in milliseconds."""
        self.require_ready()
        assert self._batcher is not None
        self._batcher.admit()  # before any work is spent on a request that would wait too long
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        with self.metrics.in_flight.track_inprogress():
            with self._batcher.preparing():
                image = await loop.run_in_executor(
                    self._preprocess_pool, preprocess_bytes, body, self.options.max_image_pixels
                )
            preprocessed = time.perf_counter()
            self.metrics.preprocess.observe(preprocessed - started)
            rows, info = await self._batcher.submit(image)
        inferred = time.perf_counter()
        kept = select_detections(rows, image.height, image.width, score_threshold, max_detections)
        detections = [detection.to_json() for detection in to_detections(kept, self.labels)]
        finished = time.perf_counter()
        return {
            "model": self.options.model_name,
            "digest": self.digest,  # the model that answered (a swap lands between batches)
            "image": {"width": image.width, "height": image.height},
            "detections": detections,
            "batch_size": info.batch_size,
            "timing_ms": {
                "preprocess": round((preprocessed - started) * 1000, 3),
                "queue": round(info.queue_seconds * 1000, 3),
                "inference": round(info.inference_seconds * 1000, 3),
                "postprocess": round((finished - inferred) * 1000, 3),
                "total": round((finished - started) * 1000, 3),
            },
        }

    async def infer(self, inputs: ModelInputs) -> ModelOutputs:
        """Run already-preprocessed tensors (OIP v2) on the inference thread."""
        self.require_ready()
        assert self._batcher is not None
        self._batcher.admit()
        started = time.perf_counter()
        with self.metrics.in_flight.track_inprogress():
            outputs = await self._batcher.run_exclusive(lambda: self.require_ready().predictor.predict(inputs))
        self._record_batch(BatchInfo(inputs.batch_size, 0.0, time.perf_counter() - started))
        return outputs

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._batcher is not None:
            await self._batcher.close()
        self._preprocess_pool.shutdown(wait=True)
        if self.warmed is not None:
            self.warmed.predictor.close()
        self.metrics.ready.set(0)
