"""Measurements a busy host cannot fool: robust dispersion with stalls counted apart, throughput from
the median, predicted tails without host stalls, a noisy calibration that does not replace a quiet one,
and check statements true to their verdict. Statistics on synthetic samples; bench on real sessions."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgeopt.runtime import calibrate as cal_mod
from edgeopt.runtime import stats
from edgeopt.runtime.bench import bench
from edgeopt.runtime.checks import Check
from edgeopt.runtime.predict import predicted_samples
from edgeopt.runtime.result import summary

from .conftest import QUICK


def _runs_9us(n: int = 1000, seed: int = 0) -> np.ndarray:
    """9 us runs with a quiet host's jitter (about 2 %), in ms."""
    return 0.009 * (1 + 0.02 * np.random.default_rng(seed).standard_normal(n))


# --------------------------------------------------------------------------- dispersion
def test_one_stall_is_counted_not_noise():
    xs = _runs_9us()
    xs[500] = 32.0  # one 32 ms stall
    d = stats.dispersion(xs)
    assert d.stalls == 1 and d.stall_share == pytest.approx(0.001) and d.stall_ms == pytest.approx(32.0, rel=1e-3)
    assert d.relative_spread < 0.05 and d.noisy is None  # the mean-based CV it replaces:
    s = stats.summarize(xs)
    assert s["std"] / s["mean"] > 10
    assert d.median_ms == pytest.approx(0.009, rel=0.01) and "1 stall (0.1% of runs" in d.describe()


def test_stalls_that_reach_the_p99_make_it_noisy_and_say_so():
    xs = _runs_9us()
    xs[::40] = 5.0  # 2.5 % of the runs stalled
    d = stats.dispersion(xs)
    assert d.stalls == 25 and d.relative_spread < 0.05
    assert d.noisy is not None and d.noisy.startswith("25 stalls (2.5% of the runs") and "p99" in d.noisy


def test_a_wide_spread_is_noisy_by_dispersion():
    xs = 0.009 * (1 + 0.3 * np.abs(np.random.default_rng(1).standard_normal(1000)))
    d = stats.dispersion(xs)
    assert d.relative_spread > stats.NOISY_SPREAD and d.noisy.startswith("relative spread")


def test_a_bimodal_model_is_not_stalls():
    """Two genuine modes (1 and 1.6 ms, a cache effect say): no sample is twice the median."""
    xs = np.r_[np.full(600, 1.0), np.full(400, 1.6)] * (1 + 0.01 * np.random.default_rng(2).standard_normal(1000))
    assert stats.dispersion(xs).stalls == 0


# --------------------------------------------------------------------------- throughput, tails
def test_throughput_is_batch_over_the_median():
    xs = _runs_9us()
    xs[500] = 32.0
    warnings: list[str] = []
    s = summary(xs, xs, 4, None, warnings)
    assert s["throughput_per_s"] == pytest.approx(4 / (stats.percentile(xs, 50) / 1e3))
    assert s["throughput_per_s"] > 400_000 and not warnings  # 1000/mean would say ~120,000


def test_predicted_tails_clip_host_stalls():
    xs = _runs_9us()
    xs[500] = 32.0
    d = stats.dispersion(xs)
    pred = predicted_samples(xs, 14.0, d)
    assert pred.max() == pytest.approx(14.0 * d.stall_threshold_ms) and pred.max() < 0.3  # not 32 ms x 14
    assert stats.percentile(pred, 50) == pytest.approx(14.0 * stats.percentile(xs, 50))
    s = summary(xs * 14.0, xs, 1, {"factor": 14.0}, [])
    assert s["latency_ms"]["max"] == pytest.approx(pred.max())
    assert "1 stall(s) clipped" in s["prediction"]["tail"] and s["prediction"]["stalls_clipped"] == 1


def test_bench_reports_robust_fields(fixtures):
    r = bench(fixtures / "mlp_small.onnx", "host", **QUICK)
    d = r.to_dict()
    assert {"cv", "throughput_per_s", "dispersion", "throughput_basis"} <= set(d)  # keys added, none removed
    disp = d["dispersion"]
    assert disp["median_ms"] == pytest.approx(float(np.median(r.host_samples_ms)))
    assert {"relative_spread", "mad_ms", "iqr_ms", "stalls", "stall_share", "stall_threshold_ms", "noisy"} <= set(disp)
    assert r.throughput_per_s == pytest.approx(r.batch_size / (r.latency_ms["p50"] / 1e3))
    text = r.to_text()
    assert "spread " in text and "stalls " in text and "batch / p50" in text and "cv " not in text
    json.dumps(d)


