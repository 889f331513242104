"""Shared test helpers: a loopback file server, official key lists, random BN statistics."""
from __future__ import annotations

import http.server
import io
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

KEYS_DIR = Path(__file__).parent / "data" / "official_keys"


class FileServer:
    """Serves `files[path] = bytes` on 127.0.0.1. `truncate[path] = n` sends only n bytes of the body
    while announcing the full Content-Length (a connection that breaks off)."""

    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.truncate: Dict[str, int] = {}
        self.requests: Counter = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.requests[path] += 1
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                n = server.truncate.get(path, len(body))
                self.wfile.write(body[:n])
                if n < len(body):
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path: str, obj=None, data: Optional[bytes] = None) -> str:
        """Serve `obj` (torch.save'd) or raw `data` at `path` (an official URL or its path)."""
        path = "/" + re.sub(r"^https?://[^/]+/", "", path).lstrip("/")
        if data is None:
            buf = io.BytesIO()
            torch.save(obj, buf)
            data = buf.getvalue()
        self.files[path] = data
        return path

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


def read_official_keys(name: str) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """{key: (shape, dtype)} from a reference key list (../shared/reference/keys/, copied here)."""
    out = {}
    for line in (KEYS_DIR / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        shape = tuple(int(s) for s in re.findall(r"\d+", shape))
        out[key] = (shape, dtype)
    return out


def randomize_bn_stats(model: torch.nn.Module, generator: Optional[torch.Generator] = None) -> torch.nn.Module:
    """Random affine parameters and running statistics, so loading them wrongly changes outputs."""
    g = generator or torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model
