"""As a user installs: the chart from an OCI registry by digest, naming the images by the digests
that registry serves (built from this checkout by BuildKit), each signature verified first. The
operator pod is pulled by that digest and runs on the real node: Ready is the image working."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.images import BuiltImages, image_values, push_chart
from tests.cluster.supply_chain import clean, generate_key_pair, sign, verify

from .conftest import TEST_VALUES, Cluster, OperatorRelease


def test_the_chart_installs_from_the_registry_by_digest_with_the_images_it_holds(
    cluster: Cluster, images: BuiltImages, tmp_path: Path
) -> None:
    pushed = push_chart(images.registry.host, tmp_path, plain_http=True)
    chart = f"oci://{images.registry.host}/charts/rtdetr-edge@{images.registry.digest('charts/rtdetr-edge', '0.1.0')}"
    assert pushed == chart, "the registry serves what Helm pushed"
    operator_image, runtime_image = images.refs["operator"], images.refs["runtime-cpu"]
    # As a site that signs what it mirrors: signed by digest, and verified before it is installed.
    keys = generate_key_pair(tmp_path / "keys", password="site-key")
    for ref in (chart.removeprefix("oci://"), operator_image, runtime_image):
        clean(ref, plain_http=True)
        sign(ref, keys, plain_http=True)
        verified = verify(ref, keys.public, plain_http=True)
        assert verified.returncode == 0, f"{ref} does not verify: {verified.stderr[-1500:]}"
    values = {
        **TEST_VALUES,
        "operator": {**TEST_VALUES["operator"], "image": image_values(operator_image)},
        "images": {"runtimeCpu": image_values(runtime_image)},
    }
    release = OperatorRelease(cluster).install(values, chart, "--plain-http")
    try:
        pod = release.wait_ready()
        (container,) = pod["spec"]["containers"]
        assert container["image"] == operator_image, "the operator pod names the image by the registry's digest"
        env = {item["name"]: item.get("value") for item in container.get("env") or []}
        assert env["RTDETR_OPERATOR_RUNTIME_IMAGE_CPU"] == runtime_image, "Jobs and CPU serving pods get the runtime image"
        listed = cluster.helm("list", "--namespace", release.namespace, "--output", "json").stdout
        assert '"chart":"rtdetr-edge-0.1.0"' in listed.replace(" ", ""), listed
    finally:
        release.uninstall()
