"""Output agreement of two models on the same generated inputs (``edgeopt gate NEW --against OLD``).

Both models are opened in this process with the target's session options and run on the same
seeded inputs (``inputs.make_feeds``: ``samples`` feeds at the target's batch size). For every
output the report gives

- ``max_abs_diff``  = max |new - old|;
- ``max_rel_diff``  = max |new - old| / |old| over the elements where old != 0 (as numpy's
  ``assert_allclose`` reports it);
- ``mismatched``    = the share of elements outside ``|new - old| <= atol + rtol * |old|`` (numpy's
  ``allclose`` rule; NaN equals NaN);
- for a classifier-shaped output (float, rank 2, ``(N, C)`` with C >= 2): ``top1_disagreement``, the
  share of rows whose arg-max differs.

Generated inputs are random normals, not data: a top-1 flip on them says the decision surface moved,
not by how much accuracy changed. Two models whose inputs (names, element types, concrete shapes)
or outputs (names, element types, ranks) differ are bad input (InputError, one line naming both).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import InputError, ModelError
from edgeopt.runtime.inputs import make_feeds, resolve_shape

DEFAULT_SAMPLES = 16


def _open(path: str | os.PathLike[str], runtime: Any) -> Any:
    from edgeopt.runtime.session import open_session

    try:
        return open_session(path, runtime)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ModelError(f"{path}: onnxruntime cannot load the model: {first[:400]}") from None


def _dims(shape: Sequence[Any]) -> str:
    return "[" + ",".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _type(t: str) -> str:
    return t[len("tensor(") : -1] if t.startswith("tensor(") else t


def describe(session: Any) -> str:
    """``(x: float[batch,64]) -> (y: float[batch,10])``: a session's signature on one line."""
    ins = ", ".join(f"{i.name}: {_type(i.type)}{_dims(i.shape)}" for i in session.get_inputs())
    outs = ", ".join(f"{o.name}: {_type(o.type)}{_dims(o.shape)}" for o in session.get_outputs())
    return f"({ins}) -> ({outs})"