def test_predicted_bench_never_exceeds_the_clipped_tail(fixtures):
    r = bench(fixtures / "mlp_small.onnx", "rpi4", **QUICK)
    f, d = r.prediction["factor"], r.dispersion
    assert r.latency_ms["max"] <= f * d.stall_threshold_ms * (1 + 1e-9)
    assert "predicted tails" in r.to_text() and "not predicted" in r.prediction["tail"]


# --------------------------------------------------------------------------- calibration noise
@pytest.fixture
def quiet_cached(tmp_path, monkeypatch):
    """A real calibration, cached with a recorded noise far below any real run's."""
    monkeypatch.setenv("EDGEOPT_CACHE_DIR", str(tmp_path))
    c = cal_mod.calibrate(1, budget_s=0.1)
    assert c.noise is not None and c.noise >= 0 and "noise" in c.to_dict()
    quiet = dataclasses.replace(c, noise=1e-6, when="quiet")
    cal_mod.save_calibration(quiet)
    return c, quiet


def test_a_noisier_calibration_is_refused_unless_forced(quiet_cached):
    c, quiet = quiet_cached
    noisy = dataclasses.replace(c, noise=0.2)
    why = cal_mod.refusal(noisy)
    assert why.startswith("not cached: this run's noise 0.200") and "--force" in why and "quiet" in why
    assert cal_mod.refusal(dataclasses.replace(c, noise=1e-6)) is None  # as quiet: replaces it
    assert cal_mod.refusal(dataclasses.replace(c, noise=None)) is None
    assert cal_mod.Calibration.from_dict({k: v for k, v in c.to_dict().items() if k != "noise"}).noise is None


def test_calibrate_cli_keeps_the_quiet_cache_and_force_replaces_it(quiet_cached, capsys):
    from edgeopt.cli import main

    _, quiet = quiet_cached
    assert main(["calibrate", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert cal_mod.cached_calibration(1) == quiet and "not cached: this run's noise" in err
    assert "[device]" in out  # the measurement is still shown
    assert main(["calibrate", "--threads", "1", "--force"]) == 0
    assert cal_mod.cached_calibration(1).when != "quiet" and "not cached" not in capsys.readouterr().err


# --------------------------------------------------------------------------- check statements
def test_an_inconclusive_check_never_reads_as_over_budget():
    c = Check("latency_p95", 0.1032, 0.101386, 0.11, 0.095, None, "ms", "predicted")
    line = c.statement
    assert line.startswith("INCONCLUSIVE latency_p95: not decided") and "FAIL" not in line and ">" not in line
    assert "[0.095, 0.11] ms holds the budget 0.1032 ms" in line
    assert Check("latency_p95", 0.1, 0.12, 0.13, 0.11, False, "ms").statement.startswith(
        "FAIL latency_p95: lower bound 0.11 ms > budget 0.1 ms"
    )
    assert Check("latency_p95", 0.1, 0.09, 0.098, 0.08, True, "ms").statement.startswith(
        "PASS latency_p95: upper bound 0.098 ms <= budget 0.1 ms"
    )
    assert Check("model_size", 1.0, 0.5, 0.5, 0.5, True, "MB").statement == "PASS model_size: 0.5 MB <= budget 1 MB"


def test_an_inconclusive_gate_states_its_interval(fixtures):
    """10 runs cannot bound a p95 at 95 %: the gate's JSON says so in each check's statement."""
    from edgeopt.runtime.gate import gate

    g = gate(fixtures / "mlp_small.onnx", "host", min_iters=10, max_iters=10, min_time_s=0, warmup=1)
    (lat,) = [c for c in g.to_dict()["checks"] if c["name"].startswith("latency_")]
    assert lat["status"] == "inconclusive" and g.verdict == "inconclusive"
    assert lat["statement"].startswith("INCONCLUSIVE latency_p95: not decided") and "no upper bound" in lat["statement"]
    assert "FAIL" not in lat["statement"] and ">" not in lat["statement"].split(";")[0]
