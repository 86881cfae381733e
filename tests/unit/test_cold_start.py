"""What ListModels states as a model's expected cold start, and how a replica's measurement is kept."""

from __future__ import annotations

from pathlib import Path

from serve.cold_start import SUBDIRECTORY, expected_cold_start, last_cold_start, record_cold_start
from serve.config import ModelDeployment


def model(min_replicas: int = 0, weights: str = "tiny", estimate: float = 30.0) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "name": "svd",
            "weights": weights,
            "cold_start_estimate_s": estimate,
            "autoscaling": {"min_replicas": min_replicas, "max_replicas": 2},
        }
    )


def test_a_model_that_keeps_replicas_makes_no_request_wait_for_a_cold_start(tmp_path: Path) -> None:
    record_cold_start(tmp_path, model(min_replicas=1), 12.0)
    assert expected_cold_start(tmp_path, model(min_replicas=1)) == 0.0


def test_scale_to_zero_reports_the_estimate_until_a_replica_measured_one(tmp_path: Path) -> None:
    assert expected_cold_start(tmp_path, model(estimate=30.0)) == 30.0
    record_cold_start(tmp_path, model(), 7.5)
    record_cold_start(tmp_path, model(), 6.25)
    assert expected_cold_start(tmp_path, model(estimate=30.0)) == 6.25


def test_a_measurement_with_other_weights_does_not_count(tmp_path: Path) -> None:
    record_cold_start(tmp_path, model(weights="tiny"), 3.0)
    assert last_cold_start(tmp_path, model(weights="hub")) is None
    assert expected_cold_start(tmp_path, model(weights="hub", estimate=90.0)) == 90.0


def test_an_unreadable_record_falls_back_to_the_estimate(tmp_path: Path) -> None:
    (tmp_path / SUBDIRECTORY).mkdir()
    (tmp_path / SUBDIRECTORY / "svd.json").write_text("{not json")
    assert expected_cold_start(tmp_path, model(estimate=30.0)) == 30.0


def test_recording_where_it_cannot_write_does_not_raise(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the directory would go")
    record_cold_start(blocked, model(), 5.0)
    assert last_cold_start(blocked, model()) is None
