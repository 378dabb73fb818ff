"""Optuna's private names that edgeopt uses, each exercised once on a real SQLite study.

They all live in ``edgeopt/pipeline/study/_optuna.py``; this test is pinned to the Optuna version they were
read from, so an Optuna upgrade fails here, loudly, and nowhere else: re-read each private, then bump
``CHECKED_AGAINST``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("sqlalchemy")

from edgeopt.pipeline.storage import make_storage  # noqa: E402 - after the importorskip guards
from edgeopt.pipeline.study import StudyHandle, _optuna  # noqa: E402 - after the importorskip guards

PACKAGE = Path(_optuna.__file__).parents[2]
PRIVATE = ("_storage", "_study_id", "_trial_id", "_backend", "_rdb", "_create_scoped_session", "_get_stale_trial_ids")


def test_the_installed_optuna_is_the_one_the_privates_were_checked_against():
    assert optuna.__version__ == _optuna.CHECKED_AGAINST, (
        f"Optuna {optuna.__version__} is installed; edgeopt/pipeline/study/_optuna.py was checked against "
        f"{_optuna.CHECKED_AGAINST}: check each private there against the new version, then update CHECKED_AGAINST"
    )


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_HEARTBEAT_S", "1")
    return optuna.create_study(study_name="p", storage=make_storage(f"sqlite:///{tmp_path / 'p.db'}"))


def test_each_private_on_a_real_sqlite_study(study):
    stor = _optuna.storage_of(study)
    assert isinstance(stor, optuna.storages.BaseStorage)
    rdb = _optuna.backend(stor)
    assert isinstance(rdb, optuna.storages.RDBStorage) and stor is not rdb  # the cache in front of the RDB
    assert _optuna.engine_of(stor) is rdb.engine and _optuna.engine_of(rdb) is rdb.engine
    sid = _optuna.study_id(study)
    assert stor.get_study_name_from_id(sid) == "p"
    beating, silent = study.ask(), study.ask()
    tid = _optuna.trial_id(beating)
    assert stor.get_trial_number_from_id(tid) == beating.number
    assert _optuna.trial_id(study.trials[silent.number]) == _optuna.trial_id(silent)  # a FrozenTrial's too
    rdb.record_heartbeat(tid)
    assert _optuna.with_heartbeat(stor, [tid, _optuna.trial_id(silent)]) == {tid}


def test_the_handle_reads_the_heartbeat_settings(study):
    assert StudyHandle(study).grace_period_s() == 3  # 3 heartbeat intervals of 1 s
    assert StudyHandle(optuna.create_study()).grace_period_s() is None  # in memory: no heartbeats
    assert StudyHandle(optuna.create_study()).engine is None


def test_no_optuna_private_outside_the_one_module():
    """Attribute access and imports of Optuna's private names appear only in ``study/_optuna.py``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_optuna.py" and path.parent.name == "study":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
            if any(part in PRIVATE for n in names for part in n.split(".")):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not found, found


def test_edgeopt_sets_no_attribute_of_its_own_on_foreign_objects():
    """No ``obj.edgeopt_x = ...`` nor ``setattr(obj, "edgeopt_x", ...)``: values are passed or kept in side tables."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            stored = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and "edgeopt" in node.attr
            called = (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setattr"
                and len(node.args) > 1
                and "edgeopt" in ast.unparse(node.args[1]).lower()
            )
            if stored or called:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not found, found
