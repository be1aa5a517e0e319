"""The CLI's contract with the manifests and with users: ``RTDETR_<FLAG>`` environment
variables, flags winning over them, usage errors as exit 2 with ``error:`` last on stderr, and
development tools refusing to run where rtdetr_edge.dev is absent (the images)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import pytest

from rtdetr_edge import cli


def params_of(command: click.Command, args: list[str]) -> dict[str, Any]:
    with command.make_context(command.name or "", args) as context:
        return dict(context.params)


def test_flags_default_from_the_environment_and_flags_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RTDETR_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("RTDETR_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("RTDETR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RTDETR_SCORE_THRESHOLD", "0.3")
    params = params_of(cli.serve, [])
    assert params["model"] == str(tmp_path) and params["max_batch_size"] == 8 and params["score_threshold"] == 0.3
    assert params["cache_dir"] == tmp_path / "cache"
    assert params_of(cli.serve, ["--max-batch-size", "2"])["max_batch_size"] == 2
    settings = cli.predictor_settings(params)
    assert settings.max_batch_size == 8 and settings.device == "cpu"


def test_the_cache_dir_default_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RTDETR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert params_of(cli.warmup, ["--model", str(tmp_path)])["cache_dir"] == tmp_path / "rtdetr-edge"


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["serve"], {}, "give the model as --model DIR or --model-config FILE"),
        (["serve", "--model", "/nonexistent"], {}, "'/nonexistent' does not exist"),
        (["warmup", "--model", "."], {"RTDETR_MAX_BATCH_SIZE": "lots"}, "'lots' is not a valid integer range"),
        (["warmup", "--model", "."], {"RTDETR_DEVICE": "tpu"}, "'tpu' is not one of 'gpu', 'cpu'"),
        (["warmup", "--model", ".", "--max-batch-size", "0"], {}, "0 is not in the range 1<=x<=64"),
        (["pipeline", "missing.yaml"], {}, "'missing.yaml' does not exist"),
        (["nonsense"], {}, "No such command 'nonsense'"),
    ],
)
def test_usage_errors_exit_2_with_the_cause_last(
    argv: list[str], env: dict[str, str], fragment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and fragment in last, last


def test_an_invalid_resource_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    resource = tmp_path / "bad.yaml"
    resource.write_text("apiVersion: rtdetr.io/v1alpha1\nkind: RTDETRModel\nmetadata: {name: m}\nspec: {arch: yolo}\n")
    assert cli.main(["pipeline", str(resource)]) == 2
    assert "error: invalid spec: spec.arch: Input should be" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0 and "0.1.0" in capsys.readouterr().out
    assert cli.main(["serve", "--help"]) == 0
    assert "RTDETR_SHUTDOWN_DELAY_SECONDS" in capsys.readouterr().out


def test_development_tools_say_where_they_live(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "rtdetr_edge.dev", None)  # as in the images: the package is absent
    tools = (["demo", "--no-serve"], ["tiny-model", "x"], ["bench"], ["bench-cpu"], ["make-dataset", "x"],
             ["train-tiny", "x"])
    for argv in tools:
        assert cli.main(argv) == 2, argv
        assert "error: this is a development tool, not part of this image" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("gpu", "cpu", "driver", "nvidia", "cuda", "fragment"),
    [
        (None, "2.6.2", True, None, None, "this install has paddlepaddle 2.6.2, a CPU-only build: use --device cpu"),
        (None, None, True, None, None, "this install has no Paddle at all"),
        ("2.6.2", None, True, "void", None, "NVIDIA_VISIBLE_DEVICES='void' hides every GPU"),
        ("2.6.2", None, True, None, "-1", "CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
        ("2.6.2", None, False, None, None, "no NVIDIA driver is visible"),
        ("2.6.2", None, True, "all", "0", None),
    ],
)
def test_gpu_problem(gpu: str | None, cpu: str | None, driver: bool, nvidia: str | None, cuda: str | None,
                     fragment: str | None) -> None:  # fmt: skip
    from rtdetr_edge.gpu_check import gpu_problem

    problem = gpu_problem(gpu, cpu, driver, nvidia, cuda)
    assert problem is None if fragment is None else fragment in str(problem), problem


def test_gpu_on_a_cpu_install_fails_before_paddle_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Measured before: ~18 s, then a ValueError from inside Paddle. Now the cause and the fix,
    before any Paddle import (so in milliseconds)."""
    from importlib import metadata

    try:
        metadata.version("paddlepaddle-gpu")
        pytest.skip("this machine has the CUDA build of Paddle")
    except metadata.PackageNotFoundError:
        pass
    code = (
        "import sys\nfrom rtdetr_edge.cli import main\n"
        f"status = main(['warmup', '--model', {str(tmp_path)!r}, '--device', 'gpu'])\n"
        "assert 'paddle' not in sys.modules, 'Paddle was imported'\nraise SystemExit(status)\n"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --device gpu needs the CUDA build of Paddle")


def test_max_batch_size_has_one_bound_and_default_everywhere() -> None:
    """The CLI, the predictor settings and the CRD take their bound and default from the API."""
    import yaml

    from rtdetr_edge.api.spec import DEFAULT_MAX_BATCH_SIZE, MAX_BATCH_SIZE_LIMIT
    from rtdetr_edge.predictor.settings import PredictorSettings

    for command in ("serve", "warmup", "evaluate", "bench"):
        option = next(p for p in cli.cli.commands[command].params if p.name == "max_batch_size")
        assert (option.type.max, option.default) == (MAX_BATCH_SIZE_LIMIT, DEFAULT_MAX_BATCH_SIZE), command
    assert PredictorSettings().max_batch_size == DEFAULT_MAX_BATCH_SIZE
    PredictorSettings(max_batch_size=MAX_BATCH_SIZE_LIMIT)
    with pytest.raises(ValueError, match=f"within 1..{MAX_BATCH_SIZE_LIMIT}"):
        PredictorSettings(max_batch_size=MAX_BATCH_SIZE_LIMIT + 1)
    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "rtdetrmodels.rtdetr.io.yaml").read_text())
    serving = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["serving"]
    field = serving["properties"]["maxBatchSize"]
    assert (field["maximum"], field["default"]) == (MAX_BATCH_SIZE_LIMIT, DEFAULT_MAX_BATCH_SIZE)


