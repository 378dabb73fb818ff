"""The prune rungs' sensitivity is taken with the BatchNorm statistics after the pruned layer re-estimated
(``sensitivity.adapted_batchnorm``, decision 0118): real torch models, real torch-pruning students."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402  (after the importorskip guards)

from edgeopt.compiler.decompose import decompose  # noqa: E402
from edgeopt.search.allocation.sensitivity import adapted_batchnorm, kl  # noqa: E402


def _stack() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip


def test_the_statistics_are_the_batchs_and_nothing_else_moves():
    model, x = _stack(), torch.randn(64, 1, 20)
    model[4].running_mean.fill_(3.0)  # stale statistics, as a pruned producer leaves them
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    seen = {}
    model[4].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach().clone()))
    out = adapted_batchnorm(model, x)
    assert out is model and not model.training
    batch = seen["x"]
    assert torch.allclose(model[4].running_mean, batch.mean(dim=(0, 2)), atol=1e-5)
    assert torch.allclose(model[4].running_var, batch.var(dim=(0, 2), unbiased=True), rtol=1e-4, atol=1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_a_model_without_batchnorm_is_left_as_it_is():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert adapted_batchnorm(model, torch.randn(16, 8)) is model and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_pruned_conv_drifts_less_once_the_statistics_after_it_are_the_students():
    """Keeping half of the first conv's channels shifts what the second conv's BatchNorm sees; with the
    teacher's statistics the student drifts further from the teacher than with its own."""
    teacher, x = _stack().eval(), torch.randn(128, 1, 20)
    with torch.no_grad():
        for bn in (teacher[1], teacher[4]):  # the teacher's statistics: its own, as after training
            bn.momentum = None
        teacher.train()
        teacher(x)
        teacher.eval()
        ref = teacher(x)
        student = decompose(teacher, {"0": {"format": "prune", "rank": 8}}, example_input=x[:1]).eval()
        stale = kl(ref, student(x))
        adapted = kl(ref, adapted_batchnorm(student, x)(x))
    assert adapted < stale
