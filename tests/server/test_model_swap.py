"""In-place model swaps (serving.rollout InPlace): a server started from a served-model file
loads the model a changed file names beside the one serving, switches between two requests, and
keeps serving the old one when the new one cannot be loaded, saying why in Triton's repository
index. Real `rtdetr-edge serve` processes, real clients."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from rtdetr_edge.api.served import ServedModel
from rtdetr_edge.model_files import ModelFiles

from ..conftest import start_server
from .test_lifecycle import metric


def write_served_model(path: Path, served: ServedModel) -> None:
    """Replace the file whole, as the kubelet swaps a ConfigMap volume's ..data link."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(served.model_dump_json(by_alias=True, exclude_none=True))
    os.replace(staged, path)


def write_model_file(path: Path, model_dir: Path, digest: str | None = None) -> None:
    write_served_model(path, ServedModel(model_dir=str(model_dir), digest=digest or ModelFiles.locate(model_dir).digest(),
                                         pipeline_digest="sha256:" + "0" * 64))  # fmt: skip


def index(url: str) -> list[dict[str, str]]:
    response = requests.post(f"{url}/v2/repository/index", json={}, timeout=5)
    assert response.status_code == 200
    return list(response.json())


def wait_for(condition, timeout: float = 120.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """Sequential detections from two client threads until stopped: which digests answered, and failures."""

    def __init__(self, url: str, image: bytes) -> None:
        self.url, self.image = url, image
        self.digests: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                response = session.post(f"{self.url}/v1/detect", data=self.image, headers={"Content-Type": "image/jpeg"},
                                        timeout=30)  # fmt: skip
                if response.status_code == 200:
                    self.digests[response.json()["digest"]] += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as error:
                self.failures.append(repr(error))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_a_changed_model_file_swaps_models_in_place_without_failing_a_request(
    tiny_model_dir: Path, other_model_dir: Path, tmp_path: Path, fixture_images: list[Path]
) -> None:
    old, new = ModelFiles.locate(tiny_model_dir).digest(), ModelFiles.locate(other_model_dir).digest()
    model_file = tmp_path / "model.json"
    write_model_file(model_file, tiny_model_dir)
    server = start_server(None, tmp_path / "cache", tmp_path, "--model-config", str(model_file))
    try:
        server.wait_ready()
        assert index(server.url) == [{"name": "rtdetr", "version": old, "state": "READY", "reason": ""}]
        with Load(server.url, fixture_images[0].read_bytes()) as load:
            wait_for(lambda: load.digests[old] >= 5, what="answers from the first model")
            write_model_file(model_file, other_model_dir)
            wait_for(lambda: load.digests[new] >= 5, what=f"answers from the new model\n{server.log()}")
            ready_throughout = requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
        assert load.failures == [], load.failures[:5]
        assert ready_throughout
        assert index(server.url) == [{"name": "rtdetr", "version": new, "state": "READY", "reason": ""}]
        assert requests.get(f"{server.url}/v2/models/rtdetr", timeout=5).json()["parameters"]["digest"] == new
        assert metric(server.url, 'rtdetr_model_swaps_total{result="succeeded"}') == 1.0
        assert f"now serves {new}" in server.log()
    finally:
        assert server.stop() == 0


def test_a_model_that_cannot_load_leaves_the_old_one_serving_and_says_why(
    tiny_model_dir: Path, other_model_dir: Path, tmp_path: Path, fixture_images: list[Path]
) -> None:
    old = ModelFiles.locate(tiny_model_dir).digest()
    model_file = tmp_path / "model.json"
    write_model_file(model_file, tiny_model_dir)
    server = start_server(None, tmp_path / "cache", tmp_path, "--model-config", str(model_file))
    try:
        server.wait_ready()
        wrong = "sha256:" + "1" * 64  # the files were changed after the pipeline wrote them
        write_model_file(model_file, other_model_dir, digest=wrong)
        wait_for(lambda: len(index(server.url)) == 2 and index(server.url)[1]["state"] == "UNAVAILABLE",
                 what=f"the refusal in the index\n{server.log()}")  # fmt: skip
        serving, refused = index(server.url)
        assert serving == {"name": "rtdetr", "version": old, "state": "READY", "reason": ""}
        assert refused["version"] == wrong and "not the expected" in refused["reason"], refused
        answer = requests.post(f"{server.url}/v1/detect", data=fixture_images[0].read_bytes(),
                               headers={"Content-Type": "image/jpeg"}, timeout=30)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["digest"] == old
        assert metric(server.url, 'rtdetr_model_swaps_total{result="failed"}') == 1.0

        model_file.write_text("{not json")  # a broken file: refused, still serving
        wait_for(lambda: "served-model document" in index(server.url)[-1]["reason"], what="the broken file's refusal")
        write_model_file(model_file, tiny_model_dir)  # back to the model serving: nothing to load
        wait_for(lambda: len(index(server.url)) == 1, what="the refusal to clear")
        assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0


def test_an_unreadable_model_file_at_start_exits_with_the_cause(tmp_path: Path) -> None:
    model_file = tmp_path / "model.json"
    model_file.write_text('{"schema": "rtdetr.io/served-model/v1"}')
    server = start_server(None, tmp_path / "cache", tmp_path, "--model-config", str(model_file))
    assert server.process.wait(60) == 1
    assert "is not a served-model document" in server.log().strip().splitlines()[-1]
