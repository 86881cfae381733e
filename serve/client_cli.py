"""`videogen client ...` (and `videogen-client ...`, the slim install's command): call a running service
over gRPC."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from serve.ports import DEFAULT_TARGET


def _params(fields: dict[str, Any]) -> Any:
    from serve.api import pb

    fields = dict(fields)
    fields["output_format"] = (
        pb.OUTPUT_FORMAT_GIF if fields.get("output_format") == "gif" else pb.OUTPUT_FORMAT_MP4
    )
    if "cache_policy" in fields:
        fields["cache_policy"] = pb.CachePolicy.Value(f"CACHE_POLICY_{fields['cache_policy'].upper()}")
    return pb.GenerationParams(**fields)


def stage_name(stage: int) -> str:
    """`denoising` for STAGE_DENOISING: what a progress bar shows."""
    from serve.api import pb

    return pb.Stage.Name(stage).removeprefix("STAGE_").lower()


def job_state_name(state: int) -> str:
    """`running` for JOB_STATE_RUNNING."""
    from serve.api import pb

    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def _client(args: argparse.Namespace) -> Any:
    from serve.client import Tls, VideogenClient

    tls = None
    if args.tls or args.ca or args.cert or args.key:
        tls = Tls(ca_file=args.ca, cert_file=args.cert, key_file=args.key, server_name=args.server_name)
    return VideogenClient(args.target, api_key=args.api_key, tls=tls, keepalive_s=args.keepalive)


def _print_job(job: Any) -> None:
    from google.protobuf import json_format

    print(json_format.MessageToJson(job, preserving_proto_field_name=True))


def add_client_commands(
    commands: Any,
    add_generation_args: Callable[[argparse.ArgumentParser], None],
    fields: Callable[[argparse.Namespace], dict[str, Any]],
    progress_bar: type,
) -> None:
    """Register `videogen client <verb>`."""
    client = commands.add_parser("client", help="talk to a running service")
    add_client_arguments(client, add_generation_args, fields, progress_bar)


def main(argv: list[str] | None = None) -> int:
    """`videogen-client <verb>`: the client verbs alone, for an install without the server's stack."""
    from serve.cli import _add_generation_args, _fields, _ProgressBar

    parser = argparse.ArgumentParser(prog="videogen-client", description="talk to a running videogen service")
    add_client_arguments(parser, _add_generation_args, _fields, _ProgressBar)
    args = parser.parse_args(argv)
    return args.run(args)


