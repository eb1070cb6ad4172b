"""Dashboards: the checked-in JSON is what the generator writes, and follows the house rules (a datasource
variable and no hard-coded uids, rate() over counters, histogram_quantile over buckets). Their queries run
on a real Prometheus in tests/test_stack.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmlab.platform import dashboards

DIR = Path(__file__).resolve().parents[1] / "dashboards"


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_checked_in_json_matches_generator(name):
    path = DIR / f"{name}.json"
    assert path.exists(), f"{path} is missing: run `llmlab dashboards`"
    assert json.loads(path.read_text()) == json.loads(dashboards.render(name)), (
        f"{path.name} differs from the generator: run `llmlab dashboards`")


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_house_rules(name):
    doc = json.loads(dashboards.render(name))
    assert [v["name"] for v in doc["templating"]["list"]] == ["datasource"]
    assert doc["templating"]["list"][0]["query"] == "prometheus"
    assert "uid" not in doc  # Grafana assigns dashboard uids; nothing is pinned
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert panels
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            expr = t["expr"]
            for counter in re.findall(r"[a-z_:]+_total\b", expr):
                assert re.search(rf"(rate|increase)\({re.escape(counter)}", expr), expr
            if "_bucket" in expr:
                assert "histogram_quantile(" in expr, expr
    text = json.dumps(doc)
    assert re.findall(r'"uid": "([^"]+)"', text) == ["${datasource}"] * text.count('"uid"')


class _Grafana:
    """A loopback stand-in for Grafana's HTTP API (no Grafana server can run here): the folder and dashboard
    endpoints `llmlab dashboards push` uses, answering as Grafana documents them and refusing what Grafana
    would refuse (no Bearer token, a missing folder, a dashboard without title or uid, JSON not declared)."""

    def __init__(self, token: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.token, self.folders, self.dashboards, self.requests = token, {}, {}, []
        grafana = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                grafana.requests.append((method, self.path, dict(self.headers), body))
                if self.headers.get("Authorization") != f"Bearer {grafana.token}":
                    return self._answer(401, {"message": "Unauthorized"})
                if method == "POST" and self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    return self._answer(415, {"message": "bad content type"})
                if method == "GET" and self.path.startswith("/api/folders/"):
                    uid = self.path.rsplit("/", 1)[1]
                    if uid not in grafana.folders:
                        return self._answer(404, {"message": "folder not found", "status": "not-found"})
                    return self._answer(200, grafana.folders[uid])
                if method == "POST" and self.path == "/api/folders":
                    if not body.get("title") or body.get("uid") in grafana.folders:
                        return self._answer(409, {"message": "a folder with that uid exists"})
                    grafana.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"],
                                                    "id": len(grafana.folders) + 1}
                    return self._answer(200, grafana.folders[body["uid"]])
                if method == "POST" and self.path == "/api/dashboards/db":
                    dash = body.get("dashboard") or {}
                    if not dash.get("title") or not dash.get("uid") or body.get("folderUid") not in grafana.folders:
                        return self._answer(400, {"message": "bad dashboard or folder"})
                    old = grafana.dashboards.get(dash["uid"])
                    if old and not body.get("overwrite"):
                        return self._answer(412, {"message": "exists", "status": "version-mismatch"})
                    version = old["version"] + 1 if old else 1
                    grafana.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": body["folderUid"],
                                                       "version": version}
                    slug = dash["title"].lower().replace(" / ", "-").replace(" ", "-")
                    return self._answer(200, {"id": len(grafana.dashboards), "uid": dash["uid"], "status": "success",
                                              "url": f"/d/{dash['uid']}/{slug}", "version": version, "slug": slug})
                return self._answer(404, {"message": "Not found"})

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_push_uploads_every_dashboard_into_a_folder_and_replaces_them():
    """Through the CLI, twice: the folder is created once, each dashboard lands with its stable uid and its
    panels, the second push replaces (version 2) instead of duplicating; a wrong token is a clear error."""
    import subprocess
    import sys

    def cli(*args):
        r = subprocess.run([str(Path(sys.executable).with_name("llmlab")), "dashboards", "push", *args],
                           capture_output=True, text=True, timeout=120)
        r.output = r.stdout + r.stderr
        return r

    grafana = _Grafana("glsa_secret")
    try:
        for version in (1, 2):
            r = cli("--grafana", grafana.url, "--token", "glsa_secret")
            assert r.returncode == 0, r.output
            assert r.output.count("success") == len(dashboards.DASHBOARDS) and f"(version {version})" in r.output
        assert list(grafana.folders) == ["llmlab"]
        assert sorted(grafana.dashboards) == sorted(f"llmlab-{n}" for n in dashboards.DASHBOARDS)
        for name in dashboards.DASHBOARDS:
            stored = grafana.dashboards[f"llmlab-{name}"]
            assert stored["version"] == 2 and stored["folderUid"] == "llmlab"
            assert stored["dashboard"]["panels"] == json.loads(dashboards.render(name))["panels"]
            assert stored["dashboard"]["id"] is None
        posts = [(m, p) for m, p, _, _ in grafana.requests if m == "POST"]
        assert posts.count(("POST", "/api/folders")) == 1
        r = cli("--grafana", grafana.url, "--token", "wrong", "--name", "monitoring")
        assert r.returncode == 1 and "refused" in r.output and "401" in r.output
        r = cli("--grafana", grafana.url, "--token", "x", "--name", "nope")
        assert r.returncode == 2 and "unknown dashboards" in r.output
    finally:
        grafana.server.shutdown()
    r = cli("--grafana", "http://127.0.0.1:9", "--token", "t")
    assert r.returncode == 1 and "unreachable" in r.output
