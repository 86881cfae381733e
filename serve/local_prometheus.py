"""A real Prometheus on loopback, for a developer's machine and the tests: from Debian, queried over HTTP.

`ensure_installed()` runs scripts/prometheus.sh (apt-get install of Debian's `prometheus`, once per
machine). `PrometheusServer` scrapes only static 127.0.0.1 targets and has no remote write, no
Alertmanager and no service discovery, so it opens no connection off loopback. From a shell:
`.venv/bin/python -m serve.local_prometheus TARGET_PORT [--rules FILE]` runs one until Ctrl-C.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from serve.loopback_server import LoopbackServer, serve_until_stopped
from serve.ports import free_port

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "scripts" / "prometheus.sh"
# Ray puts these CamelCase labels on every series; `promtool check metrics` wants snake_case.
RAY_LABEL_RENAMES = {
    "Component": "component",
    "NodeAddress": "node_address",
    "SessionName": "session_name",
    "Version": "version",
    "WorkerId": "worker_id",
}
CAMEL_CASE_PROBLEM = "label names should be written in 'snake_case' not 'camelCase'"


@functools.cache
def ensure_installed() -> tuple[str, str]:
    """Paths of `prometheus` and `promtool`, installing Debian's package first if either is missing."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        result = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"{INSTALLER} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prometheus and promtool):
        raise RuntimeError(f"{INSTALLER} ran but prometheus/promtool are not on PATH")
    return prometheus, promtool


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run promtool; the caller checks returncode and output."""
    return subprocess.run(
        [ensure_installed()[1], *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd
    )


def check_metrics(exposition: str) -> list[str]:
    """`promtool check metrics` problems of an exposition text (one line each; [] when clean)."""
    result = promtool("check", "metrics", stdin=exposition)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode not in (0, 3):  # 3: lint problems, listed; anything else: could not parse
        raise RuntimeError(f"promtool check metrics failed ({result.returncode}): {lines}")
    return lines


def metric_families(exposition: str, prefix: str) -> str:
    """The HELP/TYPE/sample lines of the metric families whose name starts with `prefix`."""
    keep = []
    for line in exposition.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            if line.split()[2].startswith(prefix):
                keep.append(line)
        elif line.startswith(prefix):
            keep.append(line)
    return "\n".join(keep) + "\n"


def snake_case_ray_labels(exposition: str) -> str:
    """Ray's CamelCase labels renamed to snake_case (what a scrape's `labelmap` relabelling can do)."""
    pattern = re.compile(r"([{,])(" + "|".join(RAY_LABEL_RENAMES) + r")=")
    return pattern.sub(lambda m: m.group(1) + RAY_LABEL_RENAMES[m.group(2)] + "=", exposition)


def scrape(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def scrape_config(
    targets: Sequence[str], rule_files: Sequence[Path] = (), interval: str = "1s"
) -> dict[str, Any]:
    """A Prometheus config that scrapes only the given loopback targets and sends nothing anywhere."""
    for target in targets:
        host = target.rsplit(":", 1)[0]
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"target {target!r} is not on loopback")
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": list(targets)}]}],
    }


class PrometheusServer(LoopbackServer):
    """One Prometheus process on 127.0.0.1:port with its TSDB under `directory`."""

    def __init__(
        self, targets: Sequence[str], directory: Path, rule_files: Sequence[Path] = (), interval: str = "1s"
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(scrape_config(targets, rule_files, interval)))
        self.log_path = directory / "prometheus.log"

    def start(self, timeout_s: float = 60) -> PrometheusServer:
        """Start the server and wait until it reports ready."""
        binary, _ = ensure_installed()
        result = promtool("check", "config", str(self.config_path))
        if result.returncode != 0:
            raise RuntimeError(f"bad Prometheus config:\n{result.stdout}{result.stderr}")
        self.spawn(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ]
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}):\n{self.log()}")
            try:
                if "Ready" in scrape(f"{self.url}/-/ready", timeout=2):
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus not ready in {timeout_s} s:\n{self.log()}")

    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The `data` of a /api/v1 answer; raises on an error answer."""
        query = urllib.parse.urlencode(params or {})
        body = json.loads(scrape(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")))
        if body.get("status") != "success":
            raise RuntimeError(f"/api/v1/{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` now: [{"metric": {...}, "value": [ts, "v"]}, ...]."""
        return self.api("query", {"query": expr})["result"]

    def value(self, expr: str) -> float | None:
        """The one value of a single-series expression (wrap it in sum(...)); None when empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"{expr} has {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def wait_for(
        self, expr: str, predicate: Callable[[float | None], bool], timeout_s: float = 60, settle_s: float = 0
    ) -> float | None:
        """Poll `value(expr)` until `predicate` holds (for `settle_s` in a row); the last value otherwise."""
        deadline = time.monotonic() + timeout_s
        held_since: float | None = None
        value = None
        while time.monotonic() < deadline:
            value = self.value(expr)
            if predicate(value):
                held_since = held_since or time.monotonic()
                if time.monotonic() - held_since >= settle_s:
                    return value
            else:
                held_since = None
            time.sleep(0.5)
        return value

    def remote_addresses(self) -> set[str]:
        """Peer addresses of the server's connected TCP/UDP sockets right now (from /proc)."""
        assert self.process is not None
        return remote_addresses(self.process.pid)


def remote_addresses(pid: int) -> set[str]:
    """Peer IP addresses of the connected sockets of process `pid` (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                address = _proc_address(fields[2].split(":")[0])
                if not address.is_unspecified:
                    peers.add(str(address))
    return peers


def _proc_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc stores IPv6 as four little-endian 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    return address.ipv4_mapped or address


def non_loopback(addresses: Iterable[str]) -> list[str]:
    return sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback)


def videogen_names(expr: str) -> set[str]:
    """Metric and recording-rule names in a PromQL expression that belong to this service."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings) if "videogen" in t}


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target_port", type=int, help="Ray's metrics export port on 127.0.0.1")
    parser.add_argument("--rules", type=Path, action="append", default=[], help="rule file (repeatable)")
    args = parser.parse_args()
    # Prometheus runs in a temporary directory: rule files named relative to here must be made absolute.
    rules = [path.resolve() for path in args.rules]
    missing = [str(path) for path in rules if not path.is_file()]
    if missing:
        parser.error(f"rule file not found: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as directory:
        server = PrometheusServer([f"127.0.0.1:{args.target_port}"], Path(directory), rules)
        with server:
            print(f"prometheus on {server.url}; Ctrl-C stops it", flush=True)
            serve_until_stopped(server)


if __name__ == "__main__":
    main()
