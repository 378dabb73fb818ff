"""Every benchmark, registered once with the question it answers and the parameters of its full and
quick runs. The runner imports a benchmark's module only to run it, so listing is instant.

``length``: the full run's length on the shared 2-core host where it was last timed (blank: not timed).
"""

from __future__ import annotations

from benchmarks.suite import Benchmark

HOST_1T = "benchmarks/host-1t.toml"  # relative: the runner runs from the repository root
ARCHITECTURES = "resnet8,mobilenet,vit,cnn1d"

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "edgeopt_vs_baselines_on_examples",
        "On the bundled examples, does edgeopt's plan beat what a user would otherwise ship (dense, onnxruntime "
        "int8, uniform-rank SVD/TT), in latency at equal quality?",
        "benchmarks.edgeopt_vs_baselines",
        params={"examples": "digits-mlp,digits-cnn,imbalanced", "models": "", "refusal": True, "wide": True}
        | {"trials": None, "timeout": None, "time_budget": None, "seed": 0},
        quick={"examples": "digits-mlp", "wide": False, "trials": 4, "timeout": 20.0},
        length="~10 min",
    ),
    Benchmark(
        "edgeopt_vs_baselines_on_architectures",
        "On real architectures at half the dense p95, is edgeopt's plan faster than dense, int8 and uniform "
        "SVD/TT/pruning at equal quality, and is a budget below the floor refused?",
        "benchmarks.edgeopt_vs_baselines",
        params={"examples": "", "models": ARCHITECTURES, "refusal": True, "wide": False}
        | {"trials": None, "timeout": None, "time_budget": None, "seed": 0},
        quick={"models": "cnn1d", "refusal": False, "trials": 3, "timeout": 20.0},
        length="~25 min",
    ),
    Benchmark(
        "plans_stable_under_load",
        "With one core busy, does every repeat of the demo and of each architecture's compile give the same "
        "refusal or acceptance, and shipped plans whose p50 are within 10 % of each other?",
        "benchmarks.plans_stable_under_load",
        params={"models": "demo," + ARCHITECTURES, "repeats": 5}
        | {"trials": None, "timeout": None, "epochs": None, "final_epochs": None, "same_budgets": None}
        | {"settings": "compile"},
        quick={"models": "demo", "repeats": 2, "trials": 4, "timeout": 20.0},
        length="hours (25 compiles)",
    ),
    Benchmark(
        "search_beats_random",
        "Does edgeopt's search reach its best feasible score in less wall time than Optuna's random search "
        "with the same space, screen and warm start?",
        "benchmarks.search_beats_random",
        params={"models": "digits-mlp,resnet8", "seeds": "0,1,2", "timeout": 40.0, "resnet8_epochs": 2}
        | {"tolerance": 0.005, "shared_warm_start": True},
        quick={"models": "digits-mlp", "seeds": "0", "timeout": 15.0},
        length="~12 min",
    ),
    Benchmark(
        "search_goals_met",
        "Which of the search's goals (size, speed against dense and int8, search efficiency) do the results of "
        "edgeopt_vs_baselines_on_architectures and search_beats_random meet?",
        "benchmarks.search_goals_met",
        length="seconds (measures nothing)",
    ),
    Benchmark(
        "table_feedback_helps",
        "Does correcting the per-layer table from the search's screens give better-placed allocations than "
        "the table as built?",
        "benchmarks.table_feedback_helps",
        params={"models": "cnn1d,digits-cnn,resnet8,vit", "seed": 0, "search": {}},
        quick={"models": "digits-cnn", "search": {"trials": 3, "timeout": 15.0, "trial_epochs": 2, "final_epochs": 5}},
    ),
    Benchmark(
        "tables_stable_under_load",
        "With one core busy, do the per-layer latency tables' shares, and the knapsack's allocations of them at "
        "the same share of the dense latency, come out the same from build to build (rungs timed side by side "
        "in rounds, against one bench per rung)?",
        "benchmarks.tables_stable_under_load",
        params={"models": "resnet8,mobilenet", "builds": 3, "fractions": "0.4,0.5,0.6"},
        quick={"models": "cnn1d", "builds": 2},
    ),
    Benchmark(
        "layer_tables_add_up",
        "How long do the per-layer tables take to build, and do the isolated layers add up to the whole graph?",
        "benchmarks.layer_tables_add_up",
        params={"models": "resnet8,mobilenet,vit,cnn1d,digits-mlp"},
        quick={"models": "digits-mlp"},
        length="~3 min",
    ),
    Benchmark(
        "demo_against_dense",
        "What does `edgeopt demo` ship against the dense input model (parameters, size, p50/p95 on the target, "
        "peak memory, test F1, the gate's verdict), as the README's demo table shows it?",
        "benchmarks.demo_against_dense",
        params={"extra": ""},
        quick={"extra": "--trials 4 --time-budget 120"},
        length="~3 min",
    ),
    Benchmark(
        "int8_rungs_per_layer",
        "Per layer on this host, is a static-int8 rung faster than its fp32 rung inside a run of int8 layers, and "
        "how do dense fp32, every layer int8 and onnxruntime's whole-model int8 compare as whole graphs?",
        "benchmarks.int8_rungs_per_layer",
        params={"models": "digits-cnn,cnn1d"},
        quick={"models": "digits-cnn"},
        length="~5 min",
    ),
    Benchmark(
        "default_compile_in_10_minutes",
        "Does `edgeopt compile` with every default finish a ~1M-parameter, ~40-layer model within 10 minutes on "
        "2 cores, budgets met?",
        "benchmarks.default_compile_in_10_minutes",
        params={"model": "mobilenet", "latency_ms": 0.35, "extra": "", "existing": None},
        quick={"model": "cnn1d", "latency_ms": 0.5, "extra": "--trials 2 --epochs 1 --final-epochs 1"},
        length="~10 min",
    ),
    Benchmark(
        "architecture_costs",
        "What does the compiler see in each bundled architecture (decomposable layers, what is left alone), and "
        "what do training and ONNX export cost?",
        "benchmarks.architecture_costs",
        params={"only": ARCHITECTURES, "threads": 2, "epochs": None},
        quick={"only": "cnn1d", "epochs": 1},
    ),
    Benchmark(
        "int8_pays_on_plans",
        "Does onnxruntime's int8 speed up edgeopt's decomposed plans as it speeds up the dense models?",
        "benchmarks.int8_pays_on_plans",
        params={"models": "resnet8"},
        quick={"models": "cnn1d"},
    ),
    Benchmark(
        "int8_linear_dynamic",
        "Is a Linear layer's int8 faster static QDQ or dynamic, with every layer int8, beside ORT's whole-graph int8?",
        "benchmarks.int8_linear_dynamic",
        params={"models": "vit,digits-mlp,cnn1d", "rounds": 9, "block": 100},
        quick={"models": "digits-mlp", "rounds": 2, "block": 20},
    ),
    Benchmark(
        "final_epoch_choice",
        "Which epoch of the final fine-tune should ship: the best on validation, the schedule's last, or the one "
        "whose window of epochs around it has the best mean validation score?",
        "benchmarks.final_epoch_choice",
        params={"models": "cnn1d,digits-cnn,digits-mlp,vit", "ratios": "0.5", "seeds": "3,4,5", "epochs": 80},
        quick={"models": "digits-mlp", "ratios": "0.5", "seeds": "0", "epochs": 3},
        length="~12 min (seeds 3-5: not those the window was chosen on)",
    ),
    Benchmark(
        "fallback_to_trial",
        "When the final fine-tune reads below the selected trial on validation, does shipping the trial's student "
        "(0.5 pt tolerance) or only a McNemar-significant one give the better test score?",
        "benchmarks.fallback_to_trial",
        params={"models": "cnn1d,digits-cnn,digits-mlp,vit", "ratios": "0.5", "seeds": "6,7,8,9"}
        | {"trial_epochs": 12, "epochs": 80},
        quick={"models": "digits-mlp", "ratios": "0.5", "seeds": "0", "trial_epochs": 2, "epochs": 3},
    ),
    Benchmark(
        "factorized_layer_speedup",
        "How much faster is one layer low-rank or tensor-train than dense in onnxruntime, and how far is each "
        "from its roofline floor?",
        "benchmarks.factorized_layer_speedup",
        params={"layers": "all", "budget_s": 0.4},
        quick={"layers": "Linear 256x256,Conv2d 64->64 3x3 @32x32", "budget_s": 0.05},
    ),
    Benchmark(
        "distilled_mlp_keeps_f1",
        "How much test F1 does the seed-size digits MLP lose when fc1 goes tensor-train and fc2 low-rank, "
        "then distilled?",
        "benchmarks.distilled_mlp_keeps_f1",
        params={"tt_rank": 8, "lowrank": 32, "epochs": 40, "teacher_epochs": 60},
        quick={"epochs": 3, "teacher_epochs": 5},
    ),
    Benchmark(
        "harness_agrees_with_bare_loop",
        "Does edgeopt's bench harness distort what it measures (p50 within 5 % of a bare session.run loop, "
        "spread under 10 % over 5 runs)?",
        "benchmarks.harness_agrees_with_bare_loop",
        params={"min_time": 1.0, "min_iters": 200, "runs": 5},
        quick={"min_time": 0.2, "runs": 2},
    ),
    Benchmark(
        "predictor_error_on_this_host",
        "How far is the per-node roofline's prediction of this host's own latency from the measured p50 "
        "(goal: within 25 %)?",
        "benchmarks.predictor_error_on_this_host",
        params={"threads": 1, "min_time": 1.0},
        quick={"min_time": 0.2},
    ),
    Benchmark(
        "host_drift_common_mode",
        "Does this host's speed move for every model alike, so that a reference micro-model timed beside a "
        "measurement could take the window out of a prediction?",
        "benchmarks.host_drift_common_mode",
        params={"rounds": 60, "stretch": 5, "block_s": 0.03},
        quick={"rounds": 6, "stretch": 2},
        length="~1 min",
    ),
    Benchmark(
        "predictor_error_across_hosts",
        "Does a target's predicted latency depend on which host predicts it (goal: hosts agree within 10 %)?",
        "benchmarks.predictor_error_across_hosts",
        params={"target": "rpi4", "min_time": 2.0},
        quick={"min_time": 0.3},
    ),
    Benchmark(
        "gate_decides_under_load",
        "On a loaded host, does the sequential `gate --against` pass a model against itself and fail a 10 % "
        "slower one (19 of 20 each), and do the runtime tests stay green?",
        "benchmarks.gate_decides_under_load",
        params={"runs": 20, "test_runs": 10, "phase": "all", "target": HOST_1T, "cal_pairs": 40} | {"cal_time_s": 8.0},
        quick={"runs": 1, "test_runs": 0, "phase": "gate", "cal_pairs": 5, "cal_time_s": 0.5},
    ),
    Benchmark(
        "gate_false_alarms_and_detection",
        "How often does `gate --against` with its fixed defaults fail a model against itself, and how small a "
        "slowdown does it catch?",
        "benchmarks.gate_false_alarms_and_detection",
        params={"runs": 20, "target": HOST_1T, "variants": "+5%,+10%,+20%", "cal_pairs": 24, "cal_time_s": 6.0},
        quick={"runs": 1, "variants": "+20%", "cal_pairs": 5, "cal_time_s": 0.5},
    ),
    Benchmark(
        "ssh_measurement_overhead",
        "What does measuring through SSH add per measurement (goal ≤ 1 s), and does the device's p50 agree "
        "with the local one (within 10 %)?",
        "benchmarks.ssh_measurement_overhead",
        params={"n": 10, "rounds": 3, "min_time": 2.0},
        quick={"n": 2, "rounds": 1, "min_time": 0.3},
    ),
    Benchmark(
        "workers_scale",
        "Do 2 search workers evaluate ≥ 1.6× the plans of 1 in the same time, and what does a trial cost the "
        "storage (SQLite, PostgreSQL)?",
        "benchmarks.workers_scale",
        params={"seconds": 60.0, "trials": 200},
        quick={"seconds": 15.0, "trials": 20},
    ),
)

