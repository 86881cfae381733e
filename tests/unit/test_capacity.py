"""The capacity planner against answers known independently of its code."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from bench.capacity import PROFILES, CostProfile, WaitModel, erlang_c, format_plan, measured_profile, plan
from serve.catalog import Task, get_spec
from serve.cli import main
from serve.request import RequestFields, build_request
from tests.support import png


def erlang_c_textbook(servers: int, offered_load: float) -> float:
    """Erlang C written out, in exact fractions: (a^c/c! * c/(c-a)) / (sum_{k<c} a^k/k! + that)."""
    a = Fraction(offered_load)
    queued = a**servers / math.factorial(servers) * Fraction(servers) / (servers - a)
    return float(queued / (sum(a**k / math.factorial(k) for k in range(servers)) + queued))


def profile(step_seconds: dict[int, float], **fields) -> CostProfile:
    """A one-step clip whose busy time is the step time of each world size."""
    return CostProfile.model_validate(
        {
            "model": "test",
            "source": "test",
            "device": "GPU",
            "height": 64,
            "width": 64,
            "num_frames": 9,
            "num_inference_steps": 1,
            "parallel": [{"world_size": n, "step_seconds": s} for n, s in step_seconds.items()],
            **fields,
        }
    )


HUNYUAN = PROFILES / "hunyuanvideo-720p-129f.yaml"


def test_erlang_c_of_one_server_is_its_utilisation():
    assert erlang_c(1, 0.3) == pytest.approx(0.3)  # M/M/1: P(wait) = rho


def test_erlang_c_of_two_servers_at_load_one_is_a_third():
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("servers", "load"), [(2, 1.5), (3, 2.5), (5, 4.2), (10, 7.0), (20, 19.5), (40, 31.7)]
)
def test_erlang_c_matches_the_textbook_formula(servers, load):
    assert erlang_c(servers, load) == pytest.approx(erlang_c_textbook(servers, load), rel=1e-12)


def test_erlang_c_stays_a_probability_for_many_servers():
    values = [erlang_c(c, 480.0) for c in (481, 490, 500, 550)]
    assert all(0 < v < 1 for v in values) and values == sorted(values, reverse=True)


def test_mm1_mean_wait_and_wait_percentile_match_the_closed_forms():
    wait = WaitModel(servers=1, arrival_rate=0.5, service_seconds=1.0)  # rho 0.5, mu - lambda 0.5
    assert wait.mean_wait == pytest.approx(0.5 / 0.5)
    assert wait.wait_quantile(95) == pytest.approx(math.log(0.5 / 0.05) / 0.5)
    assert wait.wait_quantile(40) == 0.0  # 60% of arrivals find the server free


@pytest.mark.parametrize(("servers", "rate", "service"), [(1, 0.9, 1.0), (4, 3.0, 1.0), (12, 0.005, 1904.0)])
def test_wait_percentile_inverts_the_erlang_c_tail(servers, rate, service):
    wait = WaitModel(servers=servers, arrival_rate=rate, service_seconds=service)
    t = wait.wait_quantile(99)
    tail = erlang_c_textbook(servers, rate * service) * math.exp(-(servers / service - rate) * t)
    assert tail == pytest.approx(0.01)


def test_allen_cunneen_halves_the_mmc_wait_for_a_fixed_service_time():
    exponential = WaitModel(servers=6, arrival_rate=0.01, service_seconds=500)
    fixed = WaitModel(servers=6, arrival_rate=0.01, service_seconds=500, service_scv=0)
    assert fixed.mean_wait == pytest.approx(exponential.mean_wait / 2)
    assert fixed.p_wait == exponential.p_wait


@pytest.mark.parametrize(("load", "servers"), [(0.5, 1), (4.0, 5), (5.29, 6), (31.7, 32)])
def test_a_fixed_service_time_and_a_loose_slo_need_the_fewest_servers_below_full_utilisation(load, servers):
    busy = 100.0
    result = plan(profile({1: busy}), clips_per_hour=load / busy * 3600, slo_seconds=1e12, service_scv=0)
    assert result.best is not None and result.best.replicas == servers
    assert load / servers < 1 and (servers == 1 or load / (servers - 1) >= 1)


def test_headroom_caps_utilisation():
    result = plan(profile({1: 100.0}), clips_per_hour=4.0 * 36, slo_seconds=1e12, max_utilisation=0.5)
    assert result.best.replicas == 8 and result.best.utilisation <= 0.5


def test_more_clips_per_hour_never_need_fewer_gpus():
    hunyuan = CostProfile.from_file(HUNYUAN)
    gpus = [plan(hunyuan, clips_per_hour=r, slo_seconds=3600).best.gpus for r in (1, 5, 10, 20, 40, 60, 120)]
    assert gpus == sorted(gpus) and gpus[0] < gpus[-1]


def test_a_looser_slo_never_needs_more_gpus():
    hunyuan = CostProfile.from_file(HUNYUAN)
    gpus = [plan(hunyuan, clips_per_hour=30, slo_seconds=s).best.gpus for s in (600, 1200, 2400, 3600, 1e6)]
    assert gpus == sorted(gpus, reverse=True) and gpus[0] > gpus[-1]


def test_a_degree_slower_than_the_slo_is_ruled_out_with_the_reason():
    result = plan(profile({1: 1904.0, 8: 338.0}), clips_per_hour=1, slo_seconds=1800)
    one, eight = result.options
    assert not one.feasible and "1904 s > SLO 1800" in one.note
    assert result.best is eight


def test_a_degree_whose_memory_does_not_fit_is_ruled_out():
    big = profile({1: 10.0}, device_memory_gb=80)
    big.parallel[0].peak_memory_gb = 95
    result = plan(big, clips_per_hour=1, slo_seconds=3600)
    assert result.best is None and "95 GB > 80 GB" in result.options[0].note


def test_a_pipeline_layout_is_chosen_where_only_its_stages_fit_the_device():
    # 48 GB cards: a sequence-parallel pair holds the whole transformer per GPU (56 GB), a pipeline of 2
    # stages half the blocks (33 GB), at a slower step.
    cards = CostProfile.model_validate(
        {
            "model": "hunyuanvideo",
            "source": "test",
            "device": "L40S",
            "device_memory_gb": 48,
            "height": 720,
            "width": 1280,
            "num_frames": 129,
            "num_inference_steps": 1,
            "parallel": [
                {"world_size": 2, "step_seconds": 100.0, "peak_memory_gb": 56},
                {"world_size": 2, "pipeline_degree": 2, "step_seconds": 180.0, "peak_memory_gb": 33},
            ],
        }
    )
    result = plan(cards, clips_per_hour=1, slo_seconds=3600)
    sequence, pipeline = result.options
    assert not sequence.feasible and "56 GB > 48 GB" in sequence.note
    assert result.best is pipeline and pipeline.pipeline_degree == 2
    text = format_plan(result)
    assert "(2 pipeline stages)" in text and "| 2 (2 stages) |" in text


def test_a_pipeline_degree_must_divide_the_devices():
    with pytest.raises(ValueError, match="pipeline_degree 3 does not divide world_size 4"):
        profile({1: 1.0}, parallel=[{"world_size": 4, "pipeline_degree": 3, "step_seconds": 1.0}])


def test_speedup_derives_world_sizes_from_the_one_device_step():
    derived = profile({1: 40.0}, speedup={2: 2.0, 8: 5.0})
    assert [(p.world_size, p.step_seconds) for p in derived.points()] == [(1, 40.0), (2, 20.0), (8, 8.0)]


def test_published_hunyuan_profile_reproduces_the_xdit_table():
    hunyuan = CostProfile.from_file(HUNYUAN)
    assert hunyuan.source.startswith("published (xDiT")
    busy = {p.world_size: hunyuan.busy_seconds(p) for p in hunyuan.points()}
    assert busy == pytest.approx({1: 1904, 2: 925, 4: 514, 8: 338})


@pytest.mark.parametrize(("clips_per_hour", "gpus", "degree"), [(10, 8, 2), (60, 34, 2)])
def test_hunyuan_720p_answer_in_the_readme(clips_per_hour, gpus, degree):
    result = plan(CostProfile.from_file(HUNYUAN), clips_per_hour=clips_per_hour, slo_seconds=3600)
    assert (result.best.gpus, result.best.world_size) == (gpus, degree)
    assert result.best.latency_quantile_seconds <= 3600 and result.best.utilisation < 1


def test_measured_profile_takes_medians_of_the_lowest_load_level():
    def sample(level: float, step: float) -> dict:
        return {
            "entry": "tiny", "model": "hunyuanvideo", "code": "OK", "phase": 0, "level": level,
            "step_s": step, "prepare_s": 0.1, "decode_s": 0.5, "queue_wait_s": 0.02,
            "latency_s": 0.1 + 8 * step + 0.7, "num_inference_steps": 8, "height": 64, "width": 112,
            "num_frames": 17,
        }  # fmt: skip

    run = {
        "workload": {"name": "w"},
        "started_at": "now",
        "requests": [sample(1, 0.01), sample(1, 0.02), sample(1, 0.03), sample(4, 1.0)],
        "metrics": [],
    }
    measured = measured_profile(run, "tiny")
    assert measured.parallel[0].step_seconds == pytest.approx(0.02)
    assert (measured.text_encode_seconds, measured.vae_decode_seconds) == (0.1, 0.5)
    assert measured.overhead_seconds == pytest.approx(0.7 - 0.5 - 0.02)
    assert measured.source.startswith("measured")


def test_capacity_cli_prints_the_plan(capsys):
    code = main(["capacity", "--profile", str(HUNYUAN), "--clips-per-hour", "10", "--slo-seconds", "3600"])
    out = capsys.readouterr().out
    assert code == 0 and "8 x NVIDIA H100 80GB: 4 replica(s) of 2 GPU(s)" in out and "Erlang C" in out


def test_the_plan_states_the_measured_cold_start_cost():
    from bench.capacity import CostProfile, format_plan, plan

    base = {
        "model": "hunyuanvideo", "source": "measured: test", "device": "cpu", "height": 32, "width": 32,
        "num_frames": 9, "num_inference_steps": 2, "parallel": [{"world_size": 1, "step_seconds": 1.0}],
    }  # fmt: skip
    with_cold = format_plan(plan(CostProfile(**base, cold_start_seconds=42.0), 10, 3600))
    without = format_plan(plan(CostProfile(**base), 10, 3600))
    assert "Cold start 42 s (measured)" in with_cold and "at least 42 s more latency" in with_cold
    assert "Cold start not measured" in without


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_profile_is_a_clip_its_model_can_make_and_says_where_its_numbers_come_from(path):
    profile = CostProfile.from_file(path)
    spec = get_spec(profile.model)
    tiny = profile.device.startswith("cpu")  # measured on the tiny checkpoints
    image = png() if spec.task is Task.I2V else b""
    fields = RequestFields(
        model=profile.model,
        prompt="p",
        image=image,
        height=profile.height,
        width=profile.width,
        num_frames=profile.num_frames,
        num_inference_steps=profile.num_inference_steps,
    )
    build_request(spec, spec.limits_for(tiny), fields)
    assert profile.source.startswith(("measured: ", "published ("))
    assert profile.parallel[0].world_size == 1  # the planner's speed-ups are over one device
