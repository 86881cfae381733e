"""Report of a load-generator run: JSON with every sample, a Markdown summary and PNG plots."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.common import percentile
from bench.loadgen import FRAMES, JOB_PEAK_MEMORY, MEMORY, replica_key

PLOTS = ("latency_vs_concurrency.png", "throughput_vs_concurrency.png", "memory_over_time.png")
GIB = 1024**3


def stats(values: list[float]) -> dict[str, float] | None:
    """n, mean, min, nearest-rank p50/p90/p95/p99 and max; None without values."""
    if not values:
        return None
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def _values(samples: list[dict[str, Any]], key: str) -> list[float]:
    return [s[key] for s in samples if s["code"] == "OK" and s.get(key) is not None]


def _phase(phase: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if s["code"] == "OK"]
    begin = min((s["scheduled_s"] for s in samples), default=phase["started_s"])
    end = max((s["scheduled_s"] + s["latency_s"] for s in samples), default=phase["ended_s"])
    duration = max(end - begin, 1e-9)
    by_entry: dict[str, dict[str, Any]] = {}
    for label in sorted({s["entry"] for s in samples}):
        mine = [s for s in samples if s["entry"] == label]
        latency = stats(_values(mine, "latency_s"))
        by_entry[label] = {
            "requests": len(mine),
            "ok": sum(1 for s in mine if s["code"] == "OK"),
            "latency_p50_s": latency["p50"] if latency else None,
        }
    return {
        **phase,
        "requests": len(samples),
        "ok": len(ok),
        "errors": dict(sorted(Counter(s["code"] for s in samples if s["code"] != "OK").items())),
        "duration_s": duration,
        "clips_per_hour": len(ok) / duration * 3600,
        "frames_per_s": sum(s["num_frames"] for s in ok) / duration,
        "latency_s": stats(_values(samples, "latency_s")),
        "queue_wait_s": stats(_values(samples, "queue_wait_s")),
        "first_progress_s": stats(_values(samples, "first_progress_s")),
        "first_playable_s": stats(_values(samples, "first_playable_s")),
        "step_s": stats(_values(samples, "step_s")),
        "by_entry": by_entry,
    }


def _memory(run: dict[str, Any], models: set[str]) -> list[dict[str, Any]]:
    """Peak of every memory series per replica, device and kind (device memory and last-job peak)."""
    peaks: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for row in run["metrics"]:
        labels = row["labels"]
        if row["name"] not in (*MEMORY, JOB_PEAK_MEMORY) or labels.get("model") not in models:
            continue
        kind = MEMORY.get(row["name"], "last_job_peak")
        key = (replica_key(labels), labels.get("model", ""), labels.get("device", ""), kind)
        peaks[key] = max(peaks[key], row["value"])
    return [
        {"replica": r, "model": m, "device": d, "kind": k, "peak_bytes": v}
        for (r, m, d, k), v in sorted(peaks.items())
    ]


def _service_frames(run: dict[str, Any], models: set[str]) -> dict[str, Any] | None:
    """Frames the replicas counted during the run (Ray exports metrics every few seconds: coarse)."""
    totals: dict[float, float] = defaultdict(float)
    for row in run["metrics"]:
        if row["name"] == FRAMES and row["labels"].get("model") in models:
            totals[row["t"]] += row["value"]
    if len(totals) < 2:
        return None
    times = sorted(totals)
    frames = totals[times[-1]] - totals[times[0]]
    return {
        "frames": frames,
        "seconds": times[-1] - times[0],
        "frames_per_s": frames / (times[-1] - times[0]),
    }


def summarize_run(run: dict[str, Any]) -> dict[str, Any]:
    """Per-phase and overall numbers; every request is counted in exactly one outcome."""
    samples = run["requests"]
    measured = [s for s in samples if s["phase"] >= 0]
    models = {entry["model"] for entry in run["workload"]["mix"]}
    phases = [_phase(p, [s for s in measured if s["phase"] == p["index"]]) for p in run["phases"]]
    codes = Counter(s["code"] for s in measured)
    return {
        "requests": len(measured),
        "ok": codes.pop("OK", 0),
        "errors": dict(sorted(codes.items())),
        "warmup_requests": len(samples) - len(measured),
        "phases": phases,
        "latency_s": stats(_values(measured, "latency_s")),
        "memory": _memory(run, models),
        "service_frames": _service_frames(run, models),
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _stat(phase: dict[str, Any], key: str, q: str) -> str:
    values = phase[key]
    return _fmt(values[q] if values else None)


def markdown(run: dict[str, Any], summary: dict[str, Any]) -> str:
    workload = run["workload"]
    mode = "closed" if workload["load"]["concurrency"] is not None else "open"
    level_name = "clients" if mode == "closed" else "arrivals/s"
    errors = ", ".join(f"{code} {n}" for code, n in summary["errors"].items())
    lines = [
        f"# Capacity benchmark: {workload['name']}",
        "",
        workload["description"].strip(),
        "",
        f"- target `{run['target']}`, API `{workload['api']}`, {mode} loop, "
        f"{workload['max_requests']} requests / {workload['max_duration_s']:g} s at most per level, "
        f"request deadline {workload['request_timeout_s']:g} s",
        f"- started {run['started_at']}, ran {run['duration_s']:.1f} s; client machine: "
        f"{run.get('machine', {}).get('device', '?')}, {run.get('machine', {}).get('cpu_count', '?')} CPUs",
        "- mix: "
        + ", ".join(f"{e.get('name') or e['model']} (weight {e['weight']:g})" for e in workload["mix"]),
        f"- requests: {summary['requests']} measured = {summary['ok']} OK + "
        f"{sum(summary['errors'].values())} errors{f' ({errors})' if errors else ''}; "
        f"{summary['warmup_requests']} warm-up requests not counted",
        "",
        "## Per load level",
        "",
        f"| {level_name} | requests | OK | errors | clips/h | frames/s | latency p50 / p90 / p99 (s) "
        "| first playable p50 / p99 (s) | queue wait p50 / p99 (s) | first progress p50 (s) | s/step p50 |",
        "|---:|---:|---:|---|---:|---:|---|---|---|---:|---:|",
    ]
    for p in summary["phases"]:
        errors = ", ".join(f"{code} {n}" for code, n in p["errors"].items()) or "0"
        lines.append(
            f"| {p['level']:g} | {p['requests']} | {p['ok']} | {errors} | {p['clips_per_hour']:.0f} | "
            f"{p['frames_per_s']:.1f} | {_stat(p, 'latency_s', 'p50')} / {_stat(p, 'latency_s', 'p90')} / "
            f"{_stat(p, 'latency_s', 'p99')} | {_stat(p, 'first_playable_s', 'p50')} / "
            f"{_stat(p, 'first_playable_s', 'p99')} | {_stat(p, 'queue_wait_s', 'p50')} / "
            f"{_stat(p, 'queue_wait_s', 'p99')} | {_stat(p, 'first_progress_s', 'p50')} | "
            f"{_stat(p, 'step_s', 'p50')} |"
        )
    lines += ["", "## Per request kind", "", f"| {level_name} | kind | requests | OK | latency p50 (s) |"]
    lines.append("|---:|---|---:|---:|---:|")
    for p in summary["phases"]:
        for label, entry in p["by_entry"].items():
            lines.append(
                f"| {p['level']:g} | {label} | {entry['requests']} | {entry['ok']} | "
                f"{_fmt(entry['latency_p50_s'])} |"
            )
    lines += ["", "## Peak memory per replica (from the service's metrics)", ""]
    if summary["memory"]:
        lines += ["| replica | device | kind | peak (GiB) |", "|---|---|---|---:|"]
        lines += [
            f"| {m['replica']} | {m['device']} | {m['kind']} | {m['peak_bytes'] / GIB:.2f} |"
            for m in summary["memory"]
        ]
    else:
        lines.append(
            f"No memory samples (metrics {run['metrics_url'] or 'not scraped'}; "
            f"{run['metrics_scrape_errors']} scrape errors {run['metrics_last_error']})."
        )
    frames = summary["service_frames"]
    if frames:
        lines += [
            "",
            f"Frames counted by the replicas (`{FRAMES}`): {frames['frames']:.0f} "
            f"in {frames['seconds']:.1f} s between scrapes ({frames['frames_per_s']:.1f} frames/s; "
            "Ray exports every few seconds, so this lags the client's count).",
        ]
    lines += [
        "",
        "## Plots",
        "",
        *[f"![{name[:-4]}]({name})" for name in PLOTS],
        "",
        "Definitions: latency = intended send time (open loop: arrival) to the last byte; queue wait = "
        "to the first progress event past QUEUED (the replica started); first playable = to the first "
        "video bytes (Generate), which for a long-clip model are its first section, playable while the "
        "rest is made, and for other models come with the whole clip; first progress = to the first "
        "event of any kind; clips/h and frames/s = successful clips over the level's span (first send "
        "to last end); s/step = the replica's time per denoising step from the progress events. "
        "Percentiles are nearest-rank over successful requests.",
        "",
    ]
    return "\n".join(lines)


def _phase_x(summary: dict[str, Any]) -> list[float]:
    return [p["level"] for p in summary["phases"]]


def plot(run: dict[str, Any], summary: dict[str, Any], out: Path) -> list[Path]:
    """The three PNGs (matplotlib, Agg); a plot without data says so instead of being left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed = run["workload"]["load"]["arrival_rate_per_s"] is None
    xlabel = "concurrent clients (closed loop)" if closed else "arrival rate (requests/s, open loop)"
    name = run["workload"]["name"]
    x = _phase_x(summary)
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for key, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
        ys = [p["latency_s"][key] if p["latency_s"] else float("nan") for p in summary["phases"]]
        ax.plot(x, ys, style, label=f"end-to-end {key}")
    waits = [p["queue_wait_s"]["p50"] if p["queue_wait_s"] else float("nan") for p in summary["phases"]]
    ax.plot(x, waits, "x-.", label="queue wait p50")
    ax.set(xlabel=xlabel, ylabel="seconds", title=f"{name}: latency")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / PLOTS[0]))

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(x, [p["clips_per_hour"] for p in summary["phases"]], "o-", color="tab:blue", label="clips/h")
    ax.set(xlabel=xlabel, ylabel="clips per hour", title=f"{name}: throughput")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(x, [p["frames_per_s"] for p in summary["phases"]], "s--", color="tab:orange", label="frames/s")
    right.set_ylabel("frames per second")
    right.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    paths.append(_save(fig, out / PLOTS[1]))

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    models = {entry["model"] for entry in run["workload"]["mix"]}
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in run["metrics"]:
        if row["name"] in MEMORY and row["labels"].get("model") in models:
            labels = row["labels"]
            series[f"{replica_key(labels)} {labels.get('device')}/{MEMORY[row['name']]}"].append(
                (row["t"], row["value"] / GIB)
            )
    for label, points in sorted(series.items()):
        ax.plot(*zip(*sorted(points), strict=True), ".-", label=label)
    for p in summary["phases"]:
        ax.axvspan(p["started_s"], p["ended_s"], alpha=0.08, color="gray")
    if series:
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no memory samples from the metrics endpoint", ha="center", transform=ax.transAxes)
    ax.set(xlabel="seconds since the run started (grey: load levels)", ylabel="GiB", title=f"{name}: memory")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / PLOTS[2]))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Write report.json (run + summary), report.md and the plots into `out`; returns the summary."""
    from bench.common import machine

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run.setdefault("machine", machine())
    summary = summarize_run(run)
    (out / "report.json").write_text(json.dumps({**run, "summary": summary}, indent=1) + "\n")
    (out / "report.md").write_text(markdown(run, summary))
    plot(run, summary, out)
    return summary
