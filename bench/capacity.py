"""Capacity planner: how many GPUs, as replicas of which parallel degree, meet a clip rate and a latency SLO.

Model. Clips arrive as a Poisson process at rate lambda (the target clips/hour). Each replica spans `n`
GPUs (sequence parallelism) and runs one clip at a time (`max_ongoing_requests: 1`); its busy time per clip
is S(n) = text encode + steps x seconds-per-step(n) + VAE decode, from a measured or published cost
profile. `c` identical replicas share one FIFO queue (Serve routes a request to a free replica), which is the
M/M/c queue (Erlang C):

    a = lambda * S,  rho = a / c < 1,  P(wait) = C(c, a),  E[W] = C(c, a) / (c/S - lambda)
    P(W > t) = C(c, a) * exp(-(c/S - lambda) * t)

Exponential service times (M/M/c) are the conservative case; a clip of fixed size takes a nearly fixed time
(M/D/c). With `service_scv` < 1 the planner uses the Allen-Cunneen M/G/c approximation: waits scale by
(Ca^2 + Cs^2) / 2 (Ca^2 = 1 for Poisson arrivals, Cs^2 = service-time variance / mean^2; 0 = deterministic),
applied to the whole exponential tail of the wait. The SLO is a percentile of end-to-end latency:
T_q = W_q + S(n) + overhead, exact when the service time is deterministic and W follows the model.
Not modelled: cold starts and autoscaling lag (replicas are assumed up: min_replicas = c), failures and
retries, batching, several models sharing GPUs, and replicas of mixed degrees.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROFILES = Path(__file__).parent / "profiles"


class ParallelPoint(BaseModel):
    """Cost of one denoising step on a replica of `world_size` devices."""

    model_config = ConfigDict(extra="forbid")
    world_size: int = Field(ge=1, description="devices of one replica (ulysses x ring x cfg x pipeline)")
    pipeline_degree: int = Field(
        1,
        ge=1,
        description="pipeline stages among them (parallel.pipeline_degree): each device holds 1/stages of "
        "the transformer's blocks, so the peak memory per device is lower and the step slower",
    )
    step_seconds: float = Field(gt=0, description="seconds per denoising step at the profile's size")
    peak_memory_gb: float | None = Field(None, gt=0, description="peak memory per device, if known")

    @model_validator(mode="after")
    def _stages_divide_the_devices(self) -> ParallelPoint:
        if self.world_size % self.pipeline_degree:
            raise ValueError(
                f"pipeline_degree {self.pipeline_degree} does not divide world_size {self.world_size}"
            )
        return self

    @property
    def layout(self) -> tuple[int, int]:
        return self.world_size, self.pipeline_degree


class CostProfile(BaseModel):
    """What one clip of one size costs a replica; `source` says whether it was measured or published."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="catalog name")
    source: str = Field(description="how the numbers were obtained: 'measured: ...' or 'published (...)'")
    device: str = Field(description="the device the numbers are for, e.g. 'NVIDIA H100 80GB' or 'cpu'")
    device_memory_gb: float | None = Field(None, gt=0, description="memory of one device (fit check)")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    num_frames: int = Field(gt=0)
    num_inference_steps: int = Field(gt=0, description="steps of the profiled clip (the default to plan)")
    text_encode_seconds: float = Field(0.0, ge=0, description="before the first step (prompt encoding)")
    vae_decode_seconds: float = Field(0.0, ge=0, description="after the last step (VAE decode, encoding)")
    overhead_seconds: float = Field(
        0.0, ge=0, description="end-to-end latency outside the replica's busy time (RPC, transfer)"
    )
    cold_start_seconds: float = Field(
        0.0,
        ge=0,
        description="replica start to first request answerable (bench/cold_start.py's from_zero_s); "
        "0 when not measured",
    )
    parallel: list[ParallelPoint] = Field(min_length=1, description="per-step cost by world size")
    speedup: dict[int, float] = Field(
        default_factory=dict,
        description="world size -> step speed-up over 1 device, for sizes without a point (e.g. xDiT's)",
    )
    notes: str = Field("", description="assumptions behind the numbers")

    @field_validator("parallel")
    @classmethod
    def _unique_sizes(cls, points: list[ParallelPoint]) -> list[ParallelPoint]:
        layouts = [p.layout for p in points]
        if len(set(layouts)) != len(layouts):
            raise ValueError(f"(world size, pipeline degree) listed twice: {layouts}")
        return sorted(points, key=lambda p: p.layout)

    @classmethod
    def from_file(cls, path: str | Path) -> CostProfile:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))

    def points(self) -> list[ParallelPoint]:
        """Measured/published points, plus points derived from `speedup` and the 1-device step time."""
        points = {p.layout: p for p in self.parallel}
        base = points.get((1, 1))
        if base is not None:
            for size, factor in self.speedup.items():
                points.setdefault(
                    (size, 1), ParallelPoint(world_size=size, step_seconds=base.step_seconds / factor)
                )
        return [points[layout] for layout in sorted(points)]

    def busy_seconds(self, point: ParallelPoint, steps: int | None = None) -> float:
        """A replica's time for one clip: encode + steps x step + decode."""
        steps = steps or self.num_inference_steps
        return self.text_encode_seconds + steps * point.step_seconds + self.vae_decode_seconds


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in M/M/c with `servers` and offered load a = lambda/mu < c.

    Computed through the Erlang B recursion, which stays finite for large c.
    """
    if servers < 1 or offered_load < 0:
        raise ValueError("need servers >= 1 and offered_load >= 0")
    if offered_load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return servers * blocking / (servers - offered_load * (1 - blocking))


class WaitModel(BaseModel):
    """Waiting time at c servers: M/M/c (Erlang C), scaled by Allen-Cunneen for non-exponential service."""

    servers: int = Field(ge=1)
    arrival_rate: float = Field(ge=0, description="arrivals per second")
    service_seconds: float = Field(gt=0, description="mean busy time per request")
    arrival_scv: float = Field(
        1.0, ge=0, description="squared coefficient of variation of inter-arrival times"
    )
    service_scv: float = Field(1.0, ge=0, description="squared coefficient of variation of service times")

    @property
    def offered_load(self) -> float:
        return self.arrival_rate * self.service_seconds

    @property
    def utilisation(self) -> float:
        return self.offered_load / self.servers

    @property
    def stable(self) -> bool:
        return self.utilisation < 1

    @property
    def p_wait(self) -> float:
        return erlang_c(self.servers, self.offered_load)

    @property
    def decay_rate(self) -> float:
        """theta in P(W > t) = P(wait) exp(-theta t)."""
        factor = (self.arrival_scv + self.service_scv) / 2
        spare = self.servers / self.service_seconds - self.arrival_rate
        return math.inf if factor == 0 else spare / factor

    @property
    def mean_wait(self) -> float:
        return math.inf if not self.stable else self.p_wait / self.decay_rate

    def wait_quantile(self, q: float) -> float:
        """The q-th percentile (0 < q < 100) of the waiting time."""
        if not self.stable:
            return math.inf
        tail = 1 - q / 100
        return 0.0 if self.p_wait <= tail else math.log(self.p_wait / tail) / self.decay_rate


class Option(BaseModel):
    """The fewest replicas of one parallel degree that meet the target, or why none do."""

    world_size: int
    pipeline_degree: int = 1
    busy_seconds: float = Field(description="one clip on one replica")
    feasible: bool
    replicas: int = 0
    gpus: int = 0
    utilisation: float = 0.0
    p_wait: float = 0.0
    mean_wait_seconds: float = 0.0
    wait_quantile_seconds: float = 0.0
    latency_quantile_seconds: float = 0.0
    mean_latency_seconds: float = 0.0
    peak_memory_gb: float | None = None
    note: str = ""


class Plan(BaseModel):
    """The planner's answer and everything it assumed."""

    model: str
    source: str
    device: str
    clip: str
    clips_per_hour: float
    slo_seconds: float
    percentile: float
    steps: int
    arrival_scv: float
    service_scv: float
    max_utilisation: float
    queue_model: str
    options: list[Option]
    best: Option | None
    assumptions: list[str]


