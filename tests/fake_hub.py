"""A Hugging Face Hub stand-in on 127.0.0.1 (stdlib only): the requests huggingface_hub 2.x makes to push a
folder (`create_repo`, `file_exists`, `upload_folder`) and to download files (`hf_hub_download`, which
timm's `hf-hub:` loading uses). Files live in memory; every file is committed "regular" (inline base64), so
no LFS or Xet protocol is involved. Write requests need `Authorization: Bearer <one of tokens>`.

    POST /api/repos/create                      {"name", "organization", "visibility"} -> {"url"}; 409 if it exists
    POST /api/validate-yaml                     -> {"errors": [], "warnings": []}
    POST /api/models/{repo}/preupload/{rev}     -> every file "regular"
    POST /api/models/{repo}/commit/{rev}        ndjson: header, file (base64), deletedFile -> {"commitUrl", "commitOid"}
    HEAD|GET /{repo}/resolve/{rev}/{path}       -> the file, X-Repo-Commit, ETag; 404 + X-Error-Code otherwise
    GET /api/models/{repo}/tree/main            -> [{"type": "file", "path", "size", "oid"}] (upload_folder's
                                                   delete_patterns lists the repo with it)

This re-implements private Hub endpoints for huggingface_hub 2.4 (constraints.txt pins it).
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class Repo:
    private: bool = False
    files: Dict[str, bytes] = field(default_factory=dict)  # the head of main
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # sha -> files at that commit
    messages: List[str] = field(default_factory=list)


class FakeHub:
    USER = "tester"  # the namespace of a repo id given without one

    def __init__(self, tokens=("hf_test_write_token",)):
        self.tokens = set(tokens)
        self.repos: Dict[str, Repo] = {}
        self.requests: Counter = Counter()  # "METHOD /path" -> count
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body=b"", headers=None, json_body=None):
                if json_body is not None:
                    body = json.dumps(json_body).encode()
                    headers = dict(headers or {}, **{"Content-Type": "application/json"})
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, code, error_code=None, message=""):
                headers = {"X-Error-Code": error_code} if error_code else {}
                if message:
                    headers["X-Error-Message"] = message
                self._reply(code, headers=headers, json_body={"error": message or error_code or str(code)})

            def _authorized(self):
                auth = self.headers.get("Authorization", "")
                return auth.startswith("Bearer ") and auth[7:] in hub.tokens

            def _path(self):
                path = self.path.split("?", 1)[0]
                hub.requests[f"{self.command} {path}"] += 1
                return path

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path = self._path()
                m = (re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                     or re.fullmatch(r"/api/models/([^/]+/[^/]+)/(tree)/main", path))
                repo = hub.repos.get(m.group(1)) if m else None
                if repo is None or (repo.private and not self._authorized()):
                    return self._error(404, "RepoNotFound")
                if m.group(2) == "tree":
                    listing = [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                               for p, b in repo.files.items()]
                    return self._reply(200, json_body=listing)
                rev = m.group(2)
                files = repo.files if rev == "main" else repo.commits.get(rev)
                if files is None:
                    return self._error(404, "RevisionNotFound")
                if m.group(3) not in files:
                    return self._error(404, "EntryNotFound")
                body = files[m.group(3)]
                sha = rev if rev != "main" else next(reversed(repo.commits))
                self._reply(200, body, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})

            def do_POST(self):
                path = self._path()
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if path == "/api/validate-yaml":
                    return self._reply(200, json_body={"errors": [], "warnings": []})
                if not self._authorized():
                    return self._error(401, message="Invalid credentials in Authorization header")
                if path == "/api/repos/create":
                    req = json.loads(data)
                    repo_id = f"{req.get('organization') or hub.USER}/{req['name']}"
                    url = f"{hub.url}/{repo_id}"
                    if repo_id in hub.repos:
                        return self._reply(409, json_body={"error": "You already created this model repo", "url": url})
                    hub.repos[repo_id] = Repo(private=req.get("visibility") == "private")
                    return self._reply(200, json_body={"url": url, "name": repo_id})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/main", path)
                if m is None or m.group(1) not in hub.repos:
                    return self._error(404, "RepoNotFound")
                repo = hub.repos[m.group(1)]
                if m.group(2) == "preupload":
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                             for f in json.loads(data)["files"]]
                    return self._reply(200, json_body={"files": files})
                files = dict(repo.files)
                for line in data.splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        repo.messages.append(item["value"]["summary"])
                    elif item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(item["value"]["path"], None)
                    else:
                        return self._error(400, message=f"the stand-in does not support {item['key']!r}")
                sha = hashlib.sha1(data + str(len(repo.commits)).encode()).hexdigest()
                repo.files = repo.commits[sha] = files
                self._reply(200, json_body={"commitUrl": f"{hub.url}/{m.group(1)}/commit/{sha}", "commitOid": sha})

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()
