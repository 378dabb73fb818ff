"""Seed-size MLP (64 -> 1024 -> 1024 -> 10, ~1.2M params) on scikit-learn's digits.

Trains the dense teacher, decomposes fc2 (1024x1024) to lowrank rank 32 and fc1 to tt, distills,
and reports test macro-F1 before/after, parameters, ONNX node counts, export time and
onnxruntime latency (1 thread, batch 1, medians).

    flock /tmp/edgeopt-bench.lock python -m benchmarks distilled_mlp_keeps_f1 [--set tt_rank=8]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from benchmarks.suite import Outcome
from edgeopt.compiler.decompose import decompose, layer_reports
from edgeopt.compiler.distill import distill
from edgeopt.compiler.export import export_onnx_info, onnx_op_counts
from edgeopt.compiler.train import evaluate, train


class MLP(nn.Module):
    def __init__(self, hidden: int = 1024) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def digits_splits(seed: int = 0):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)
    Xtr, Xva, ytr, yva = train_test_split(Xtr, ytr, test_size=0.2, stratify=ytr, random_state=seed)
    return (Xtr, ytr), (Xva, yva), (Xte, yte)


def ort_median_us(path: Path, x: np.ndarray, iters: int = 2000) -> float:
    from edgeopt.runtime.session import Runtime, open_session

    sess = open_session(path, Runtime(intra_op_threads=1, inter_op_threads=1))
    name = sess.get_inputs()[0].name
    for _ in range(200):
        sess.run(None, {name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def run(args: SimpleNamespace) -> Outcome:
    """Teacher (``teacher_epochs``), fc1 TT at ``tt_rank`` and fc2 low-rank at ``lowrank``, distilled ``epochs``."""
    torch.manual_seed(0)
    tr, va, te = digits_splits()
    teacher = MLP()
    t0 = time.time()
    train(teacher, tr, va, epochs=args.teacher_epochs, lr=1e-3, patience=10, seed=0)
    teacher_s = time.time() - t0
    m_teacher = evaluate(teacher, te)
    plan = {"fc1": {"format": "tt", "rank": args.tt_rank}, "fc2": {"format": "lowrank", "rank": args.lowrank}}
    student = decompose(teacher, plan)
    m_init = evaluate(student, te)
    t0 = time.time()
    best_val = distill(student, teacher, tr, va, epochs=args.epochs, patience=10, seed=0)
    distill_s = time.time() - t0
    m_student = evaluate(student, te)
    out = {
        "plan": plan,
        "teacher_train_s": teacher_s,
        "distill_s": distill_s,
        "best_val_f1": best_val,
        "teacher": {"params": sum(p.numel() for p in teacher.parameters()), "test": m_teacher.to_dict()},
        "student_init": {"test": m_init.to_dict()},
        "student": {
            "params": sum(p.numel() for p in student.parameters()),
            "test": m_student.to_dict(),
            "layers": [r.to_dict() for r in layer_reports(student)],
        },
    }
    x1 = te[0][:1]
    with tempfile.TemporaryDirectory() as d:
        for key, model in (("teacher", teacher), ("student", student)):
            info = export_onnx_info(
                model,
                torch.from_numpy(x1),
                Path(d) / f"{key}.onnx",
                metadata={"plan": plan},
                verify_inputs=torch.from_numpy(te[0][:64]),
            )
            p = info.path
            out[key].update(
                onnx_nodes=info.nodes,
                onnx_ops=dict(onnx_op_counts(p)),
                export_s=info.export_s,
                exporter=info.exporter,
                ort_p50_us_batch1=ort_median_us(p, x1),
            )
    for key in ("test",):
        del out["teacher"][key]["confusion"], out["student"][key]["confusion"], out["student_init"][key]["confusion"]
    lines = [
        f"teacher test macro-F1 {m_teacher.f1:.4f} ({out['teacher']['params']} params, "
        f"{out['teacher']['onnx_nodes']} nodes, {out['teacher']['ort_p50_us_batch1']:.1f} us)",
        "",
        f"student after SVD/TT-SVD {m_init.f1:.4f}; after distillation {m_student.f1:.4f} "
        f"({out['student']['params']} params, {out['student']['onnx_nodes']} nodes, "
        f"{out['student']['ort_p50_us_batch1']:.1f} us); drop {100 * (m_teacher.f1 - m_student.f1):.2f} points",
    ]
    return Outcome(out, "\n".join(lines) + "\n")