def _option(
    profile: CostProfile,
    point: ParallelPoint,
    arrival_rate: float,
    slo_seconds: float,
    percentile: float,
    steps: int,
    arrival_scv: float,
    service_scv: float,
    max_utilisation: float,
    max_replicas: int,
) -> Option:
    busy = profile.busy_seconds(point, steps)
    base = {
        "world_size": point.world_size,
        "pipeline_degree": point.pipeline_degree,
        "busy_seconds": busy,
        "peak_memory_gb": point.peak_memory_gb,
    }
    fixed = busy + profile.overhead_seconds
    limit = profile.device_memory_gb
    if point.peak_memory_gb is not None and limit is not None and point.peak_memory_gb > limit:
        return Option(**base, feasible=False, note=f"needs {point.peak_memory_gb:g} GB > {limit:g} GB/device")
    if fixed > slo_seconds:
        return Option(
            **base, feasible=False, note=f"one clip alone takes {fixed:.0f} s > SLO {slo_seconds:g} s"
        )
    load = arrival_rate * busy
    servers = max(1, math.floor(load) + 1, math.ceil(load / max_utilisation - 1e-9))
    while servers <= max_replicas:
        wait = WaitModel(
            servers=servers,
            arrival_rate=arrival_rate,
            service_seconds=busy,
            arrival_scv=arrival_scv,
            service_scv=service_scv,
        )
        latency = wait.wait_quantile(percentile) + fixed
        if latency <= slo_seconds:
            return Option(
                **base,
                feasible=True,
                replicas=servers,
                gpus=servers * point.world_size,
                utilisation=wait.utilisation,
                p_wait=wait.p_wait,
                mean_wait_seconds=wait.mean_wait,
                wait_quantile_seconds=wait.wait_quantile(percentile),
                latency_quantile_seconds=latency,
                mean_latency_seconds=wait.mean_wait + fixed,
            )
        servers += 1
    return Option(**base, feasible=False, note=f"more than {max_replicas} replicas")


