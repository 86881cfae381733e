"""Autoscaling under load, observed through Serve's own status API.

A separate Serve application ("autoscale") on the session's cluster and gRPC proxy holds three tiny
models with autoscaling settings fast enough for a test (delays of seconds instead of minutes):
- LOADED scales 1 -> 2 under more long requests than one replica takes, and back to 1;
- NEIGHBOUR (1..2 replicas, no traffic) must not scale while LOADED does;
- ZERO (0..1 replicas) starts at zero, serves its first request after a cold start, and goes back to zero.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import pytest

from serve.api import pb
from serve.client import VideogenClient
from serve.config import AppConfig
from tests.integration.conftest import Service

pytestmark = pytest.mark.integration

APP = "autoscale"
LOADED, NEIGHBOUR, ZERO = "hunyuanvideo", "cogvideox-2b", "modelscope-t2v"
MAX_REPLICAS = 2
CONCURRENT_REQUESTS = 2 * MAX_REPLICAS
LONG_REQUEST_STEPS = 30  # seconds of work for a tiny model on this machine, more when it is busy
SCALE_UP_TIMEOUT_S = 90.0  # a replica's cold start on a busy 2-core machine, with a wide margin
ZERO_ESTIMATE_S = 42.0
FAST_SCALING = {
    "upscale_delay_s": 0.5,
    "downscale_delay_s": 2.0,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 1.0,
}


@dataclass
class AutoscaleApp:
    """The separate application and how to reach it through the session's gRPC proxy."""

    service: Service
    config: AppConfig

    def client(self) -> VideogenClient:
        return VideogenClient(self.service.target, application=APP)

    def deployment(self, model: str) -> str:
        config = self.config.model(model)
        assert config is not None
        return config.deployment_name


