"""compile with a remote target: every screen and the final gate measure on the loopback device."""

from __future__ import annotations

import json

import pytest

from .test_cli_remote import profile


def test_compile_flags_make_the_target(tmp_path):
    import argparse

    from edgeopt.pipeline.cli import _target

    t = _target(argparse.Namespace(target="rpi4", remote="pi@10.0.0.7", on_device=False))
    assert t.remote.host == "pi@10.0.0.7" and t.name == "rpi4"
    t = _target(argparse.Namespace(target="rpi4", remote=None, on_device=True))
    assert t.is_host() and t.remote is None
    assert (
        _target(argparse.Namespace(target="rpi4", remote=None, on_device=False), {"latency_ms": 3.0}).budget.latency_ms
        == 3.0
    )


@pytest.mark.compile
@pytest.mark.slow
def test_compile_measures_on_the_device(spec, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("optuna")
    from edgeopt.cli import main

    out = tmp_path / "run"
    p = profile(tmp_path, spec)
    p.write_text(p.read_text().replace(f'host = "{spec.host}"', 'host = "placeholder"'))  # --remote sets it
    code = main(
        [
            "compile",
            "--example",
            "digits-mlp",
            "--target",
            str(p),
            "--remote",
            spec.host,
            "--out",
            str(out),
            "--trials",
            "2",
            "--epochs",
            "1",
            "--final-epochs",
            "1",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert code in (0, 1), capsys.readouterr().err
    text = json.dumps(json.loads((tmp_path / "r.json").read_text()))
    assert '"latency_source": "measured"' in text and spec.host in text and '"predicted"' not in text
    assert list((tmp_path / "device work" / "models").glob("*.onnx"))  # uploads by hash landed on the device