FRONTIER_MODELS = "digits-mlp,digits-cnn," + ARCHITECTURES
# The user's uniform-pruning ratios: issue 20's five, and every ratio edgeopt's own alternatives try
# (1 - edgeopt.search.alternatives.UNIFORM_KEEP): a compile that ships one of those must not win against a
# user who never tried it (decision 0119; tests/test_frontier_benchmark.py holds the two in step).
FRONTIER_RATIOS = "0.2,0.25,0.35,0.5,0.625,0.65,0.75,0.8,0.8125,0.875"
BENCHMARKS += (
    Benchmark(
        "frontier",
        "At 1/2, 1/3 and 1/4 of the dense p95 (1 thread), is edgeopt's compile never worse than the best of dense, "
        "ORT int8 and uniform torch-pruning ± int8 meeting the budget, and clearly better in half the cells?",
        "benchmarks.frontier",
        params={"models": FRONTIER_MODELS, "fractions": "1/2,1/3,1/4", "ratios": FRONTIER_RATIOS}
        | {"seeds": "0,1", "trials": None, "trial_epochs": None, "final_epochs": None, "time_budget_s": None}
        | {"rounds": 9, "block": 100, "reuse_alternatives": 0, "same_budgets": 0, "reuse_edgeopt": 0},
        quick={"models": "digits-mlp", "fractions": "1/3", "ratios": "0.25,0.5", "seeds": "0", "trials": 3}
        | {"trial_epochs": 2, "final_epochs": 3, "time_budget_s": 120.0, "rounds": 3, "block": 50},
        length="~10 h (36 compiles of ≤ 10 min, 60 distillations of 80 epochs: mobilenet's take 15 min each)",
    ),
)

REGISTRY: dict[str, Benchmark] = {b.name: b for b in BENCHMARKS}