def add_client_arguments(
    client: argparse.ArgumentParser,
    add_generation_args: Callable[[argparse.ArgumentParser], None],
    fields: Callable[[argparse.Namespace], dict[str, Any]],
    progress_bar: type,
) -> None:
    """The client's options and verbs, on `client` (a parser of its own or `videogen`'s subcommand)."""
    client.add_argument("--target", default=DEFAULT_TARGET, help="HOST:PORT of the gRPC endpoint")
    client.add_argument(
        "--api-key",
        default=os.environ.get("VIDEOGEN_API_KEY"),
        help="API key (bearer token) when the service requires one; default $VIDEOGEN_API_KEY "
        "(keeps the key out of shell history and process lists)",
    )
    tls = client.add_argument_group(
        "TLS (to a gateway in front of the service; Serve's own port is plaintext)"
    )
    tls.add_argument("--tls", action="store_true", help="connect over TLS, trusting the system's roots")
    tls.add_argument("--ca", type=Path, help="PEM file of the roots to trust instead (implies --tls)")
    tls.add_argument("--cert", type=Path, help="PEM client certificate, for mutual TLS (with --key)")
    tls.add_argument("--key", type=Path, help="PEM private key of --cert")
    tls.add_argument(
        "--server-name", help="name to check the server's certificate against, if not the host's"
    )
    client.add_argument(
        "--keepalive",
        type=float,
        metavar="SECONDS",
        help="ping after this long without data (load balancers)",
    )
    verbs = client.add_subparsers(dest="verb", required=True)

    def generate(args: argparse.Namespace) -> int:
        params = _params(fields(args))
        bar = progress_bar(args.model)
        # A long clip arrives section by section (total_bytes 0 while it grows): it is written to
        # OUT.part as it comes, a file that plays up to its last section, and becomes OUT once whole.
        growing = args.out.with_name(args.out.name + ".part")
        handle = None

        def on_chunk(chunk: Any) -> None:
            nonlocal handle
            if chunk.total_bytes == 0:
                handle = handle or growing.open("wb")
                handle.write(chunk.data)
                handle.flush()

        try:
            with _client(args) as api:
                video = api.generate(
                    params,
                    on_progress=lambda p: bar.update(stage_name(p.stage), p.step, p.total_steps),
                    timeout=args.timeout,
                    on_chunk=on_chunk,
                )
        finally:
            bar.close()
            if handle is not None:
                handle.close()
                growing.unlink(missing_ok=True)  # the whole file is written below, or nothing is
        video.save(str(args.out))
        s = video.summary
        print(
            f"wrote {args.out} ({s.video_bytes} bytes, {s.num_frames} frames at {s.fps} fps, seed {s.seed}, "
            f"{s.total_seconds:.2f}s)"
        )
        return 0

    def submit(args: argparse.Namespace) -> int:
        with _client(args) as api:
            job = api.submit(
                _params(fields(args)), idempotency_key=args.idempotency_key, webhook_url=args.webhook_url
            )
            _print_job(job)
        return 0

    def status(args: argparse.Namespace) -> int:
        with _client(args) as api:
            _print_job(api.get_job(args.job_id))
        return 0

    def watch(args: argparse.Namespace) -> int:
        bar = progress_bar(args.job_id[:8])
        try:
            with _client(args) as api:
                job = api.wait(
                    args.job_id,
                    lambda j: bar.update(job_state_name(j.state), j.progress.step, j.progress.total_steps),
                )
        finally:
            bar.close()
        _print_job(job)
        return 0

    def cancel(args: argparse.Namespace) -> int:
        with _client(args) as api:
            _print_job(api.cancel(args.job_id))
        return 0

    def fetch(args: argparse.Namespace) -> int:
        with _client(args) as api:
            data = api.fetch(args.job_id)
        args.out.write_bytes(data)
        print(f"wrote {args.out} ({len(data)} bytes)")
        return 0

    def models(args: argparse.Namespace) -> int:
        from serve.api import pb

        with _client(args) as api:
            for m in api.list_models():
                print(
                    f"{m.name:<20} {pb.Task.Name(m.task).removeprefix('TASK_').lower():<4} "
                    f"{m.default_num_frames:>4} frames "
                    f"{m.default_width}x{m.default_height} {m.default_num_inference_steps} steps  {m.weights}"
                )
        return 0

    gen = verbs.add_parser("generate", help="Generate: stream progress, write the video")
    add_generation_args(gen)
    gen.add_argument("--out", type=Path, default=Path("out/clip.mp4"))
    gen.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    gen.set_defaults(run=generate)
    sub = verbs.add_parser("submit", help="SubmitJob: start an async job, print it")
    add_generation_args(sub)
    sub.add_argument("--idempotency-key", default="")
    sub.add_argument("--webhook-url", default="", help="POST the job here once it ends (allow-listed hosts)")
    sub.set_defaults(run=submit)
    for name, run, help_text in [
        ("status", status, "GetJob"),
        ("watch", watch, "WatchJob until it ends"),
        ("cancel", cancel, "CancelJob"),
    ]:
        verb = verbs.add_parser(name, help=help_text)
        verb.add_argument("job_id")
        verb.set_defaults(run=run)
    fetch_verb = verbs.add_parser("fetch", help="FetchVideo of a finished job")
    fetch_verb.add_argument("job_id")
    fetch_verb.add_argument("--out", type=Path, default=Path("out/clip.mp4"))
    fetch_verb.set_defaults(run=fetch)
    verbs.add_parser("models", help="ListModels").set_defaults(run=models)

    def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def call(args: argparse.Namespace) -> int:
            if getattr(args, "out", None):
                args.out.parent.mkdir(parents=True, exist_ok=True)
            from serve.cli import UsageError

            try:
                return run(args)
            except UsageError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            except grpc.RpcError as error:
                print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1

        return call

    for verb in verbs.choices.values():
        verb.set_defaults(run=guarded(verb.get_default("run")))
