"""A stand-in for the partner's HTTP service that ``notify_partner`` and ``submit_payment_run`` call.

The demo runs it in a thread on 127.0.0.1; docker compose runs it as a service
(``python -m examples.partner --host 0.0.0.0``). It can be switched into maintenance, where every
business call answers ``503 Service Unavailable``, from Python or over HTTP:

    curl -X POST http://127.0.0.1:8099/maintenance/on
    curl -X POST http://127.0.0.1:8099/maintenance/off

Endpoints: ``POST /invoices``, ``POST /payments`` (201 with a receipt, or 503), ``GET /health``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PartnerService:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, maintenance: bool = False):
        self.maintenance = maintenance
        self.received: list[tuple[str, dict]] = []
        self._receipts = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "PartnerService":
        self._thread = threading.Thread(target=self._server.serve_forever, name="partner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def accept(self, path: str, payload: dict) -> tuple[int, dict]:
        with self._lock:
            if self.maintenance:
                return 503, {"error": "scheduled maintenance, try again later"}
            self.received.append((path, payload))
            return 201, {"receipt": f"R-{next(self._receipts):05d}"}

    def __enter__(self) -> "PartnerService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _handler_for(service: PartnerService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", "60")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                self._reply(200, {"ok": True, "maintenance": service.maintenance})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path in ("/maintenance/on", "/maintenance/off"):
                service.maintenance = self.path.endswith("/on")
                self._reply(200, {"maintenance": service.maintenance})
                return
            if self.path not in ("/invoices", "/payments"):
                self._reply(404, {"error": "not found"})
                return
            try:
                payload = json.loads(raw or b"{}")
            except ValueError:
                self._reply(400, {"error": "body is not JSON"})
                return
            self._reply(*service.accept(self.path, payload))

        def log_message(self, format: str, *args) -> None:  # keep the demo's terminal quiet
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.partner", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--maintenance", action="store_true", help="start in maintenance (503)")
    args = parser.parse_args(argv)
    service = PartnerService(args.host, args.port, maintenance=args.maintenance)
    print(f"partner service on {service.url} (maintenance: {service.maintenance})", flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
