"""Fixtures for the storage tests: a real PostgreSQL server (``testkit.pg``; skipped, with the reason, only
where its binaries are absent — ``scripts/test.sh --full`` installs them), a fresh database per test, and a
tiny task that worker processes load from ``testkit/tiny_task.py``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from testkit import pg as _pg
from testkit import tiny_task

TASK_SPEC = f"{Path(tiny_task.__file__).resolve()}:make_task"


@pytest.fixture(scope="session")
def pg_server():
    if _pg.pg_bindir() is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install -y postgresql "
            "(scripts/test.sh --full does)"
        )
    pytest.importorskip("psycopg", reason='the postgres extra is not installed: pip install "edgeopt[postgres]"')
    server = _pg.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """``postgresql://`` URL of a new, empty database of the test server."""
    return pg_server.url(pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The tiny task's teacher, trained once and saved; worker processes load the same weights."""
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("tiny") / "teacher.pt"
    tiny_task.train_teacher(path)
    return path


@pytest.fixture
def tiny_env(tiny_model, monkeypatch):
    """The environment workers need: the teacher's path, a 1 s heartbeat (a killed worker's trial is failed
    after 3 s)."""
    monkeypatch.setenv("EDGEOPT_TINY_MODEL", str(tiny_model))
    monkeypatch.setenv("EDGEOPT_HEARTBEAT_S", "1")
    return tiny_model


# Half the dense size (0.1 MiB): every worker has compressed plans to train. A budget just above the
# dense weights would leave only plans over it once the artifact's provenance bytes are counted.
TARGET_TOML = """
name = "tinyhost"
description = "test target: this host, one thread"
[device]
detect = true
[runtime]
providers = ["CPUExecutionProvider"]
intra_op_threads = 1
inter_op_threads = 1
graph_optimization = "all"
allow_spinning = false
batch_size = 1
[budget]
model_size_mb = 0.05
"""


@pytest.fixture
def tiny_target(tmp_path):
    path = tmp_path / "tinyhost.toml"
    path.write_text(TARGET_TOML)
    return str(path)
