"""Test isolation: no test may reach the internet or the user's caches.

huggingface_hub reads its environment at import time, so the variables are set here, before any
test module imports clzoo/timm/huggingface_hub.
"""
import atexit
import os
import shutil
import tempfile

# One per process (the xdist controller and each worker); removed at exit so that repeated runs on a
# shared disk do not pile up caches of converted checkpoints.
_SESSION_TMP = tempfile.mkdtemp(prefix="clzoo-tests-")
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_SESSION_TMP, "hf")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["CLZOO_HOME"] = os.path.join(_SESSION_TMP, "clzoo")
os.environ["TORCH_HOME"] = os.path.join(_SESSION_TMP, "torch")
os.environ.pop("CLZOO_MIRROR", None)

import pytest  # noqa: E402

from tests.helpers import FileServer  # noqa: E402


@pytest.fixture
def clzoo_home(tmp_path, monkeypatch):
    """A fresh, empty CLZOO_HOME for one test."""
    home = tmp_path / "clzoo_home"
    monkeypatch.setenv("CLZOO_HOME", str(home))
    return home


@pytest.fixture
def file_server():
    """An HTTP server on 127.0.0.1 serving in-memory files; counts requests per path."""
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def mirror(file_server, clzoo_home, monkeypatch):
    """CLZOO_MIRROR pointed at the local file server (official URL paths are served from it)."""
    monkeypatch.setenv("CLZOO_MIRROR", file_server.url)
    return file_server


@pytest.hookimpl(trylast=True)  # after `-m 'not slow'` has deselected, so the halves are the scheduler's
def pytest_collection_modifyitems(config, items):
    """Tests marked `long` (the training runs of test_train_learning.py, 1-5 min each in CI) go
    first, alternately at the head of each of the two halves that pytest-xdist's work-stealing scheduler
    hands its two workers at the start. Collected last, they ended the run with one worker busy on a long
    run and the other idle; run first, the short tests at the end balance the workers."""
    long = [item for item in items if item.get_closest_marker("long")]
    if not long:
        return
    short = [item for item in items if not item.get_closest_marker("long")]
    first, second = long[0::2], long[1::2]
    cut = max(0, len(items) // 2 - len(first))
    items[:] = first + short[:cut] + second + short[cut:]
