"""The sequential ``gate --against`` (issue 16): its design (looks, alpha spending, error rate under
optional stopping) and its stopping logic, on synthetic blocks with a synthetic clock, so each verdict
here is deterministic and takes no measuring time. Real measurements: ``test_gate_against.py``.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

import edgeopt.runtime.compare as cmp
from edgeopt.runtime import bench
from edgeopt.runtime.backends import LocalBackend, SshBackend
from edgeopt.runtime.compare import (
    ALPHA_SHARES,
    LOOKS,
    compare,
    look_confidence,
    ratio_interval,
    sequential_looks,
)
from edgeopt.runtime.targets import RemoteSpec, Target

from .test_gate_against import chain


# --------------------------------------------------------------------------- the design
def test_looks_grow_geometrically_and_are_even():
    looks = sequential_looks(0.95)
    assert looks == (10, 16, 24, 36, 54, 82, 124, 186) and len(looks) == LOOKS
    assert all(n % 2 == 0 for n in looks) and all(1.4 < b / a < 1.7 for a, b in zip(looks, looks[1:]))
    assert sequential_looks(0.99)[0] == 12  # 0.5^n <= 0.01/16 needs 10 pairs; more for a bound on both sides


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_alpha_spent_along_any_run_sums_to_alpha(confidence):
    alpha = 1 - confidence
    for final_at in range(LOOKS):  # the final look: forced by the cap at any look, or the last one
        spent = sum(1 - look_confidence(confidence, k, final=k == final_at) for k in range(final_at + 1))
        assert spent == pytest.approx(alpha)
    assert 1 - look_confidence(confidence, 0, final=False) == pytest.approx(alpha / ALPHA_SHARES)
    assert 1 - look_confidence(confidence, LOOKS - 1, final=True) == pytest.approx(alpha * 9 / 16)  # at least 9/16


def _runs(rng, true_log_ratio, limit, *, runs, confidence=0.95, naive=False, final_at=LOOKS - 1):
    """Simulate the stopping rule on per-pair log-ratios (heavy-tailed, as on a loaded host): the share of
    runs ending in PASS and in FAIL. ``naive``: every look at the full confidence (what must not be done)."""
    looks = sequential_looks(confidence)[: final_at + 1]
    passes = fails = 0
    for _ in range(runs):
        r = np.exp(true_log_ratio + 0.1 * rng.standard_t(3, looks[-1]))
        for k, n in enumerate(looks):
            conf = confidence if naive else look_confidence(confidence, k, final=k == len(looks) - 1)
            blocks = [[x] for x in r[:n]]
            _, lo, hi = ratio_interval(blocks, [[1.0]] * n, 50, conf)
            if hi is not None and hi <= limit:
                passes += 1
                break
            if lo is not None and lo > limit:
                fails += 1
                break
    return passes / runs, fails / runs


def test_optional_stopping_keeps_the_error_rate():
    """The true ratio sits at the limit: a PASS or a FAIL is then a wrong verdict at either bound. Spent
    over the looks, each stays under alpha = 5%; looking at 95% every time (naive) exceeds it."""
    rng = np.random.default_rng(0)
    limit = 1.05
    ok_pass, ok_fail = _runs(rng, np.log(limit), limit, runs=600)
    assert ok_pass <= 0.05 and ok_fail <= 0.05, (ok_pass, ok_fail)
    naive_pass, naive_fail = _runs(rng, np.log(limit), limit, runs=600, naive=True)
    assert naive_pass > 0.06 and naive_fail > 0.06, (naive_pass, naive_fail)  # optional stopping inflates it


def test_same_ratio_passes_and_a_slower_one_fails_sequentially():
    rng = np.random.default_rng(1)
    assert _runs(rng, 0.0, 1.05, runs=200)[0] >= 0.95  # at the limit's 5%: PASS (by some look)
    assert _runs(rng, np.log(1.12), 1.05, runs=200)[1] >= 0.95  # 12% slower: FAIL


# --------------------------------------------------------------------------- the stopping logic, synthetic blocks
@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("seq")
    return chain(2).save(d / "old.onnx"), chain(2, seed=1).save(d / "new.onnx")


@pytest.fixture(scope="module")
def template(pair):
    """One real measurement's result: its samples are replaced by synthetic ones below."""
    host = Target.load("host")
    job = bench.measurement_job(
        pair[0].resolve(),
        host,
        bench.BenchSettings(min_iters=5, min_time_s=0, warmup=1),
        threads=1,
        shapes={},
        profile=False,
    )
    return bench.run_child(job, timeout_s=120)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now


