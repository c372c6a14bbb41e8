"""``securetrain serve``: an HTTP service for encrypted inference with the run's model."""

from __future__ import annotations

import argparse
import sys


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from securetrain.encrypted.http import build_service_from_run, make_server

    modes = ("throughput", "latency") if args.mode == "both" else (args.mode,)
    service = build_service_from_run(args.dir, modes, max_contexts=args.max_contexts)
    httpd = make_server(service, args.host, args.port, max_body_bytes=int(args.max_body_mb * 1024 * 1024))
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