@pytest.mark.parametrize(
    ("command", "option", "section", "field"),
    [
        ("serve", "score_threshold", "serving", "scoreThreshold"),
        ("serve", "batch_window_micros", "serving", "batchWindowMicros"),
        ("serve", "max_queue_millis", "serving", "maxQueueMillis"),
        ("serve", "max_batch_size", "serving", "maxBatchSize"),
        ("quantize", "batch_size", "quantization", "batchSize"),
        ("quantize", "calibration_batches", "quantization", "calibrationBatches"),
        ("quantize", "train_iter", "quantization", "trainIter"),
        ("quantize", "learning_rate", "quantization", "learningRate"),
        ("quantize", "method", "quantization", "method"),
    ],
)
def test_an_option_that_mirrors_a_resource_field_has_its_bounds_and_default(
    command: str, option: str, section: str, field: str
) -> None:
    """One definition per bound and default: what `kubectl explain` shows is what the CLI takes."""
    import yaml

    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "rtdetrmodels.rtdetr.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    schema = spec[section]["properties"][field]
    param = next(p for p in cli.cli.commands[command].params if p.name == option)
    assert param.default == schema.get("default"), (param.default, schema)
    if "enum" in schema:  # the CLI never takes "none" (nothing to quantize)
        assert set(param.type.choices) == set(schema["enum"]) - {"none"}
        return
    assert (param.type.min, param.type.max) == (schema.get("minimum"), schema.get("maximum")), schema
    assert param.type.min_open == schema.get("exclusiveMinimum", False)


def test_the_server_options_default_to_what_the_server_uses() -> None:
    """`rtdetr-edge serve`'s defaults are ServeOptions' and PredictorSettings' (used directly by
    `rtdetr-edge run` and the tests): one definition each."""
    import dataclasses

    from rtdetr_edge.predictor.settings import PredictorSettings
    from rtdetr_edge.server.model_service import ServeOptions

    params = {p.name: p for p in cli.cli.commands["serve"].params}
    serve_defaults = {f.name: f.default for f in dataclasses.fields(ServeOptions)}
    for name in ("model_name", "score_threshold", "max_detections", "max_body_bytes", "max_image_pixels"):
        assert params[name].default == serve_defaults[name], name
    assert params["batch_window_micros"].default / 1e6 == serve_defaults["batch_window_seconds"]
    assert params["max_queue_millis"].default / 1000 == serve_defaults["max_queue_seconds"]
    predictor = PredictorSettings()
    for name in ("device", "precision", "cpu_threads", "gpu_device_id", "cpu_int8", "max_batch_size"):
        assert params[name].default == getattr(predictor, name), name
