"""`marginface serve`: the HTTP service over a gallery."""

from __future__ import annotations

import argparse
import os

from marginface.errors import Unavailable


def register(commands: argparse._SubParsersAction) -> None:
    sv = commands.add_parser("serve", help="HTTP service + web page over a gallery (FastAPI + uvicorn)",
                             description="Serve detect/embed/verify/identify and gallery enrolment over HTTP, "
                                         "with a web page at /. Binds 127.0.0.1 unless told otherwise; a "
                                         "non-loopback bind needs an API key.")
    sv.add_argument("gallery", help="gallery file made by `marginface gallery create`")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--api-key", default=None,
                    help="key every request must send as X-API-Key or 'Authorization: Bearer' "
                         "(default: $MARGINFACE_API_KEY; none means no key on loopback)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body in MiB (default 10)")
    sv.add_argument("--body-timeout", type=float, default=60.0, metavar="SECONDS",
                    help="a request body must arrive within this many seconds of its first byte, else 408 "
                         "(default 60)")
    sv.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                    help="also answer requests whose Host is NAME (repeatable; '*' any); without a key only "
                         "loopback names are served, against DNS rebinding")
    sv.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                    help="admit POST/DELETE from web pages of ORIGIN, e.g. https://app.example (repeatable); "
                         "other cross-site ones get 403")
    sv.add_argument("--keep-thumbnails", action="store_true",
                    help="store an aligned crop of each face of photos uploaded to POST /v1/faces, shown in the "
                         "page's People view (faces are biometric data: off by default)")
    sv.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        from marginface.serve.server import serve
    except ImportError as err:
        raise Unavailable(f"the HTTP service needs the serve extra: pip install 'marginface[serve]' ({err})") from err
    api_key = args.api_key or os.environ.get("MARGINFACE_API_KEY") or None
    serve(args.gallery, host=args.host, port=args.port, api_key=api_key, max_upload_mb=args.max_upload_mb,
          allowed_hosts=args.allow_host, allowed_origins=args.allow_origin, body_timeout_s=args.body_timeout,
          keep_thumbnails=args.keep_thumbnails)
    return 0
