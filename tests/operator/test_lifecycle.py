"""The real kopf operator process against the API emulator: the whole RTDETRModel lifecycle."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import MODELS, REPO, Cluster, OperatorLauncher, load_sample, summary

NS, NAME = "vision", "rtdetr-r50"


def bring_to_ready(cluster: Cluster, operator: OperatorLauncher) -> tuple[str, str]:
    """Create the R50 sample, finish its Job with a passing gate, make its pods Ready."""
    operator.start()
    cluster.create_model(load_sample("rtdetr-r50.yaml"))
    job = cluster.wait_job(NS)[0]
    digest = job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]
    cluster.finish_job(NS, job["metadata"]["name"], True, summary(digest))
    cluster.wait(lambda: cluster.deployment(NS, NAME), what="deployment")
    cluster.set_deployment_ready(NS, NAME)
    cluster.wait_condition(NS, NAME, "Ready", "True", "Serving")
    return digest, job["metadata"]["name"]


def test_full_lifecycle_with_kubectl(cluster: Cluster, operator: OperatorLauncher, kubeconfig: Path, tmp_path: Path) -> None:
    operator.start()
    kubectl = [str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", str(kubeconfig),
               "--cache-dir", str(tmp_path / "kubectl-cache")]  # fmt: skip
    applied = subprocess.run([*kubectl, "apply", "--validate=false", "-f", str(REPO / "configs/samples/rtdetr-r50.yaml")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "rtdetrmodel.rtdetr.io/rtdetr-r50 created" in applied.stdout

    # The quantize Job appears with the spec's GPU settings.
    job = cluster.wait_job(NS)[0]
    pod_spec = job["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert container["command"][:2] == ["rtdetr-edge", "pipeline"] and "--device" in container["args"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
              for v in pod_spec["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
    assert claims == {"models": True, "datasets": True, "rtdetr-artifacts": False}
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "RTDETRModel" and owner["controller"] is True
    cluster.wait(lambda: cluster.model(NS, NAME).get("status", {}).get("phase") in ("Pending", "Quantizing"), what="phase")

    # Training progress from the pod log reaches the status.
    job_name = job["metadata"]["name"]
    progress = {"stage": "quantize", "done": 120, "total": 500, "elapsed_s": 1440.0, "eta_s": 4560.0, "loss": 0.0123}
    cluster.run_job_pod(NS, job_name, log="preparing\nRTDETR_PROGRESS " + json.dumps(progress) + "\n")
    quantized = cluster.wait_condition(NS, NAME, "Quantized", "Unknown", "JobRunning")
    assert "120/500" in quantized["message"] and "loss 0.0123" in quantized["message"]
    status = cluster.model(NS, NAME)["status"]
    assert status["phase"] == "Quantizing" and status["progress"]["done"] == 120

    # The Job succeeds with a passing gate: Deployment + Service roll out.
    digest = job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]
    cluster.finish_job(NS, job_name, True, summary(digest))
    deployment = cluster.wait(lambda: cluster.deployment(NS, NAME), what="deployment")
    service = cluster.wait(lambda: cluster.get(f"/api/v1/namespaces/{NS}/services/{NAME}"), what="service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    template = deployment["spec"]["template"]
    runtime = template["spec"]["containers"][0]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert runtime["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert runtime["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert template["metadata"]["annotations"]["rtdetr.io/model-digest"] == "sha256:" + "ab" * 32
    args = runtime["args"]
    assert args[args.index("--model") + 1] == f"/mnt/pvc/rtdetr-artifacts/{NS}/{NAME}/{digest[7:23]}/model"
    assert args[args.index("--precision") + 1] == "int8" and args[args.index("--max-batch-size") + 1] == "4"
    assert {"name": "engine-cache", "hostPath": {"path": "/var/cache/rtdetr-edge", "type": "DirectoryOrCreate"}} in template["spec"]["volumes"]
    ready = cluster.wait_condition(NS, NAME, "Ready", "False", "RollingOut")
    assert "0/2" in ready["message"]
    assert cluster.condition(NS, NAME, "Reconciling")["status"] == "True"  # type: ignore[index]  # kstatus: InProgress
    assert cluster.model(NS, NAME)["status"]["phase"] == "Deploying"

    cluster.set_deployment_ready(NS, NAME)
    cluster.wait_condition(NS, NAME, "Ready", "True", "Serving")
    status = cluster.model(NS, NAME)["status"]
    assert status["phase"] == "Ready" and status["observedGeneration"] == 1
    assert status["accuracy"] == {"baselineMap": 53.1, "quantizedMap": 53.0, "mapDrop": 0.1, "images": 500}
    assert status["model"]["uri"].startswith("pvc://rtdetr-artifacts/vision/rtdetr-r50/")
    assert status["serving"] == {"endpoint": "http://rtdetr-r50.vision.svc:8080", "readyReplicas": 2,
                                 "servingDigest": "sha256:" + "ab" * 32}  # fmt: skip
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["AccuracyGatePassed"]["message"] == "mAP 53.1 -> 53.0 (drop 0.1 <= 0.5)"
    assert conditions["Available"]["status"] == "True" and conditions["Quantized"]["reason"] == "JobSucceeded"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    reasons = {e["reason"] for e in cluster.events(NS)}
    assert {"JobCreated", "JobSucceeded", "WithinBudget", "Serving"} <= reasons

    # kstatus (what Flux uses): Current = observedGeneration == generation, no abnormal-true condition.
    model = cluster.model(NS, NAME)
    assert model["metadata"]["generation"] == model["status"]["observedGeneration"]
    assert conditions["Reconciling"]["status"] == "False" and conditions["Stalled"]["status"] == "False"

    # Delete through kubectl: children go with it (ownerReferences).
    deleted = subprocess.run([*kubectl, "delete", "-f", str(REPO / "configs/samples/rtdetr-r50.yaml")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    cluster.wait(lambda: not cluster.jobs(NS) and cluster.deployment(NS, NAME) is None, what="children deleted")
    assert cluster.get(f"{MODELS}/namespaces/{NS}/rtdetrmodels/{NAME}") is None


def test_transition_time_moves_only_when_status_flips(cluster: Cluster, operator: OperatorLauncher) -> None:
    bring_to_ready(cluster, operator)
    before = cluster.condition(NS, NAME, "Ready")
    time.sleep(1.5)  # several resyncs
    assert cluster.condition(NS, NAME, "Ready") == before


def test_failed_gate_keeps_the_old_model_serving(cluster: Cluster, operator: OperatorLauncher) -> None:
    old_digest, old_job = bring_to_ready(cluster, operator)
    cluster.patch_model(NS, NAME, {"spec": {"quantization": {"trainIter": 800}}})
    new_job = cluster.wait(lambda: [j for j in cluster.jobs(NS) if j["metadata"]["name"] != old_job], what="new job")[0]
    new_digest = new_job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]
    assert new_digest != old_digest
    cluster.finish_job(NS, new_job["metadata"]["name"], True, summary(new_digest, passed=False, quantized=51.0))
    ready = cluster.wait_condition(NS, NAME, "Ready", "False", "AccuracyGateFailed")
    assert "drop 2.1 > 0.5" in ready["message"] and "previous model keeps serving" in ready["message"]
    assert cluster.condition(NS, NAME, "Available")["status"] == "True"  # type: ignore[index]
    assert cluster.condition(NS, NAME, "AccuracyGatePassed")["reason"] == "DropExceedsBudget"  # type: ignore[index]
    deployment = cluster.deployment(NS, NAME)
    assert deployment is not None
    assert deployment["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == old_digest, "old model untouched"
    assert cluster.model(NS, NAME)["status"]["phase"] == "Failed"
    assert any(e["reason"] == "AccuracyGateFailed" and e["type"] == "Warning" for e in cluster.events(NS))


def test_spec_update_quantizes_again_and_rolls_out(cluster: Cluster, operator: OperatorLauncher) -> None:
    old_digest, old_job = bring_to_ready(cluster, operator)
    cluster.patch_model(NS, NAME, {"spec": {"quantization": {"maxMapDrop": 1.0}}})
    new_job = cluster.wait(lambda: [j for j in cluster.jobs(NS) if j["metadata"]["name"] != old_job], what="new job")[0]
    new_digest = new_job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]
    # Until the new Job passes, the old Deployment is untouched.
    time.sleep(1.0)
    assert cluster.deployment(NS, NAME)["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == old_digest  # type: ignore[index]
    assert cluster.condition(NS, NAME, "Available")["status"] == "True"  # type: ignore[index]
    cluster.finish_job(NS, new_job["metadata"]["name"], True, summary(new_digest, quantized=52.8))
    cluster.wait(
        lambda: cluster.deployment(NS, NAME)["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == new_digest,  # type: ignore[index]
        what="rollout of the new model",
    )
    cluster.wait_condition(NS, NAME, "Ready", "False", "RollingOut")
    cluster.set_deployment_ready(NS, NAME)
    cluster.wait_condition(NS, NAME, "Ready", "True", "Serving")
    status = cluster.model(NS, NAME)["status"]
    assert status["pipelineDigest"] == new_digest and status["observedGeneration"] == 2
    assert status["accuracy"]["quantizedMap"] == 52.8


def test_serving_only_update_does_not_quantize(cluster: Cluster, operator: OperatorLauncher) -> None:
    bring_to_ready(cluster, operator)
    cluster.patch_model(NS, NAME, {"spec": {"serving": {"replicas": 3, "scoreThreshold": 0.3}}})
    cluster.wait(lambda: cluster.deployment(NS, NAME)["spec"]["replicas"] == 3, what="replicas 3")  # type: ignore[index]
    args = cluster.deployment(NS, NAME)["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert args[args.index("--score-threshold") + 1] == "0.3"
    cluster.wait_condition(NS, NAME, "Ready", "False", "RollingOut")
    time.sleep(1.0)
    assert len(cluster.jobs(NS)) == 1, "a serving-only edit never creates a quantize Job"
    cluster.set_deployment_ready(NS, NAME)
    cluster.wait_condition(NS, NAME, "Ready", "True", "Serving")


def test_job_failure_reports_the_cause(cluster: Cluster, operator: OperatorLauncher) -> None:
    operator.start()
    cluster.create_model(load_sample("rtdetr-r50.yaml"))
    job = cluster.wait_job(NS)[0]
    crash = "\n".join(["Traceback (most recent call last):", '  File "x.py", line 1', "MemoryError",
                       "error: quantization failed: out of GPU memory"])  # fmt: skip
    cluster.finish_job(NS, job["metadata"]["name"], False, crash)
    quantized = cluster.wait_condition(NS, NAME, "Quantized", "False", "JobFailed")
    assert "out of GPU memory" in quantized["message"] and "MemoryError" in quantized["message"]
    ready = cluster.wait_condition(NS, NAME, "Ready", "False", "QuantizationFailed")
    assert "out of GPU memory" in ready["message"]
    stalled = cluster.wait_condition(NS, NAME, "Stalled", "True", "QuantizationFailed")  # kstatus: Failed
    assert "out of GPU memory" in stalled["message"]
    assert cluster.condition(NS, NAME, "Reconciling")["status"] == "False"  # type: ignore[index]
    assert cluster.model(NS, NAME)["status"]["phase"] == "Failed"
    time.sleep(1.0)
    assert len(cluster.jobs(NS)) == 1, "a failed Job is not retried by the operator"


def test_deadline_exceeded(cluster: Cluster, operator: OperatorLauncher) -> None:
    operator.start()
    cluster.create_model(load_sample("rtdetr-r50.yaml"))
    job = cluster.wait_job(NS)[0]
    cluster.finish_job(NS, job["metadata"]["name"], False, "quantize: iteration 310/500", reason="DeadlineExceeded",
                       message="Job was active longer than specified deadline")  # fmt: skip
    quantized = cluster.wait_condition(NS, NAME, "Quantized", "False", "DeadlineExceeded")
    assert "activeDeadlineSeconds" in quantized["message"] and "310/500" in quantized["message"]


def test_structured_failure_summary(cluster: Cluster, operator: OperatorLauncher) -> None:
    operator.start()
    cluster.create_model(load_sample("rtdetr-r50.yaml"))
    job = cluster.wait_job(NS)[0]
    message = "/mnt/pvc/datasets/coco/train2017/000000000009.jpg: corrupt or truncated JPEG: Premature end of JPEG file"
    failure = json.dumps({"schema": "rtdetr.io/quantize-result/v1", "ok": False, "reason": "DatasetFailed", "message": message})
    cluster.finish_job(NS, job["metadata"]["name"], False, failure)
    quantized = cluster.wait_condition(NS, NAME, "Quantized", "False", "JobFailed")
    assert quantized["message"] == message


def test_operator_restart_mid_job_does_not_duplicate(cluster: Cluster, operator: OperatorLauncher) -> None:
    first = operator.start()
    cluster.create_model(load_sample("rtdetr-r50.yaml"))
    job = cluster.wait_job(NS)[0]
    first.stop(kill=True)
    second = operator.start()
    time.sleep(1.5)
    assert [j["metadata"]["name"] for j in cluster.jobs(NS)] == [job["metadata"]["name"]]
    digest = job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]
    cluster.finish_job(NS, job["metadata"]["name"], True, summary(digest))
    cluster.wait(lambda: cluster.deployment(NS, NAME), what="deployment after restart")
    assert "created Deployment vision/rtdetr-r50" in second.log(), "the restarted operator carried on"


def test_lost_pods_are_reported(cluster: Cluster, operator: OperatorLauncher) -> None:
    bring_to_ready(cluster, operator)
    cluster.set_deployment_ready(NS, NAME, ready=0)  # every serving pod died
    available = cluster.wait_condition(NS, NAME, "Available", "False", "ReplicasLost")
    assert "no model is being served" in available["message"]
    cluster.wait_condition(NS, NAME, "Ready", "False", "RollingOut")
    cluster.set_deployment_ready(NS, NAME)
    cluster.wait_condition(NS, NAME, "Available", "True", "MinimumReplicasAvailable")


def test_drift_is_repaired(cluster: Cluster, operator: OperatorLauncher) -> None:
    bring_to_ready(cluster, operator)
    cluster.ok("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}")
    cluster.wait(lambda: cluster.deployment(NS, NAME), what="deployment recreated by the resync")
    cluster.wait_condition(NS, NAME, "Ready", "False", "RollingOut")


def test_invalid_spec_is_a_condition_not_a_retry_storm(cluster: Cluster, operator: OperatorLauncher) -> None:
    """Passes the CRD schema, fails the operator's cluster rules (the tiny arch has no exporter)."""
    operator.start()
    document = load_sample("rtdetr-r50.yaml")
    document["spec"]["arch"] = "tiny"
    document["spec"]["source"] = {"checkpoint": "pvc://models/tiny.pdparams"}
    cluster.create_model(document)
    ready = cluster.wait_condition(NS, NAME, "Ready", "False", "InvalidSpec")
    assert "tiny arch has no PaddleDetection config" in ready["message"]
    revision = cluster.model(NS, NAME)["metadata"]["resourceVersion"]
    time.sleep(1.5)  # five resync periods
    assert cluster.model(NS, NAME)["metadata"]["resourceVersion"] == revision, "no status churn"
    assert not cluster.jobs(NS)
    assert cluster.model(NS, NAME)["status"]["phase"] == "Failed"


