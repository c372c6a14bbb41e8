"""``securetrain serve``: an HTTP service for encrypted inference with the run's model."""

from __future__ import annotations

import argparse
import math
import sys

from securetrain.cli.output import HelpFormatter
from securetrain.cli.specs import add_spec_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the run's model for encrypted inference over HTTP",
        description=(
            "Serve DIR's model for CKKS-encrypted inference (Starlette on uvicorn). Clients fetch /v1/spec, make "
            "their own keys, POST their public context to /v1/contexts (which returns a context id and a secret "
            "token) and ciphertexts to /v1/infer with that token (see securetrain.encrypted.RemoteClient). The "
            "server never holds a secret key; each client's contexts are its own, within per-client quotas."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("dir", help="run directory (from `securetrain train`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port)")
    p.add_argument("--mode", choices=("both", "throughput", "latency"), default="both", help="packings to serve")
    p.add_argument("--max-body-mb", type=float, default=256.0, help="largest request body accepted, in MiB")
    p.add_argument(
        "--max-stream-mb",
        type=float,
        default=1024.0,
        help="largest streamed throughput request, in MiB (evaluated as it arrives, never held whole)",
    )
    p.add_argument("--max-contexts", type=int, default=64, help="contexts kept in memory, all clients together")
    p.add_argument("--max-contexts-per-client", type=int, default=4, help="contexts one client (token) may hold")
    p.add_argument(
        "--max-client-mb", type=float, default=1024.0, help="bytes of public contexts one client may hold, in MiB"
    )
    p.add_argument("--context-ttl", type=float, default=3600.0, help="seconds an unused context is kept")
    p.add_argument(
        "--read-timeout", type=float, default=30.0, help="seconds a request body may stall before it is dropped"
    )
    add_spec_arguments(p)
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad flags before the (slow) model compilation."""
    from securetrain.encrypted.http import check_port
    from securetrain.errors import ConfigurationError

    if not args.host:
        raise ConfigurationError("--host is empty; give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0")
    try:
        check_port(args.port)
    except ConfigurationError:
        raise ConfigurationError(f"--port must be in 0..65535 (0: any free port), got {args.port}") from None
    if not (math.isfinite(args.max_body_mb) and args.max_body_mb > 0) or args.max_body_mb * 2**20 > 2**53:
        raise ConfigurationError(f"--max-body-mb must be a positive number of MiB, e.g. 256, got {args.max_body_mb}")
    if not (math.isfinite(args.max_stream_mb) and args.max_stream_mb > 0) or args.max_stream_mb * 2**20 > 2**53:
        raise ConfigurationError(
            f"--max-stream-mb must be a positive number of MiB, e.g. 1024, got {args.max_stream_mb}"
        )
    if args.max_contexts < 1:
        raise ConfigurationError(f"--max-contexts must be at least 1, got {args.max_contexts}")
    if args.max_contexts_per_client < 1:
        raise ConfigurationError(f"--max-contexts-per-client must be at least 1, got {args.max_contexts_per_client}")
    if not (math.isfinite(args.max_client_mb) and args.max_client_mb > 0) or args.max_client_mb * 2**20 > 2**53:
        raise ConfigurationError(f"--max-client-mb must be a positive number of MiB, got {args.max_client_mb}")
    for flag, value in (("--context-ttl", args.context_ttl), ("--read-timeout", args.read_timeout)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigurationError(f"{flag} must be a positive number of seconds, got {value}")


def run(args: argparse.Namespace) -> int:
    from securetrain.encrypted.http import build_service_from_run, make_server

    check_args(args)
    modes = ("throughput", "latency") if args.mode == "both" else (args.mode,)
    options = {
        "max_contexts": args.max_contexts,
        "max_contexts_per_client": args.max_contexts_per_client,
        "max_bytes_per_client": max(1, int(args.max_client_mb * 2**20)),
        "context_ttl_s": args.context_ttl,
        "max_stream_bytes": max(1, int(args.max_stream_mb * 2**20)),
    }
    service = build_service_from_run(args.dir, modes, service_options=options, model=args.model, data=args.data)
    server, sock = make_server(
        service,
        args.host,
        args.port,
        max_body_bytes=max(1, int(args.max_body_mb * 2**20)),
        read_timeout_s=args.read_timeout,
    )
    host, port = sock.getsockname()[:2]
    sys.stderr.write(f"serving {service.info()['model']} ({', '.join(modes)}) on http://{host}:{port}\n")
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