@pytest.fixture
def synthetic(monkeypatch, pair, template):
    """``compare`` with each block synthetic: OLD's samples 1.0-1.2 ms times a lognormal block factor
    (sigma 0.1: a loaded host's block-to-block scatter), NEW's the same times ``ratio``; an in-process
    A/B pair (one job, both blocks) takes 1 s of a fake clock, a single-model block 0.5 s. The
    single-model blocks (memory) are 100x slower: their latency must not count. ``run.jobs``: the jobs."""
    clock = FakeClock()
    monkeypatch.setattr(cmp._run, "time", types.SimpleNamespace(monotonic=clock.monotonic))

    def run(ratio, target=None, **kw):
        rng = np.random.default_rng(7)
        new_path = str(pair[1].resolve())
        run.jobs = []

        def block(model, slow=1.0):
            scale = (ratio if model == new_path else 1.0) * np.exp(0.1 * rng.standard_normal()) * slow
            return dict(template, samples_ns=list(np.linspace(1e6, 1.2e6, 100) * scale))

        def run_child(job, *, timeout_s):
            run.jobs.append(job)
            if job.get("ab"):
                clock.now += 1.0
                return {"ab": [block(job["model"]), block(job["ab"]["other"])], "warnings": []}
            clock.now += 0.5
            return block(job["model"], slow=1.0 if job.get("remote") else 100.0)

        # every job goes through the target's backend: here (local) or on the device (ssh)
        monkeypatch.setattr(
            LocalBackend, "measure", lambda self, job, *, timeout_s: run_child(job, timeout_s=timeout_s)
        )
        monkeypatch.setattr(
            SshBackend,
            "measure",
            lambda self, job, *, timeout_s: run_child(dict(job, remote=True), timeout_s=timeout_s),
        )
        kw = {"atol": float("inf"), "max_top1_disagreement": 1.0, **kw}
        return compare(pair[1], pair[0], target or dataclasses.replace(Target.load("host")), **kw)

    return run


def test_a_tiny_cap_is_inconclusive_and_says_the_noise(synthetic):
    c = synthetic(1.0, max_time_s=1.0)
    seq = c.method["sequential"]
    assert seq["stopped"] == "time cap" and seq["pairs"] == 10 and len(seq["looks"]) == 1  # the first look is whole
    assert seq["looks"][0]["confidence"] == pytest.approx(0.95)  # the final look spends all alpha
    p95 = c.check("latency_ratio_p95")
    assert p95.status == "inconclusive" and c.verdict == "inconclusive"
    assert p95.lower_bound < 1.05 < p95.upper_bound
    assert "within noise at the 1 s cap" in p95.detail and "after 10 pairs in 12 s" in p95.detail  # + 4 x 0.5 s
    assert "middle half" in p95.detail
    line = next(x for x in c.text_lines() if "latency_ratio_p95" in x)
    assert f"[{p95.lower_bound:.4f}, {p95.upper_bound:.4f}]" in line and "10 pairs" in line
    assert "stopped at the 1 s cap, within noise" in c.describe()


def test_the_same_noise_with_time_is_decided_pass(synthetic):
    c = synthetic(1.0, max_time_s=600)
    seq = c.method["sequential"]
    assert c.verdict == "pass" and seq["stopped"] == "decided" and len(seq["looks"]) > 1, seq
    assert seq["pairs"] == sequential_looks(0.95)[len(seq["looks"]) - 1]
    assert all(look["confidence"] == pytest.approx(1 - 0.05 / ALPHA_SHARES) for look in seq["looks"])
    assert c.check("latency_ratio_p95").upper_bound <= 1.05 and c.new.blocks == c.old.blocks == seq["pairs"]
    assert seq["elapsed_s"] == pytest.approx(2.0 + seq["pairs"] * 1.0)  # the memory blocks, then 1 s a pair
    assert c.method["in_process"] and c.method["pairs"] == seq["pairs"]
    assert c.new.latency_ms["p50"] < 2.0  # the single-model blocks (100x slower) do not count for latency


