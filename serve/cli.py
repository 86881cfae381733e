"""`videogen`: serve | generate | models | tiny-models | serve-config | client ..."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from serve.catalog import CachePolicy
from serve.request import OutputFormat, RequestFields


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="catalog name (see `videogen models`)")
    parser.add_argument("--prompt", default="", help="text prompt")
    parser.add_argument("--negative-prompt", default="", help="what to avoid (models that accept it)")
    parser.add_argument("--image", type=Path, help="conditioning image for image-to-video models")
    parser.add_argument("--frames", type=int, dest="num_frames", help="number of frames")
    parser.add_argument("--fps", type=int, help="frames per second")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--steps", type=int, dest="num_inference_steps", help="denoising steps")
    parser.add_argument("--guidance", type=float, dest="guidance_scale", help="guidance scale")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--format",
        choices=[f.value for f in OutputFormat],
        dest="output_format",
        help="container; default: from --out's extension (.mp4, .gif), else mp4",
    )
    parser.add_argument("--motion-bucket-id", type=int, help="SVD: amount of motion 1-255")
    parser.add_argument("--noise-aug-strength", type=float, help="SVD: conditioning noise 0-1")
    parser.add_argument("--decode-chunk-size", type=int, help="SVD/I2VGen-XL: frames decoded at once")
    parser.add_argument(
        "--true-cfg-scale", type=float, help="HunyuanVideo: true CFG with the negative prompt"
    )
    parser.add_argument(
        "--guidance-2", type=float, dest="guidance_scale_2", help="Wan 2.2 A14B: low-noise expert's guidance"
    )
    parser.add_argument(
        "--boundary-ratio", type=float, help="Wan 2.2 A14B: where the low-noise expert takes over (0-1)"
    )
    parser.add_argument("--flow-shift", type=float, help="Wan: shift of the noise schedule (0.5-20)")
    parser.add_argument("--decode-timestep", type=float, help="LTX-Video: VAE decoder's timestep (0-1)")
    parser.add_argument("--decode-noise-scale", type=float, help="LTX-Video: noise before decoding (0-1)")
    parser.add_argument(
        "--cache",
        choices=[p.value for p in CachePolicy],
        dest="cache_policy",
        help="step caching (DiT models): off or first_block; default: the model's",
    )
    parser.add_argument(
        "--cache-threshold",
        type=float,
        help="first_block: relative change of the first block to skip at (0-1)",
    )


# The request fields the generation flags set one to one (image and format are read separately).
_FIELDS = [name for name in RequestFields.model_fields if name not in ("image", "output_format")]


class UsageError(ValueError):
    """A command line that cannot be right (reported as `error: ...`, exit status 2)."""


def output_format(asked: str | None, out: Path | None) -> OutputFormat:
    """The container: `--format`, else the one `--out`'s extension names, else MP4; a mismatch is refused."""
    by_extension = {f".{f.value}": f for f in OutputFormat}
    named = by_extension.get(out.suffix.lower()) if out is not None else None
    chosen = OutputFormat(asked) if asked else named or OutputFormat.MP4
    if named is not None and named is not chosen:
        raise UsageError(f"--format {chosen.value} does not match --out {out} (a .{named.value} file)")
    return chosen


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    values = {name: getattr(args, name) for name in _FIELDS if getattr(args, name) not in (None, "")}
    if args.image:
        values["image"] = args.image.read_bytes()
    values["output_format"] = output_format(args.output_format, getattr(args, "out", None))
    return values


class _ProgressBar:
    """A tqdm bar driven by (stage, step, total) updates, drawn from the first update on.

    Nothing is drawn before then, so a request refused at once shows only its error.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: Any = None

    def update(self, stage: str, step: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=0, desc=self.description, unit="step", file=sys.stderr)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.set_postfix_str(stage)
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_models(args: argparse.Namespace) -> int:
    from serve.catalog import CATALOG

    print(f"{'name':<20} {'task':<4} {'frames':>6} {'fps':>4} {'size':>10} {'steps':>5} {'GPU GB':>6}  repo")
    for spec in CATALOG.values():
        limits = spec.limits
        size = f"{limits.default_width}x{limits.default_height}"
        gpu_gb = spec.gpu_memory_estimate_gb()
        print(
            f"{spec.name:<20} {spec.task.value:<4} {limits.default_num_frames:>6} {limits.default_fps:>4} "
            f"{size:>10} {limits.default_num_inference_steps:>5} {gpu_gb:>6.0f}  {spec.repo_id}"
        )
    return 0


def cmd_tiny_models(args: argparse.Namespace) -> int:
    if args.if_stale:
        from serve.tiny_store import ensure_tiny_checkpoints

        written = ensure_tiny_checkpoints(args.out)
        print(f"tiny checkpoints in {args.out} {'written' if written else 'up to date'}")
        return 0
    from serve.tiny import write_tiny_checkpoints

    for name, path in write_tiny_checkpoints(args.out, args.model or None).items():
        print(f"{name:<18} {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate locally, without the service."""
    from serve.catalog import get_spec
    from serve.engine import Engine
    from serve.errors import VideogenError
    from serve.request import build_request

    bar = _ProgressBar(args.model)
    try:
        spec = get_spec(args.model)
        engine = Engine(spec, args.weights)
        request = build_request(spec, spec.limits_for(engine.tiny), RequestFields(**_fields(args)))
        video = engine.generate_video(request, lambda e: bar.update(e.stage.value, e.step, e.total_steps))
    except (VideogenError, KeyError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    args.out.write_bytes(video.data)
    print(f"wrote {args.out} ({len(video.data)} bytes, {video.num_frames} frames, seed {video.seed})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from serve.service import run_service

    return run_service(args.config)


def cmd_serve_config(args: argparse.Namespace) -> int:
    """Print the Serve config (for `serve deploy` / KubeRay serveConfigV2) of a videogen config."""
    import yaml

    from serve.config import ServeConfig

    print(yaml.safe_dump(ServeConfig.from_file(args.config).to_serve_deploy(), sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="videogen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("models", help="list the model catalog").set_defaults(run=cmd_models)

    tiny = commands.add_parser("tiny-models", help="write the tiny random-weight checkpoints")
    tiny.add_argument("--out", type=Path, required=True)
    tiny.add_argument("--model", action="append", help="only this model (repeatable)")
    tiny.add_argument("--if-stale", action="store_true", help="all models, only if missing or out of date")
    tiny.set_defaults(run=cmd_tiny_models)

    generate = commands.add_parser("generate", help="generate a video locally (no service)")
    _add_generation_args(generate)
    generate.add_argument("--weights", default="tiny", help='"tiny", "hub" or a weights directory')
    generate.add_argument("--out", type=Path, required=True)
    generate.set_defaults(run=cmd_generate)

    serve_cmd = commands.add_parser("serve", help="start Ray, deploy the app, serve gRPC until Ctrl-C")
    serve_cmd.add_argument("--config", type=Path, default=Path("configs/local.yaml"))
    serve_cmd.set_defaults(run=cmd_serve)

    serve_config = commands.add_parser("serve-config", help="print the equivalent Ray Serve config file")
    serve_config.add_argument("--config", type=Path, default=Path("configs/local.yaml"))
    serve_config.set_defaults(run=cmd_serve_config)

    from serve.auth import add_hash_key_command
    from serve.client_cli import add_client_commands

    add_hash_key_command(commands)
    add_client_commands(commands, _add_generation_args, _fields, _ProgressBar)

    from serve.benchmarking import add_bench_commands

    add_bench_commands(commands)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