def _input_key(session: Any, batch: int, shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {i.name: (i.type, resolve_shape(i.name, i.shape, batch, shapes)) for i in session.get_inputs()}


def _output_key(session: Any) -> dict[str, tuple[str, int]]:
    return {o.name: (o.type, len(o.shape)) for o in session.get_outputs()}


def check_signatures(
    new: Any, old: Any, new_path: str, old_path: str, *, batch: int, shapes: Mapping[str, Sequence[int]]
) -> None:
    """InputError (one line, both signatures) unless the two sessions take the same inputs (names,
    element types, concrete shapes at ``batch``/``shapes``) and give the same outputs (names,
    element types, ranks). Symbolic dimensions may be named differently."""
    same = _output_key(new) == _output_key(old)
    if same:
        try:
            same = _input_key(new, batch, shapes) == _input_key(old, batch, shapes)
        except InputError:
            same = [(i.name, i.type, len(i.shape)) for i in new.get_inputs()] == [
                (i.name, i.type, len(i.shape)) for i in old.get_inputs()
            ]
            if same:
                raise
    if not same:
        raise InputError(
            f"the two models have different signatures: NEW {Path(new_path).name} "
            f"{describe(new)}; OLD {Path(old_path).name} {describe(old)}"
        )


def _output_stats(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Differences of ``a`` (new) against ``b`` (old), both of the same shape."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    diff = np.abs(a64 - b64)
    diff[nan_a & nan_b] = 0.0
    diff[nan_a ^ nan_b] = np.inf
    with np.errstate(invalid="ignore"):
        bad = ~(diff <= atol + rtol * np.abs(b64))
    nz = (b64 != 0) & ~nan_b
    rel = diff[nz] / np.abs(b64[nz]) if nz.any() else np.zeros(0)
    worst = int(np.argmax(diff)) if diff.size else 0
    out: dict[str, Any] = {
        "shape": list(a.shape),
        "elements": int(a.size),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "max_abs_diff_at": [int(i) for i in np.unravel_index(worst, a.shape)] if diff.size else [],
        "max_rel_diff": float(rel.max()) if rel.size else 0.0,
        "mismatched": int(bad.sum()),
        "mismatched_share": float(bad.mean()) if bad.size else 0.0,
    }
    if a.ndim == 2 and a.shape[1] >= 2 and np.issubdtype(a.dtype, np.floating):
        flips = np.argmax(a, axis=1) != np.argmax(b, axis=1)
        out["rows"] = int(a.shape[0])
        out["top1_disagreements"] = int(flips.sum())
        out["top1_disagreement"] = float(flips.mean())
    return out


def _run_both(
    new: tuple[Any, Any], old: tuple[Any, Any], names: list[str], *, batch: int, shapes: dict, seed: int, samples: int
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """Each model's outputs, by name, on ``samples`` seeded feeds; ModelError naming the model that cannot run."""
    got_new: dict[str, list[np.ndarray]] = {n: [] for n in names}
    got_old: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for k in range(samples):
        feeds = make_feeds(new[0].get_inputs(), batch=batch, shapes=shapes, seed=seed + k)
        for (sess, path), got in ((new, got_new), (old, got_old)):
            try:
                outs = sess.run(names, feeds)
            except Exception as exc:
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                raise ModelError(
                    f"{path}: onnxruntime cannot run the model on generated inputs: {first[:400]}"
                ) from None
            for n, v in zip(names, outs):
                got[n].append(np.asarray(v))
    return got_new, got_old


def compare_outputs(
    new_path: str | os.PathLike[str],
    old_path: str | os.PathLike[str],
    runtime: Any,
    *,
    batch: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    samples: int = DEFAULT_SAMPLES,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Run both models on ``samples`` seeded feeds (seeds ``seed .. seed+samples-1``) and compare
    their outputs; raises InputError when their signatures differ, before running anything.

    Returns ``{"inputs": ..., "samples", "atol", "rtol", "outputs": {name: stats}, "max_abs_diff",
    "max_rel_diff", "mismatched_share", "close", "top1_disagreement" (None without a classifier
    output), "rows"}``.
    """
    shapes = dict(shapes or {})
    new_s, old_s = _open(new_path, runtime), _open(old_path, runtime)
    check_signatures(new_s, old_s, str(new_path), str(old_path), batch=batch, shapes=shapes)
    names = [o.name for o in new_s.get_outputs()]
    got_new, got_old = _run_both(
        (new_s, new_path), (old_s, old_path), names, batch=batch, shapes=shapes, seed=seed, samples=samples
    )
    per: dict[str, dict[str, Any]] = {}
    for n in names:
        a, b = got_new[n], got_old[n]
        if [x.shape for x in a] != [x.shape for x in b]:
            raise InputError(
                f"output {n!r}: NEW gives shape {list(a[0].shape)}, OLD {list(b[0].shape)} "
                f"on the same inputs; the models are not comparable"
            )
        cat = (lambda xs: np.concatenate(xs, axis=0)) if a[0].ndim else np.stack
        per[n] = _output_stats(cat(a), cat(b), atol, rtol)
    return _summary(per, new_s, samples=samples, batch=batch, seed=seed, atol=atol, rtol=rtol, shapes=shapes)


def _summary(per: dict[str, dict[str, Any]], new_s: Any, **run: Any) -> dict[str, Any]:
    """The agreement document from the per-output statistics (``compare_outputs``' return value)."""
    samples, batch, seed, atol, rtol, shapes = (run[k] for k in ("samples", "batch", "seed", "atol", "rtol", "shapes"))
    total = sum(s["elements"] for s in per.values())
    classifiers = [s for s in per.values() if "top1_disagreement" in s]
    rows = sum(s["rows"] for s in classifiers)
    flips = sum(s["top1_disagreements"] for s in classifiers)
    return {
        "computed_on": "this host",
        "samples": samples,
        "batch": batch,
        "seed": seed,
        "atol": atol,
        "rtol": rtol,
        "inputs": {
            i.name: {"type": _type(i.type), "shape": list(resolve_shape(i.name, i.shape, batch, shapes))}
            for i in new_s.get_inputs()
        },
        "signature": describe(new_s),
        "outputs": per,
        "max_abs_diff": max((s["max_abs_diff"] for s in per.values()), default=0.0),
        "max_rel_diff": max((s["max_rel_diff"] for s in per.values()), default=0.0),
        "mismatched_share": (sum(s["mismatched"] for s in per.values()) / total) if total else 0.0,
        "close": all(s["mismatched"] == 0 for s in per.values()),
        "rows": rows if classifiers else None,
        "top1_disagreements": flips if classifiers else None,
        "top1_disagreement": (flips / rows if rows else 0.0) if classifiers else None,
    }


__all__ = ["compare_outputs", "check_signatures", "describe", "DEFAULT_SAMPLES"]
