"""``rtdetr-operator``: flags (or ``RTDETR_OPERATOR_<FLAG>`` environment variables, as the
Helm chart sets them; ``--help`` names each one) → kopf.run()."""

from __future__ import annotations

import json
import logging
import posixpath
import sys
from collections.abc import Sequence
from typing import Any

import click

from rtdetr_operator.settings import OperatorSettings, host_path_problem

DEFAULTS = OperatorSettings()


class CommaSeparated(click.ParamType):
    """A repeatable flag whose environment variable lists values separated by commas."""

    name = "text"
    envvar_list_splitter = ","

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return [value.strip() for value in rv.split(",") if value.strip()]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)


def option(*declarations: str, **kwargs: Any) -> Any:
    kwargs.setdefault("show_envvar", True)
    if kwargs.get("default") not in (None, (), ""):
        kwargs.setdefault("show_default", True)
    return click.option(*declarations, **kwargs)


@click.command(
    "rtdetr-operator",
    context_settings={"auto_envvar_prefix": "RTDETR_OPERATOR", "help_option_names": ["-h", "--help"]},
)
@option("--namespace", "namespaces", multiple=True, type=CommaSeparated(), envvar="RTDETR_OPERATOR_NAMESPACES",
        help="watch this namespace (repeatable); default: all namespaces")  # fmt: skip
@option("--runtime-image-gpu", default=DEFAULTS.runtime_image_gpu)
@option("--runtime-image-cpu", default=DEFAULTS.runtime_image_cpu)
@option("--quantize-image", default=DEFAULTS.quantize_image)
@option("--quantize-image-cpu", default=DEFAULTS.quantize_image_cpu)
@option("--exporter-image", default=DEFAULTS.exporter_image)
@option("--image-pull-policy", type=click.Choice(["Always", "IfNotPresent", "Never"]), default=DEFAULTS.image_pull_policy)
@option("--image-pull-secret", "image_pull_secrets", multiple=True, type=CommaSeparated(),
        envvar="RTDETR_OPERATOR_IMAGE_PULL_SECRETS", help="repeatable")  # fmt: skip
@option("--pvc-mount-root", default=DEFAULTS.pvc_mount_root)
@option("--default-engine-cache", default=json.dumps(DEFAULTS.default_engine_cache),
        help='JSON, e.g. {"emptyDir": {}} or {"pvcName": "engine-cache"} or {"hostPath": "/var/cache/rtdetr-edge"}')
@option("--host-path-prefix", "host_path_prefixes", multiple=True, type=CommaSeparated(),
        envvar="RTDETR_OPERATOR_HOST_PATH_PREFIXES",
        help="allow serving.engineCache.hostPath under this host directory (repeatable); default: no hostPath")
@option("--serving-metrics-from", default="[]",
        help='JSON list of NetworkPolicy peers admitted to serving pods with serving.allowFrom (the metrics scrapers), '
             'e.g. [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]')  # fmt: skip
@option("--resync-seconds", type=click.FloatRange(1), default=DEFAULTS.resync_seconds)
@option("--job-backoff-limit", type=click.IntRange(0), default=DEFAULTS.job_backoff_limit)
@option("--job-service-account", default="")
@option("--runtime-service-account", default="")
@option("--cluster-domain", default=DEFAULTS.cluster_domain)
@option("--peering", default="", help="KopfPeering name for HA replicas; empty: standalone (one replica)")
@option("--standalone", is_flag=True, envvar=None, show_envvar=False, help="no peering (the default without --peering)")
@option("--liveness", default="http://0.0.0.0:8081/healthz", help="'' to disable")
@option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def command(**params: Any) -> None:
    """Reconcile rtdetr.io/v1alpha1 RTDETRModels."""
    import kopf

    from rtdetr_operator.handlers import register

    logging.basicConfig(level=params["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from(params)
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    kopf.run(
        registry=registry,
        standalone=not params["peering"],
        peering_name=params["peering"] or None,
        namespaces=list(settings.namespaces),
        clusterwide=not settings.namespaces,
        liveness_endpoint=params["liveness"] or None,
    )


def parse(argv: Sequence[str]) -> dict[str, Any]:
    """The flags and environment as ``command`` receives them (without running it)."""
    with command.make_context("rtdetr-operator", list(argv)) as context:
        return dict(context.params)


def settings_from(params: dict[str, Any]) -> OperatorSettings:
    if params["standalone"] and params["peering"]:
        raise click.UsageError("--standalone and --peering exclude each other")
    try:
        engine_cache = json.loads(params["default_engine_cache"])
    except ValueError:
        raise click.BadParameter(f"not JSON: {params['default_engine_cache']!r}", param_hint="--default-engine-cache") from None
    try:
        metrics_from = json.loads(params["serving_metrics_from"])
    except ValueError:
        metrics_from = None
    if not isinstance(metrics_from, list) or not all(isinstance(peer, dict) for peer in metrics_from):
        raise click.BadParameter(f"not a JSON list of NetworkPolicy peers: {params['serving_metrics_from']!r}",
                                 param_hint="--serving-metrics-from")  # fmt: skip
    prefixes = tuple(params["host_path_prefixes"])
    for prefix in prefixes:
        if not prefix.startswith("/") or posixpath.normpath(prefix) == "/":
            raise click.BadParameter(f"{prefix!r} must be an absolute directory other than /", param_hint="--host-path-prefix")
    problem = host_path_problem(engine_cache, prefixes)
    if problem:
        raise click.BadParameter(problem, param_hint="--default-engine-cache")
    return OperatorSettings(
        namespaces=tuple(params["namespaces"]),
        runtime_image_gpu=params["runtime_image_gpu"],
        runtime_image_cpu=params["runtime_image_cpu"],
        quantize_image=params["quantize_image"],
        quantize_image_cpu=params["quantize_image_cpu"],
        exporter_image=params["exporter_image"],
        image_pull_policy=params["image_pull_policy"],
        image_pull_secrets=tuple(params["image_pull_secrets"]),
        pvc_mount_root=params["pvc_mount_root"],
        default_engine_cache=engine_cache,
        host_path_prefixes=prefixes,
        serving_metrics_from=tuple(metrics_from),
        resync_seconds=params["resync_seconds"],
        job_backoff_limit=params["job_backoff_limit"],
        job_service_account=params["job_service_account"],
        runtime_service_account=params["runtime_service_account"],
        cluster_domain=params["cluster_domain"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return int(command.main(args=list(argv) if argv is not None else None, prog_name="rtdetr-operator") or 0)


if __name__ == "__main__":
    sys.exit(main())