def test_checkpoint_source_exports_first(cluster: Cluster, operator: OperatorLauncher) -> None:
    operator.start()
    document = load_sample("rtdetr-r50.yaml")
    document["spec"]["source"] = {"checkpoint": "pvc://models/rtdetr_r50vd_6x_coco.pdparams"}
    cluster.create_model(document)
    export = cluster.wait_job(NS, component="export")[0]
    command = export["spec"]["template"]["spec"]["containers"][0]
    assert "configs/rtdetr/rtdetr_r50vd_6x_coco.yml" in command["command"][2] and "trt=True" in command["command"][2]
    assert cluster.model(NS, NAME)["status"]["phase"] == "Exporting"
    assert not [j for j in cluster.jobs(NS) if j["metadata"]["labels"]["app.kubernetes.io/component"] == "quantize"]
    cluster.finish_job(NS, export["metadata"]["name"], True, "exported")
    job = cluster.wait_job(NS, component="quantize")[0]
    configmaps = cluster.items(f"/api/v1/namespaces/{NS}/configmaps")
    resource = next(c for c in configmaps if c["metadata"]["name"].startswith(f"{NAME}-pipeline"))["data"]["resource.yaml"]
    assert "inferenceModel: pvc://rtdetr-artifacts/vision/rtdetr-r50/export-" in resource
    assert job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == export["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["source"].update(checkpoint="pvc://models/x.pdparams"), "exactly one of inferenceModel"),
        (lambda s: s["quantization"].update(method="none"), "int8 needs quantization.method"),
        (lambda s: (s["serving"].update(precision="fp16", device="cpu"), s["quantization"].update(method="none")),
         "fp16 needs serving.device gpu"),
        (lambda s: s["serving"].update(precision="fp16"), "serves the FP32 model"),
        (lambda s: s["serving"].update(engineCache={"hostPath": "/a", "emptyDir": {}}), "exactly one of hostPath"),
        (lambda s: s["source"].update(inferenceModel="s3://bucket/model"), "does not match"),
        (lambda s: s.update(arch="yolov8"), "is not one of"),
        (lambda s: s["serving"].update(maxBatchSize=128), "is greater than the maximum"),
        (lambda s: s["storage"].update(artifacts="https://example.com/x"), "does not match"),
    ],
)  # fmt: skip
def test_api_rejects_invalid_specs(cluster: Cluster, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    document = copy.deepcopy(load_sample("rtdetr-r50.yaml"))
    mutate(document["spec"])
    response = cluster.request("POST", f"{MODELS}/namespaces/{NS}/rtdetrmodels", document)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["reason"] == "Invalid" and message in body["message"], body["message"]
