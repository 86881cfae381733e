"""serve/metrics.py: names, types and labels of every metric, memory sampling, and their documentation."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from serve import metrics as metrics_module
from serve.metrics import LATENCY_BUCKETS_S, RESIDENT_MEMORY, SPECS, Kind, Metrics, memory_samples

README = Path(__file__).resolve().parents[2] / "README.md"


def test_names_follow_prometheus_conventions() -> None:
    for spec in SPECS:
        assert re.fullmatch(r"ray_videogen_[a-z][a-z0-9_]*", spec.exported), spec.name
        assert spec.name.endswith("_total") == (spec.kind is Kind.COUNTER), spec.name
        if spec.kind is Kind.HISTOGRAM:
            assert spec.name.endswith("_seconds") and list(spec.buckets) == sorted(spec.buckets), spec.name
        if "memory" in spec.name:
            assert spec.name.endswith("_bytes"), spec.name
    assert len({spec.exported for spec in SPECS}) == len(SPECS)


def test_every_spec_becomes_one_metric_object_with_its_name_labels_and_buckets() -> None:
    attributes = vars(Metrics()).values()
    objects = [o for a in attributes for o in (a.values() if isinstance(a, dict) else [a])]
    built = {obj.info["name"]: obj.info for obj in objects}

    assert set(built) == {"videogen_" + spec.name for spec in SPECS}
    for spec in SPECS:
        info = built["videogen_" + spec.name]
        assert tuple(info["tag_keys"]) == spec.labels and info["description"] == spec.description
        assert tuple(info.get("boundaries", ())) == spec.buckets


def test_latency_buckets_span_sub_second_to_an_hour() -> None:
    assert LATENCY_BUCKETS_S[0] <= 0.1 and LATENCY_BUCKETS_S[-1] >= 3600


def test_cpu_sample_is_the_process_resident_size() -> None:
    samples = {(sample.device, sample.spec): sample.value for sample in memory_samples()}
    rss = psutil.Process().memory_info().rss

    assert samples[("cpu", RESIDENT_MEMORY)] == pytest.approx(rss, rel=0.2)


class FakeNvml:
    """Records which handle the code asks NVML for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, object]] = []

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, object]:
        self.asked.append(("index", index))
        return ("index", index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> tuple[str, object]:
        self.asked.append(("uuid", uuid))
        return ("uuid", uuid)


@pytest.mark.parametrize(
    ("visible", "torch_index", "handle"),
    [
        (None, 1, ("index", 1)),
        ("3", 0, ("index", 3)),  # Ray gives a replica GPU 3: torch's cuda:0 is NVML's device 3
        ("6,2", 1, ("index", 2)),
        ("GPU-8e1f2a3b-0000", 0, ("uuid", "GPU-8e1f2a3b-0000")),
    ],
)
def test_nvml_reads_the_gpu_torch_uses_under_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str | None, torch_index: int, handle: tuple
) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)

    assert metrics_module._nvml_handle(FakeNvml(), torch_index) == handle


def test_without_nvml_the_driver_reports_used_and_total(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    import torch

    real_import = builtins.__import__

    def no_pynvml(name: str, *args, **kwargs):
        if name == "pynvml":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (30, 80))

    used, total = metrics_module.GPU_MEMORY["used"], metrics_module.GPU_MEMORY["total"]
    assert metrics_module._nvml(0, "GPU-aa") == [
        metrics_module.MemorySample(used, "GPU-aa", 50),
        metrics_module.MemorySample(total, "GPU-aa", 80),
    ]


def test_readme_documents_every_metric_with_its_type_and_labels() -> None:
    section = README.read_text().split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[0].strip("` "): cells
        for line in section.splitlines()
        if line.startswith("| `ray_videogen_")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }

    assert set(rows) == {spec.exported for spec in SPECS}
    for spec in SPECS:
        kind, labels = rows[spec.exported][1:3]
        assert kind == spec.kind.value, spec.exported
        assert set(re.findall(r"`(\w+)`", labels)) == set(spec.labels), spec.exported


def test_record_memory_sets_the_gauge_of_each_measure_by_rank_and_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded: list[tuple[str, float, dict[str, str]]] = []

    def gauge(name: str) -> SimpleNamespace:
        return SimpleNamespace(set=lambda v, tags: recorded.append((name, v, tags)))

    fake = SimpleNamespace(memory={spec.name: gauge(spec.name) for spec in metrics_module.MEMORY_SPECS})
    monkeypatch.setattr(metrics_module, "metrics", lambda: fake)
    peak = metrics_module.GPU_MEMORY["peak"]
    samples = [
        metrics_module.MemorySample(RESIDENT_MEMORY, "cpu", 7.0),
        metrics_module.MemorySample(peak, "GPU-5f1c", 9.0),
    ]
    monkeypatch.setattr(metrics_module, "memory_samples", lambda: samples)

    metrics_module.record_memory("hunyuanvideo", rank=1)

    assert recorded == [
        ("resident_memory_bytes", 7.0, {"model": "hunyuanvideo", "rank": "1", "device": "cpu"}),
        ("gpu_memory_peak_bytes", 9.0, {"model": "hunyuanvideo", "rank": "1", "device": "GPU-5f1c"}),
    ]