def plan(
    profile: CostProfile,
    clips_per_hour: float,
    slo_seconds: float,
    percentile: float = 95.0,
    steps: int | None = None,
    arrival_scv: float = 1.0,
    service_scv: float = 1.0,
    max_utilisation: float = 1.0,
    max_replicas: int = 100_000,
) -> Plan:
    """For every parallel degree of the profile, the fewest replicas meeting the SLO; the cheapest wins.

    Cheapest = fewest GPUs, then the lower latency percentile, then the smaller degree.
    """
    if clips_per_hour <= 0 or slo_seconds <= 0 or not 0 < percentile < 100 or not 0 < max_utilisation <= 1:
        raise ValueError(
            "need clips_per_hour > 0, slo_seconds > 0, 0 < percentile < 100, 0 < max_utilisation <= 1"
        )
    steps = steps or profile.num_inference_steps
    rate = clips_per_hour / 3600
    options = [
        _option(
            profile,
            point,
            rate,
            slo_seconds,
            percentile,
            steps,
            arrival_scv,
            service_scv,
            max_utilisation,
            max_replicas,
        )
        for point in profile.points()
    ]
    feasible = [o for o in options if o.feasible]
    best = min(
        feasible,
        key=lambda o: (o.gpus, o.latency_quantile_seconds, o.world_size, o.pipeline_degree),
        default=None,
    )
    exact = arrival_scv == 1 and service_scv == 1
    queue_model = (
        "M/M/c (Erlang C), exact for Poisson arrivals and exponential service"
        if exact
        else f"M/G/c by Allen-Cunneen: M/M/c waits x (Ca^2 + Cs^2)/2 = {(arrival_scv + service_scv) / 2:g}"
    )
    assumptions = [
        f"Arrivals: {'Poisson' if arrival_scv == 1 else f'Ca^2 = {arrival_scv:g}'} at "
        f"{clips_per_hour:g} clips/h ({rate:.5f}/s); throughput = arrival rate in steady state "
        "(utilisation < 1).",
        f"Service: one clip per replica at a time; busy time = text encode {profile.text_encode_seconds:g} s "
        f"+ {steps} steps x s/step(n) + VAE decode {profile.vae_decode_seconds:g} s; "
        f"service-time variability Cs^2 = {service_scv:g} (1 = exponential, conservative; 0 = fixed).",
        f"Latency SLO: p{percentile:g} of end-to-end = p{percentile:g} of the queue wait + busy time + "
        f"overhead {profile.overhead_seconds:g} s <= {slo_seconds:g} s.",
        "Replicas are up before the load arrives (min_replicas = replicas): no cold starts (loading "
        "weights takes minutes), no autoscaling lag, no failures or retries; replicas of one degree, "
        "one model per GPU.",
        (
            f"Cold start {profile.cold_start_seconds:g} s (measured): a replica that autoscaling adds, or "
            "the first after scaling to zero, answers only after it, so a request arriving at zero "
            f"replicas has at least {profile.cold_start_seconds:g} s more latency; set min_replicas to "
            "the replicas above to keep it out of the SLO."
            if profile.cold_start_seconds
            else "Cold start not measured for this profile (bench/cold_start.py measures it)."
        ),
        f"Costs: {profile.source}.",
    ]
    if max_utilisation < 1:
        assumptions.append(f"Headroom: utilisation kept at or below {max_utilisation:g}.")
    if profile.notes:
        assumptions.append(profile.notes.strip())
    return Plan(
        model=profile.model,
        source=profile.source,
        device=profile.device,
        clip=f"{profile.width}x{profile.height}, {profile.num_frames} frames, {steps} steps",
        clips_per_hour=clips_per_hour,
        slo_seconds=slo_seconds,
        percentile=percentile,
        steps=steps,
        arrival_scv=arrival_scv,
        service_scv=service_scv,
        max_utilisation=max_utilisation,
        queue_model=queue_model,
        options=options,
        best=best,
        assumptions=assumptions,
    )


