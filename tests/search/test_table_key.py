"""The per-layer tables' cache key: what decides the measurements, not where the profile lives."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")

from edgeopt.runtime.targets import resolve_target  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.search.allocation.build import table_key  # noqa: E402 - after the pytest.importorskip guards

PROFILE = """name = "one-thread"
description = "this host at one thread"

[device]
detect = true

[runtime]
intra_op_threads = 1
"""


def test_a_copy_of_the_profile_elsewhere_reuses_the_tables_and_another_runtime_does_not(tmp_path):
    torch.manual_seed(0)
    model, x = torch.nn.Linear(8, 4), torch.zeros(1, 8)
    src = tmp_path / "host-1t.toml"
    src.write_text(PROFILE)
    (tmp_path / "elsewhere").mkdir()
    copy = shutil.copy(src, tmp_path / "elsewhere" / "renamed.toml")
    two = tmp_path / "two-threads.toml"
    two.write_text(src.read_text().replace("intra_op_threads = 1", "intra_op_threads = 2"))
    key = table_key(model, x, resolve_target(str(src)))
    assert table_key(model, x, resolve_target(str(copy))) == key
    assert table_key(model, x, resolve_target(str(two))) != key
    assert table_key(model, x, resolve_target(str(src)), int8=True) != key
