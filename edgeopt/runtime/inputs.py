"""Model inputs generated from the model's signature, with a fixed seed.

Kept free of edgeopt imports beyond the error types: the measurement child process imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeopt.errors import InputError

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def parse_shapes(specs: Sequence[str] | Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,224,224", "ids=1,128"]`` (the --shape flag) or a mapping -> {name: shape}."""
    if not specs:
        return {}
    if isinstance(specs, Mapping):
        items = [(str(k), list(v)) for k, v in specs.items()]
    else:
        items = []
        for spec in specs:
            name, sep, dims = str(spec).partition("=")
            if not sep or not name:
                raise InputError(f"--shape {spec!r}: expected NAME=D1,D2,... (e.g. x=1,3,224,224)")
            try:
                items.append((name, [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]))
            except ValueError:
                raise InputError(f"--shape {spec!r}: expected integer dimensions, found {dims!r}") from None
    out = {}
    for name, dims in items:
        if not dims or any(d <= 0 for d in dims):
            raise InputError(f"--shape {name}: expected positive dimensions, found {dims}")
        out[name] = tuple(int(d) for d in dims)
    return out


def resolve_shape(name: str, shape: Sequence[Any], batch: int, shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """A concrete shape for one input: --shape wins; a symbolic leading dim takes the batch size."""
    if name in shapes:
        given = tuple(shapes[name])
        if len(given) != len(shape):
            raise InputError(
                f"--shape {name}: the model's input {name!r} has rank {len(shape)} "
                f"(shape {_show(shape)}), found {len(given)} dimensions {list(given)}"
            )
        for axis, (want, got) in enumerate(zip(shape, given)):
            if isinstance(want, int) and want > 0 and want != got:
                raise InputError(f"--shape {name}: axis {axis} of input {name!r} is fixed at {want}, found {got}")
        return given
    out = []
    for axis, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            out.append(dim)
        elif axis == 0:
            out.append(batch)
        else:
            raise InputError(
                f"input {name!r} has symbolic dimension {dim!r} at axis {axis} (shape {_show(shape)}); "
                f"give its shape with --shape {name}="
                + ",".join(
                    str(d) if isinstance(d, int) and d > 0 else (str(batch) if i == 0 else "N")
                    for i, d in enumerate(shape)
                )
            )
    return tuple(out)


def make_feeds(
    session_inputs: Sequence[Any], *, batch: int = 1, shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random feeds for onnxruntime ``session.get_inputs()``: normal floats, small non-negative ints
    (valid as indices into any embedding), random bools."""
    shapes = shapes or {}
    unknown = set(shapes) - {i.name for i in session_inputs}
    if unknown:
        names = ", ".join(i.name for i in session_inputs)
        raise InputError(f"--shape {sorted(unknown)[0]}: the model has no input of that name (inputs: {names})")
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session_inputs:
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise InputError(f"input {inp.name!r} has type {inp.type}, which edgeopt cannot generate data for")
        shape = resolve_shape(inp.name, inp.shape, batch, shapes)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[inp.name] = rng.random(shape) < 0.5
        else:
            feeds[inp.name] = rng.integers(0, 10, size=shape).astype(dtype)
    return feeds


def _show(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"
