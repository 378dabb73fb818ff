"""The shipped plan's figures are the file's: the totals ``edgeopt bench`` counts, per layer the built model's."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import edgeopt  # noqa: E402 - after the importorskips
from edgeopt.compiler.decompose import decomposable_layers, plan_cost  # noqa: E402
from edgeopt.compiler.train import train as train_model  # noqa: E402
from edgeopt.pipeline.config import CompileConfig  # noqa: E402
from edgeopt.pipeline.record import Status, TrialRecord  # noqa: E402
from edgeopt.pipeline.ship import baseline_cost, export_verified, layer_table, ship, with_nodes  # noqa: E402
from edgeopt.report.build import artifact_entry  # noqa: E402
from edgeopt.runtime.bench import model_info  # noqa: E402
from edgeopt.runtime.targets import Target  # noqa: E402

QUICK = {"min_iters": 20, "min_time_s": 0.05, "max_iters": 500}


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(64, 128), torch.nn.Linear(128, 64), torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class ConvBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, 3)
        self.bn = torch.nn.BatchNorm1d(8)
        self.head = torch.nn.Linear(8 * 62, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def _task(model, splits, shape=(64,)):
    (Xtr, ytr), (Xva, yva), (Xte, yte) = splits
    train, val, test = ((X.reshape(-1, *shape), y) for X, y in splits)
    torch.manual_seed(0)
    train_model(model, train, val, epochs=4, lr=3e-3, seed=0, patience=None, restore_best=False)
    task = edgeopt.Task(model.eval(), train=train, val=val, test=test, metric="f1_macro", name="figures")
    return task


def test_a_low_rank_layer_after_a_pruned_one_is_counted_at_its_pruned_width(digits_splits, tmp_path):
    task = _task(MLP(), digits_splits)
    plan = {"fc1": {"format": "prune", "rank": 32}, "fc2": {"format": "lowrank", "rank": 4}}
    chosen = TrialRecord(number=3, status=Status.TRAINED, plan=plan)
    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=1, trial_epochs=1)
    shipped = ship(task.model, chosen, task, Target.load("host"), config)
    rows = {r["name"]: r for r in layer_table(decomposable_layers(task.model), plan, None, shipped.cost)}
    assert rows["fc1"]["params"] == 32 * 64 + 32
    assert rows["fc2"]["params"] == 4 * (32 + 64) + 64  # rank x (pruned in + out), the bias
    assert rows["fc2"]["dense_params"] == 128 * 64 + 64  # the input model's layer, for the "before" column
    assert rows["fc3"]["params"] == 10 * 64 + 10
    paper = plan_cost(task.model, plan, task.example_input)
    assert paper.layers["fc2"].params == 4 * (128 + 64) + 64  # the estimate, priced at fc2's old width
    info = model_info(shipped.path)
    assert (
        shipped.cost.params
        == info["params"]
        == shipped.measured.bench.params
        == sum(r["params"] for r in rows.values())
    )
    assert (shipped.cost.size_bytes, shipped.cost.nodes) == (shipped.path.stat().st_size, info["nodes"])


def test_batchnorm_folded_at_export_is_counted_as_bench_counts_it(digits_splits, tmp_path):
    task = _task(ConvBN(), digits_splits, shape=(1, 64))
    config = CompileConfig(out=tmp_path, final_bench=QUICK, final_epochs=1)
    plan = {"head": {"format": "lowrank", "rank": 4}}
    shipped = ship(
        task.model, TrialRecord(number=0, status=Status.TRAINED, plan=plan), task, Target.load("host"), config
    )
    torch_params = sum(p.numel() for p in task.model.parameters())
    assert shipped.cost.params == shipped.measured.bench.params == model_info(shipped.path)["params"]
    base_path = tmp_path / "baseline.onnx"
    export_verified(task.model, task, base_path, {})
    base = baseline_cost(plan_cost(task.model, {}, task.example_input), base_path)
    assert base.params == model_info(base_path)["params"] == torch_params - 2 * 8  # BatchNorm's scale and shift folded
    entry = with_nodes(artifact_entry, shipped.measured, shipped.cost, shipped.path, tmp_path, plan=plan)
    assert (entry["params"], entry["size_bytes"], entry["nodes"]) == (
        shipped.measured.bench.params,
        shipped.measured.bench.model_size_bytes,
        model_info(shipped.path)["nodes"],
    )


def test_a_trial_records_the_parameters_of_its_screened_file(digits_splits, tmp_path):
    from edgeopt.compiler.decompose import decompose
    from edgeopt.pipeline.record import ScreenResult
    from edgeopt.pipeline.screen import Screen

    task = _task(MLP(), digits_splits)
    plan = {"fc1": {"format": "prune", "rank": 32}, "fc2": {"format": "lowrank", "rank": 4}}
    screen = Screen(task, Target.load("host"), tmp_path / "cache.json")
    m = screen.measure(
        decompose(task.model, plan, example_input=task.example_input), plan, "fp32", {}, bench_kwargs=QUICK
    )
    assert m.params == (32 * 64 + 32) + (4 * (32 + 64) + 64) + (10 * 64 + 10)
    assert m.params < plan_cost(task.model, plan, task.example_input).params  # the estimate is an upper bound
    assert ScreenResult.from_dict(m.to_dict()) == m
    assert ScreenResult.from_dict({k: v for k, v in m.to_dict().items() if k != "params"}).params is None
