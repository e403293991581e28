"""JupyterLab serves the notebooks and runs one through a kernel session, as a person would.

Starts ``jupyter lab`` headless on loopback with a random token, lists ``notebooks/`` through the
contents API, opens a kernel session for a notebook and executes its cells over the kernel's
websocket channel (overriding the output folders right after the parameters cell, as papermill
does), then shuts the server down.
"""

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

websocket = pytest.importorskip("websocket")

NOTEBOOK = "notebooks/tab4_comparison.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET", body: dict | None = None):
    req = urllib.request.Request(
        f"{base}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
        return json.loads(text) if text else None


@pytest.fixture
def lab_server(repo, tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={repo}", "--ServerApp.open_browser=False",
        "--allow-root",  # CI containers run as root
    ]
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("jupyter lab exited: " + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
        yield base, token, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _execute(ws, session_id: str, code: str, timeout_s: float = 120) -> dict:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": session_id, "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False},
    }))
    deadline = time.time() + timeout_s
    error = None
    while time.time() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            error = msg["content"]
        if msg["msg_type"] == "execute_reply":
            return {"status": msg["content"]["status"], "error": error}
    raise TimeoutError(f"no reply within {timeout_s} s for: {code[:80]}")


def test_lab_serves_notebooks_and_runs_one(lab_server, repo, tmp_path):
    base, token, port = lab_server
    listing = _api(base, token, "/api/contents/notebooks")
    names = {item["name"] for item in listing["content"]}
    assert "tab4_comparison.ipynb" in names and "fig01_context_trends.ipynb" in names
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}), timeout=30) as resp:
        assert resp.status == 200 and b"JupyterLab" in resp.read()

    session = _api(base, token, "/api/sessions", "POST", {"path": NOTEBOOK, "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}", timeout=120)
    try:
        nb = nbformat.read(repo / NOTEBOOK, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            reply = _execute(ws, session["id"], cell.source)
            assert reply["status"] == "ok", reply["error"]
            if "parameters" in cell.metadata.get("tags", []):
                override = f"figures_dir = {str(tmp_path)!r}\nresults_dir = {str(tmp_path)!r}"
                assert _execute(ws, session["id"], override)["status"] == "ok"
    finally:
        ws.close()
        _api(base, token, f"/api/sessions/{session['id']}", "DELETE")
    assert (tmp_path / "tab4_comparison.png").is_file() and (tmp_path / "tab4_comparison.csv").is_file()