def test_in_process_pairs_alternate_and_memory_blocks_come_first(synthetic, pair):
    """Here: FRESH_PAIRS counterbalanced single-model pairs (memory), then one A/B job per pair, the
    first model alternating NEW, OLD, NEW, ... ; memory comes from the single-model blocks."""
    c = synthetic(1.0, max_time_s=600)
    jobs = synthetic.jobs
    new_path, old_path = str(pair[1].resolve()), str(pair[0].resolve())
    fresh, ab = jobs[: 2 * cmp.FRESH_PAIRS], jobs[2 * cmp.FRESH_PAIRS :]
    assert [j["model"] for j in fresh] == [new_path, old_path, old_path, new_path] and not any(
        j.get("ab") for j in fresh
    )
    assert len(ab) == c.method["pairs"] and all(j["model"] == new_path and j["ab"]["other"] == old_path for j in ab)
    assert [j["ab"]["first"] for j in ab] == [i % 2 for i in range(len(ab))]
    assert all(j["ab"]["sub_blocks"] == cmp.SUB_BLOCKS for j in ab) and not any(j["profile"] for j in ab)
    assert "interleaved" in c.method["design"] and "interleaved" in c.describe()


def test_a_remote_target_keeps_a_fresh_process_per_block(synthetic):
    """Over SSH a job carries one model: every block is a single-model job, as before in-process pairs."""
    host = Target.load("host")
    remote = dataclasses.replace(host, remote=RemoteSpec("pi@10.0.0.7"))
    c = synthetic(1.0, target=remote, max_time_s=600)
    assert not c.method["in_process"] and "fresh process per block" in c.describe()
    assert all(j.get("remote") and not j.get("ab") for j in synthetic.jobs)
    assert len(synthetic.jobs) == 2 * c.method["pairs"] and c.verdict == "pass"


def test_a_clearly_slower_model_fails_at_the_first_look(synthetic):
    c = synthetic(1.5)
    seq = c.method["sequential"]
    assert c.verdict == "fail" and seq["stopped"] == "decided" and seq["pairs"] == 10
    assert c.check("latency_ratio_p50").lower_bound > 1.05


def test_a_failed_check_stops_the_run_and_the_latency_rows_say_so(synthetic):
    """The outputs differ (atol 0): FAIL at the first look, the latency ratios not decided. The header
    names the check that stopped the run, not "decided"; the latency rows say it stopped them, with no
    --max-time hint (more time would not have been spent)."""
    c = synthetic(1.0, atol=0.0, max_time_s=600)
    seq = c.method["sequential"]
    assert c.verdict == "fail" and seq["stopped"] == "check failed" and seq["pairs"] == 10
    assert seq["failed_checks"] == ["outputs_close"]
    p95 = c.check("latency_ratio_p95")
    assert p95.status == "inconclusive"
    assert p95.detail.startswith(
        "not decided: the run stopped at the first look (10 pairs) because outputs_close failed"
    )
    text = "\n".join(c.text_lines()) + c.to_markdown()
    assert "--max-time" not in text and "stopped: outputs_close failed (latency not decided)" in c.describe()
    assert "decided;" not in c.describe()


def test_the_last_look_gives_no_max_time_hint(synthetic, monkeypatch):
    monkeypatch.setattr(cmp._run, "LOOKS", 1)
    monkeypatch.setattr(cmp._design, "LOOKS", 1)
    c = synthetic(1.04, max_time_s=600)
    seq = c.method["sequential"]
    assert seq["stopped"] == "last look" and "--max-time" not in c.check("latency_ratio_p95").detail


def test_the_cap_look_comes_before_the_cap(synthetic):
    """Pairs are added while the next two fit under the cap; then the final look, off schedule."""
    c = synthetic(1.04, max_time_s=42)  # within noise of the limit: not decided by 42 s (2 s of memory blocks)
    seq = c.method["sequential"]
    assert seq["stopped"] == "time cap" and seq["elapsed_s"] <= 42 and seq["pairs"] == 40, seq
    assert [look["pairs"] for look in seq["looks"]] == [10, 16, 24, 36, 40]
    assert seq["looks"][-1]["confidence"] == pytest.approx(1 - 0.05 * (1 - 4 / ALPHA_SHARES))


def test_bad_cap_is_bad_input(pair):
    from edgeopt.errors import InputError

    with pytest.raises(InputError, match=r"compare\(\): max_time_s: expected a number > 0, found"):
        compare(pair[1], pair[0], "host", max_time_s=0)
