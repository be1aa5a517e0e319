"""``rtdetr-operator``: flags and ``RTDETR_OPERATOR_*`` environment variables → kopf.run()."""

from __future__ import annotations

import argparse
import json
import logging
import os
import posixpath
import sys
from collections.abc import Sequence

from rtdetr_operator.settings import OperatorSettings, host_path_problem


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"RTDETR_OPERATOR_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    defaults = OperatorSettings()
    parser = argparse.ArgumentParser(prog="rtdetr-operator", description="Reconcile rtdetr.io/v1alpha1 RTDETRModels.")
    parser.add_argument(
        "--namespace", action="append", default=[n for n in _env("NAMESPACES").split(",") if n],
        help="watch this namespace (repeatable); default: all namespaces",
    )  # fmt: skip
    parser.add_argument("--runtime-image-gpu", default=_env("RUNTIME_IMAGE_GPU", defaults.runtime_image_gpu))
    parser.add_argument("--runtime-image-cpu", default=_env("RUNTIME_IMAGE_CPU", defaults.runtime_image_cpu))
    parser.add_argument("--quantize-image", default=_env("QUANTIZE_IMAGE", defaults.quantize_image))
    parser.add_argument("--quantize-image-cpu", default=_env("QUANTIZE_IMAGE_CPU", defaults.quantize_image_cpu))
    parser.add_argument("--exporter-image", default=_env("EXPORTER_IMAGE", defaults.exporter_image))
    parser.add_argument("--image-pull-policy", default=_env("IMAGE_PULL_POLICY", defaults.image_pull_policy))
    parser.add_argument(
        "--image-pull-secret", action="append", default=[s for s in _env("IMAGE_PULL_SECRETS").split(",") if s]
    )
    parser.add_argument("--pvc-mount-root", default=_env("PVC_MOUNT_ROOT", defaults.pvc_mount_root))
    parser.add_argument(
        "--default-engine-cache", default=_env("DEFAULT_ENGINE_CACHE", json.dumps(defaults.default_engine_cache)),
        help='JSON, e.g. {"emptyDir": {}} or {"pvcName": "engine-cache"} or {"hostPath": "/var/cache/rtdetr-edge"}',
    )  # fmt: skip
    parser.add_argument(
        "--host-path-prefix", action="append", default=[p for p in _env("HOST_PATH_PREFIXES").split(",") if p],
        help="allow serving.engineCache.hostPath under this host directory (repeatable); default: no hostPath",
    )  # fmt: skip
    parser.add_argument("--resync-seconds", type=float, default=float(_env("RESYNC_SECONDS", str(defaults.resync_seconds))))
    parser.add_argument("--job-backoff-limit", type=int, default=int(_env("JOB_BACKOFF_LIMIT", str(defaults.job_backoff_limit))))
    parser.add_argument("--job-service-account", default=_env("JOB_SERVICE_ACCOUNT"))
    parser.add_argument("--runtime-service-account", default=_env("RUNTIME_SERVICE_ACCOUNT"))
    parser.add_argument("--cluster-domain", default=_env("CLUSTER_DOMAIN", defaults.cluster_domain))
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", default=_env("PEERING") == "", help="no peering (one replica)")
    peering.add_argument("--peering", default=_env("PEERING") or None, help="KopfPeering name for HA replicas")
    parser.add_argument("--liveness", default=_env("LIVENESS", "http://0.0.0.0:8081/healthz"), help="'' to disable")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return parser


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    try:
        engine_cache = json.loads(args.default_engine_cache)
    except ValueError:
        raise SystemExit(f"error: --default-engine-cache is not JSON: {args.default_engine_cache!r}") from None
    prefixes = tuple(args.host_path_prefix)
    for prefix in prefixes:
        if not prefix.startswith("/") or posixpath.normpath(prefix) == "/":
            raise SystemExit(f"error: --host-path-prefix {prefix!r} must be an absolute directory other than /")
    problem = host_path_problem(engine_cache, prefixes)
    if problem:
        raise SystemExit(f"error: --default-engine-cache: {problem}")
    return OperatorSettings(
        namespaces=tuple(args.namespace),
        runtime_image_gpu=args.runtime_image_gpu,
        runtime_image_cpu=args.runtime_image_cpu,
        quantize_image=args.quantize_image,
        quantize_image_cpu=args.quantize_image_cpu,
        exporter_image=args.exporter_image,
        image_pull_policy=args.image_pull_policy,
        image_pull_secrets=tuple(args.image_pull_secret),
        pvc_mount_root=args.pvc_mount_root,
        default_engine_cache=engine_cache,
        host_path_prefixes=prefixes,
        resync_seconds=args.resync_seconds,
        job_backoff_limit=args.job_backoff_limit,
        job_service_account=args.job_service_account,
        runtime_service_account=args.runtime_service_account,
        cluster_domain=args.cluster_domain,
    )


def main(argv: Sequence[str] | None = None) -> int:
    import kopf

    from rtdetr_operator.handlers import register

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from(args)
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    kopf.run(
        registry=registry,
        standalone=args.peering is None,
        peering_name=args.peering,
        namespaces=list(settings.namespaces),
        clusterwide=not settings.namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