def _s(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 100 else f"{seconds:.3g}"


def _layout(option: Option) -> str:
    sequence = option.world_size // option.pipeline_degree
    if option.pipeline_degree == 1:
        return f"sequence-parallel degree {sequence}"
    return f"{option.pipeline_degree} pipeline stages" + (
        f" x sequence-parallel {sequence}" if sequence > 1 else ""
    )


def _per_replica(option: Option) -> str:
    return str(option.world_size) + (
        f" ({option.pipeline_degree} stages)" if option.pipeline_degree > 1 else ""
    )


def format_plan(result: Plan) -> str:
    """The plan as Markdown: the answer, the table of degrees, the model and its assumptions."""
    q = f"p{result.percentile:g}"
    best = result.best
    unit = "device" if result.device.lower().startswith("cpu") else "GPU"
    if best is None:
        answer = "**No configuration meets the target** (see the notes in the table)."
    else:
        answer = (
            f"**{best.gpus} x {result.device}: {best.replicas} replica(s) of {best.world_size} {unit}(s) "
            f"each** ({_layout(best)}); utilisation {best.utilisation:.0%}, "
            f"P(wait) {best.p_wait:.0%}, mean latency {_s(best.mean_latency_seconds)} s, "
            f"{q} latency {_s(best.latency_quantile_seconds)} s."
        )
    lines = [
        f"### {result.model}, {result.clip}: {result.clips_per_hour:g} clips/h, {q} end-to-end <= "
        f"{result.slo_seconds:g} s",
        "",
        answer,
        "",
        f"| {unit}s/replica | s/clip | replicas | {unit}s | utilisation | P(wait) | mean wait (s) "
        f"| {q} latency (s) | note |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in result.options:
        if o.feasible:
            lines.append(
                f"| {_per_replica(o)} | {_s(o.busy_seconds)} | {o.replicas} | {o.gpus} | "
                f"{o.utilisation:.0%} | {o.p_wait:.0%} | {_s(o.mean_wait_seconds)} | "
                f"{_s(o.latency_quantile_seconds)} | "
                f"{'**chosen**' if o is best else ''} |"
            )
        else:
            lines.append(f"| {_per_replica(o)} | {_s(o.busy_seconds)} | - | - | - | - | - | - | {o.note} |")
    lines += ["", f"Queueing model: {result.queue_model}.", ""]
    lines += [f"- {a}" for a in result.assumptions]
    return "\n".join(lines) + "\n"


def measured_profile(
    run: dict[str, Any], entry: str, level: float | None = None, source_note: str = ""
) -> CostProfile:
    """A 1-device cost profile from a load-generator run: medians over the successful requests of `entry`.

    Uses the lowest load level (least contention) unless `level` is given. The replica's progress events
    give seconds per step and the time before the first / after the last step; the overhead is the rest
    of the end-to-end latency minus the queue wait.
    """
    import statistics

    samples = [s for s in run["requests"] if s["entry"] == entry and s["code"] == "OK" and s["phase"] >= 0]
    if level is None and samples:
        level = min(s["level"] for s in samples)
    samples = [s for s in samples if s["level"] == level and s["step_s"] is not None]
    if not samples:
        raise ValueError(f"no successful Generate requests of {entry!r} with progress timings in the run")

    def median(key: str) -> float:
        return statistics.median(s[key] for s in samples if s[key] is not None)

    first = samples[0]
    step = median("step_s")
    busy = [s["prepare_s"] + s["num_inference_steps"] * s["step_s"] + (s["decode_s"] or 0.0) for s in samples]
    overhead = statistics.median(
        max(0.0, s["latency_s"] - (s["queue_wait_s"] or 0.0) - b) for s, b in zip(samples, busy, strict=True)
    )
    peak = [
        row["value"] / 1e9
        for row in run.get("metrics", [])
        if row["name"].endswith("last_job_peak_memory_bytes") and row["labels"].get("model") == first["model"]
    ]
    machine = run.get("machine", {})
    return CostProfile(
        model=first["model"],
        source=(
            f"measured: videogen bench through the service ({run['workload']['name']}, "
            f"{len(samples)} requests at level {level:g}, {run['started_at']}){source_note}"
        ),
        device=f"{machine.get('device', 'cpu')} ({machine.get('cpu_count', '?')} cores)",
        height=first["height"],
        width=first["width"],
        num_frames=first["num_frames"],
        num_inference_steps=first["num_inference_steps"],
        text_encode_seconds=round(median("prepare_s"), 6),
        vae_decode_seconds=round(median("decode_s"), 6),
        overhead_seconds=round(overhead, 6),
        parallel=[
            ParallelPoint(
                world_size=1,
                step_seconds=round(step, 6),
                peak_memory_gb=round(max(peak), 3) if peak else None,
            )
        ],
        notes=(
            "Medians of the replica's progress timings: text_encode = before the first denoising step, "
            "vae_decode = after the last (VAE decode + MP4 encoding), overhead = end-to-end minus queue wait "
            "minus busy time (gRPC, Router, chunked transfer). Memory: the replica's peak resident bytes."
        ),
    )


def write_profile(profile: CostProfile, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile.model_dump(mode="json", exclude_defaults=False), sort_keys=False))
    return path