def running_replicas(app: AutoscaleApp, model: str) -> int:
    """RUNNING replicas of a model's deployment, as Serve's controller reports them."""
    from ray import serve

    status = serve.status().applications[APP].deployments[app.deployment(model)]
    return status.replica_states.get("RUNNING", 0)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, period_s: float = 0.25) -> float:
    """Poll until `condition()` holds; returns the seconds it took, fails the test after `timeout_s`."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout_s:
            pytest.fail(f"not within {timeout_s:.0f}s: {what}")
        time.sleep(period_s)
    return time.monotonic() - began


def params(model: str, steps: int) -> pb.GenerationParams:
    return pb.GenerationParams(model=model, prompt="a red fox in the snow", seed=3, num_inference_steps=steps)


@pytest.fixture(scope="module")
def app(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AutoscaleApp]:
    from ray import serve

    from serve.deployments import build_app

    def model(name: str, min_replicas: int, max_replicas: int) -> dict:
        return {
            "name": name,
            "weights": "tiny",
            "num_cpus": 0.1,
            "max_queued_requests": 8,
            "cold_start_estimate_s": ZERO_ESTIMATE_S,
            "autoscaling": {"min_replicas": min_replicas, "max_replicas": max_replicas, **FAST_SCALING},
        }

    config = AppConfig.model_validate(
        {
            "results_dir": str(tmp_path_factory.mktemp("autoscale-results")),
            "models": [
                model(LOADED, 1, MAX_REPLICAS),
                model(NEIGHBOUR, 1, MAX_REPLICAS),
                model(ZERO, 0, 1),
            ],
        }
    )
    serve.run(build_app(config), name=APP, route_prefix=f"/{APP}")
    yield AutoscaleApp(service, config)
    serve.delete(APP)


@dataclass
class LoadRun:
    """What happened while LOADED got more long requests than one replica takes."""

    outcomes: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, LOADED, NEIGHBOUR) running
    scaled_up_s: float = 0.0
    back_to_min_s: float = 0.0


@pytest.fixture(scope="module")
def load_run(app: AutoscaleApp) -> LoadRun:
    # Each client keeps one long request in flight until the deployment is at its maximum, then stops:
    # the queue lasts as long as the new replica's cold start does, however busy the machine is.
    run = LoadRun()
    scaled_up, done = threading.Event(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            run.samples.append(
                (time.monotonic(), running_replicas(app, LOADED), running_replicas(app, NEIGHBOUR))
            )
            time.sleep(0.25)

    def client_loop(_: int) -> list[str]:
        outcomes = []
        with app.client() as client:
            while not scaled_up.is_set() and not done.is_set():
                try:
                    video = client.generate(params(LOADED, LONG_REQUEST_STEPS), timeout=120)
                    outcomes.append("OK" if video.summary.num_frames > 0 else "EMPTY")
                except grpc.RpcError as error:
                    outcomes.append(error.code().name)
        return outcomes

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
            clients = [pool.submit(client_loop, i) for i in range(CONCURRENT_REQUESTS)]
            try:
                run.scaled_up_s = wait_for(
                    lambda: running_replicas(app, LOADED) == MAX_REPLICAS,
                    SCALE_UP_TIMEOUT_S,
                    f"{LOADED} at {MAX_REPLICAS} running replicas under load",
                )
            finally:
                scaled_up.set()
            run.outcomes = [outcome for future in clients for outcome in future.result()]
        run.back_to_min_s = wait_for(
            lambda: running_replicas(app, LOADED) == 1, 60, f"{LOADED} back to its minimum of 1 replica"
        )
    finally:
        done.set()
        sampler.join(timeout=10)
    # The sampler's last reading may predate the scale-down that wait_for saw: take one more after it.
    run.samples.append((time.monotonic(), running_replicas(app, LOADED), running_replicas(app, NEIGHBOUR)))
    return run


def test_replicas_rise_to_max_under_load_and_fall_back_to_min(load_run: LoadRun) -> None:
    assert len(load_run.outcomes) >= CONCURRENT_REQUESTS
    assert set(load_run.outcomes) == {"OK"}, load_run.outcomes
    loaded = [sample[1] for sample in load_run.samples]
    assert loaded[0] == 1
    assert max(loaded) == MAX_REPLICAS
    assert loaded[-1] == 1  # sampled after the scale-down was seen


def test_load_on_one_model_adds_no_replicas_to_another(load_run: LoadRun) -> None:
    loaded = [sample[1] for sample in load_run.samples]
    neighbour = [sample[2] for sample in load_run.samples]
    assert max(loaded) == MAX_REPLICAS
    assert set(neighbour) == {1}


def exported(service: Service, sample: str, **labels: str) -> float:
    """One sample summed over the autoscale app's series with `labels`, as Ray's exporter serves it now.

    The exporter lags the replicas by up to 10 s: callers poll.
    """
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    wanted = {"application": APP, **labels}
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and all(s.labels.get(key) == value for key, value in wanted.items())
    )


def test_scaled_to_zero_model_serves_the_first_request_after_a_cold_start(app: AutoscaleApp) -> None:
    wait_for(lambda: running_replicas(app, ZERO) == 0, 30, f"{ZERO} at zero replicas")
    with app.client() as client:
        before = {m.name: m.expected_cold_start_seconds for m in client.list_models()}
        video = client.generate(params(ZERO, 2), timeout=120)
        after = {m.name: m.expected_cold_start_seconds for m in client.list_models()}
    assert before[ZERO] == ZERO_ESTIMATE_S  # nothing measured yet: the configured estimate
    assert before[LOADED] == after[LOADED] == 0.0  # keeps a replica: no request waits for a cold start
    measured = after[ZERO]
    assert 0 < measured != ZERO_ESTIMATE_S
    assert video.summary.num_frames > 0
    # The request arrived before the replica began loading: it waited at least the replica's cold start,
    # and the replica recorded that wait.
    assert video.summary.queue_seconds >= measured
    wait_for(
        lambda: exported(app.service, "ray_videogen_queue_wait_seconds_count", model=ZERO) >= 1,
        30,
        "queue_wait_seconds exported for the cold-started request",
        period_s=1.0,
    )
    assert exported(app.service, "ray_videogen_queue_wait_seconds_sum", model=ZERO) >= measured
    wait_for(lambda: running_replicas(app, ZERO) == 0, 30, f"{ZERO} back to zero replicas after idling")


def test_a_request_waiting_for_a_cold_start_is_bounded_by_its_deadline(app: AutoscaleApp) -> None:
    wait_for(lambda: running_replicas(app, ZERO) == 0, 30, f"{ZERO} at zero replicas")
    began = time.monotonic()
    with app.client() as client, pytest.raises(grpc.RpcError) as error:
        client.generate(params(ZERO, 2), timeout=1.0)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 5
    # The Router stopped waiting for the replica too: it ended the call as cancelled.
    wait_for(
        lambda: (
            exported(app.service, "ray_videogen_requests_total", rpc="Generate", model=ZERO, code="CANCELLED")
            >= 1
        ),
        30,
        "the Router counted the Generate call cancelled at its deadline",
        period_s=1.0,
    )
