"""``securetrain serve``: an HTTP service for encrypted inference with the run's model."""

from __future__ import annotations

import argparse
import math
import sys

from securetrain.cli.specs import add_spec_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the run's model for encrypted inference over HTTP",
        description=(
            "Serve DIR's model for CKKS-encrypted inference. Clients fetch /v1/spec, make their own keys, POST "
            "their public context to /v1/contexts and ciphertexts to /v1/infer (see securetrain.encrypted."
            "RemoteClient). The server never holds a secret key."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dir", help="run directory (from `securetrain train`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port)")
    p.add_argument("--mode", choices=("both", "throughput", "latency"), default="both", help="packings to serve")
    p.add_argument("--max-body-mb", type=float, default=256.0, help="largest request body accepted, in MiB")
    p.add_argument("--max-contexts", type=int, default=16, help="client contexts kept in memory")
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
    if args.max_contexts < 1:
        raise ConfigurationError(f"--max-contexts must be at least 1, got {args.max_contexts}")


def run(args: argparse.Namespace) -> int:
    from securetrain.encrypted.http import build_service_from_run, make_server

    check_args(args)
    modes = ("throughput", "latency") if args.mode == "both" else (args.mode,)
    service = build_service_from_run(args.dir, modes, max_contexts=args.max_contexts, model=args.model, data=args.data)
    httpd = make_server(service, args.host, args.port, max_body_bytes=max(1, int(args.max_body_mb * 1024 * 1024)))
    host, port = httpd.server_address[:2]
    sys.stderr.write(f"serving {service.info()['model']} ({', '.join(modes)}) on http://{host}:{port}\n")  # type: ignore[str-bytes-safe]  # an AF_INET server's host is a str
    sys.stderr.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0
