"""The bundled architectures (``edgeopt.models``), measured: what the compiler sees and what training costs.

Per architecture: parameters; decomposable layers after the attention swap (and which layers
are left alone, with the reason); the dense model trained with edgeopt's training loop on its
offline dataset (seconds, test macro-F1); and ONNX export time per exporter (TorchScript and
dynamo, each verified against torch in onnxruntime) of the trained model, for the ViT both as
built (``nn.MultiheadAttention``) and after :func:`edgeopt.compiler.attention.swap_attention`.

    python -m benchmarks architecture_costs [--set only=resnet8,vit] [--set threads=2]
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from benchmarks.suite import Outcome


def _layers(model, input_shape):
    from edgeopt.compiler.attention import swap_attention
    from edgeopt.compiler.decompose import decomposable_layers, left_alone

    swapped = copy.deepcopy(model)
    attn_refused = swap_attention(swapped)
    specs = decomposable_layers(swapped, (1, *input_shape))
    refused = left_alone(swapped, (1, *input_shape))
    matrices = {n: w for n, w in refused.items() if "grouped" in w or "Multihead" in w or "attention" in w}
    reasons = Counter(w for w in matrices.values())
    return swapped, {
        "decomposable": len(specs),
        "decomposable_names": sorted(specs),
        "refused_matrix_layers": len(matrices),
        "refused_reasons": dict(reasons),
        "attention_refused": attn_refused,
    }


def _export_times(model, input_shape, tag, out):
    import torch

    from edgeopt.compiler.export import export_onnx_info

    x = torch.randn(1, *input_shape)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for exporter in ("torchscript", "dynamo"):
            t0 = time.perf_counter()
            try:
                info = export_onnx_info(model, x, Path(tmp) / f"{tag}-{exporter}.onnx", exporter=exporter)
                res[exporter] = {
                    "ok": True,
                    "export_s": round(info.export_s, 3),
                    "total_s": round(info.total_s, 3),
                    "nodes": info.nodes,
                    "max_rel_deviation": info.max_rel_deviation,
                }
            except Exception as exc:
                res[exporter] = {
                    "ok": False,
                    "total_s": round(time.perf_counter() - t0, 3),
                    "error": str(exc).splitlines()[0][:240],
                }
    out[tag] = res


def measure(name: str, arch, epochs: int | None = None) -> dict:
    """One architecture: parameters, layers, training (``epochs``: its own schedule when None), exports."""
    import torch

    from edgeopt.compiler.train import evaluate, fit

    row: dict = {"name": name, "description": arch.description}
    t0 = time.perf_counter()
    train, val, test = arch.data()
    row["data_s"] = round(time.perf_counter() - t0, 2)
    row["samples"] = {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])}
    torch.manual_seed(0)
    model = arch.build()
    row["params"] = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    best_val, history = fit(
        model,
        train,
        val,
        epochs=epochs or arch.epochs,
        lr=arch.lr,
        batch_size=arch.batch_size,
        alpha=1.0,
        weight_decay=arch.weight_decay,
        schedule=arch.schedule,
        patience=epochs or arch.epochs,
        seed=0,
        owner="train",
    )
    row["train_s"] = round(time.perf_counter() - t0, 1)
    row["epochs"] = len(history)
    row["val_f1"] = round(best_val, 4)
    row["test_f1"] = round(evaluate(model, test).score, 4)
    swapped, layers = _layers(model, arch.input_shape)
    row.update(layers)
    x = torch.as_tensor(test[0][:64])
    with torch.no_grad():
        row["swap_max_abs_diff"] = float((model.eval()(x) - swapped.eval()(x)).abs().max())
    row["exports"] = {}
    _export_times(model, arch.input_shape, "as_built", row["exports"])
    if layers["decomposable"] and any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules()):
        _export_times(swapped, arch.input_shape, "attention_swapped", row["exports"])
    return row


def _md(rows: list[dict], threads: int) -> str:
    out = [
        f"# Bundled architectures ({threads} torch threads)",
        "",
        "| model | params | decomposable | left dense (matrix layers) | train s | epochs | test macro-F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        why = "; ".join(f"{n}× {w}" for w, n in r["refused_reasons"].items()) or "-"
        out.append(
            f"| {r['name']} | {r['params']:,} | {r['decomposable']} | {why} | {r['train_s']} | {r['epochs']} | "
            f"{r['test_f1']:.4f} |"
        )
    out += [
        "",
        "| model | graph | exporter | ok | export s | total s (with checks) | nodes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for tag, res in r["exports"].items():
            for ex, e in res.items():
                out.append(
                    f"| {r['name']} | {tag} | {ex} | {'yes' if e['ok'] else 'no: ' + e['error'][:90]} | "
                    f"{e.get('export_s', '-')} | {e['total_s']} | {e.get('nodes', '-')} |"
                )
    return "\n".join(out) + "\n"


def run(args: SimpleNamespace) -> Outcome:
    """Per architecture in ``only``: its layers, training cost and export times."""
    import torch

    from edgeopt.models import ARCHITECTURES

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only.split(","):
        row = measure(name, ARCHITECTURES[name], args.epochs)
        print(json.dumps({k: v for k, v in row.items() if k != "decomposable_names"}), flush=True)
        rows.append(row)
    return Outcome(rows, _md(rows, args.threads))
