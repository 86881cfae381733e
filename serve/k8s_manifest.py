"""Generate the Kubernetes overlays' Serve configs (KubeRay serveConfigV2) from the project's serve configs.

One source of truth: `configs/<name>.yaml` (a ServeConfig) is what `videogen serve` runs locally, and
`k8s/overlays/<overlay>/serve-config.yaml` is the same application as Ray Serve's own config file, which
kustomize places into the RayService's `spec.serveConfigV2`. The generated files are checked in;
`python -m serve.k8s_manifest` rewrites them and `--check` fails (exit 1) while one is stale.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serve.config import ROUTER_DEPLOYMENT, AppConfig, ServeConfig

SERVE_CONFIG_FILE = "serve-config.yaml"


@dataclass(frozen=True)
class Overlay:
    """A kustomize overlay in k8s/overlays and the serve config its RayService runs."""

    name: str
    config: str
    device_gpus: bool
    """True: GPU worker groups request nvidia.com/gpu devices; False: logical Ray GPUs on CPU nodes."""

    def directory(self, root: Path) -> Path:
        return root / "k8s" / "overlays" / self.name

    def serve_config_path(self, root: Path) -> Path:
        return self.directory(root) / SERVE_CONFIG_FILE


OVERLAYS: tuple[Overlay, ...] = (
    Overlay(name="cpu-dev", config="configs/k8s-cpu-dev.yaml", device_gpus=False),
    Overlay(name="gpu", config="configs/production-gpu.yaml", device_gpus=True),
)


def expected_deployments(app: AppConfig) -> list[str]:
    """The deployments `serve.deployments.build_app(app)` creates: the Router plus one per model."""
    return [ROUTER_DEPLOYMENT, *(model.deployment_name for model in app.models)]


def serve_deploy_config(config: ServeConfig) -> dict[str, Any]:
    """`ServeConfig.to_serve_deploy()` with the application's deployments listed by name.

    The entries override nothing; they make Serve reject a deploy whose builder does not create
    exactly these deployments ("Deployment '...' does not exist"), instead of drifting silently.
    """
    deploy = config.to_serve_deploy()
    for application in deploy["applications"]:
        app = AppConfig.model_validate(application["args"])
        application["deployments"] = [{"name": name} for name in expected_deployments(app)]
    return deploy


def render_serve_config_v2(config_path: str | Path, source_name: str | None = None) -> str:
    """The serveConfigV2 YAML (Ray Serve's ServeDeploySchema) for the ServeConfig file `config_path`."""
    config = ServeConfig.from_file(config_path)
    header = (
        f"# GENERATED from {source_name or config_path} by `python -m serve.k8s_manifest`; do not edit.\n"
        "# Ray Serve config (ServeDeploySchema): kustomize copies it into RayService spec.serveConfigV2.\n"
    )
    body = yaml.safe_dump(serve_deploy_config(config), sort_keys=False, default_flow_style=False, width=110)
    return header + body


def render_overlays(root: Path) -> dict[Path, str]:
    """Every generated file of every overlay: path -> expected content."""
    return {
        overlay.serve_config_path(root): render_serve_config_v2(root / overlay.config, overlay.config)
        for overlay in OVERLAYS
    }


def stale_files(root: Path) -> list[Path]:
    """Generated files whose checked-in content differs from what the serve configs produce."""
    return [
        path for path, text in render_overlays(root).items() if not path.is_file() or path.read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, verify) the generated serve configs of every overlay."""
    parser = argparse.ArgumentParser(prog="python -m serve.k8s_manifest", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: cwd)")
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.check:
        stale = stale_files(root)
        for path in stale:
            print(f"stale: {path.relative_to(root)} (run python -m serve.k8s_manifest)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in render_overlays(root).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(root)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
