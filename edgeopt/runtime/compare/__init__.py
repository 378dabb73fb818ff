"""``edgeopt gate NEW --against OLD``: is NEW slower, bigger or different than OLD?

Measurement
-----------
Both models are measured in one run, in pairs of blocks, counterbalanced: NEW OLD | OLD NEW |
NEW OLD | ...: every model runs right after the other, a linear drift (thermal, a neighbour
starting) adds the same to both sides over each two pairs, and neither model always runs first.

Here (a target measured or predicted on this host) a pair is ONE fresh child process that loads
both models and times them alternately, ``SUB_BLOCKS`` sub-blocks each, A B B A A B B A ... (A = the
pair's first model; ``_worker.run_ab``); a model's block is its sub-blocks' samples pooled. What a
fresh process brings (its allocator state, its core, the neighbours while it runs: on a loaded
2-core host a block's p95 moves by +-8-15 % from one process to the next) then falls on both sides
of the pair alike and cancels in its ratio, and a pair costs one process start instead of two. The
pairs stay independent (one process each), which is all the interval below assumes. Peak memory and
the per-node profile (a prediction's) need a process per model: they come from ``FRESH_PAIRS``
counterbalanced pairs of single-model blocks (the local backend: a fresh process with the target's
session options, warm-up, then a timed loop) measured first, whose latency is not used.

A remote target (the ssh backend uploads one model per job) keeps one fresh process per
block on the device: every block there is a single-model job, its latency paired as above and its
memory used too.

How many pairs: sequential (the default)
----------------------------------------
By default the run decides for itself how long to measure: it adds pairs until every
latency check is decided (PASS or FAIL; or any check FAILs) or a time cap (``max_time_s``, default
``DEFAULT_MAX_TIME_S``) is reached. A block is ``min_time_s / FIRST_LOOK`` long (the settings are
per model at the first look), and the verdict is looked at after 10, 16, 24, 36, 54, 82, 124, 186
pairs (``sequential_looks``): a group-sequential design with geometrically growing looks (x1.5,
even, so every look is counterbalanced), at most ``LOOKS`` = 8.

Repeated looks inflate error rates (optional stopping): checking a 95 % bound after every pair
would stop on the first lucky streak. Here alpha (= 1 - confidence) is spent across the looks
(Bonferroni alpha spending): each look but the final one spends ``alpha / ALPHA_SHARES`` (= alpha /
16: its bounds are at one-sided level 1 - alpha/16), the final look spends all alpha not yet spent
(at least 9/16 of it). The final look is the last scheduled one or, when the cap would be passed
before the next scheduled look, a look at the pairs measured so far. Which look is final, and how
many pairs a look has, depend on the schedule and elapsed time only, never on the ratios measured,
so the levels spent along any run sum to alpha, and by the union bound the chance that a bound
misses the true ratio at ANY look -- hence at the look where the run stopped -- is <= alpha. The
bounds reported are the stopping look's and hold at ``confidence`` whatever the stopping rule (for
each bound and check, as in the fixed design). Early looks catch clear cases cheaply; a close case
is decided at the final look, at nearly the fixed design's level. So a PASS or FAIL is as sound as
a fixed-size run's, and INCONCLUSIVE means "within the noise seen at the cap": the check says its
interval, pairs and seconds. A check that fails (size, outputs, memory) stops the run at that look
with the verdict FAIL; a latency ratio not yet decided then says so ("not decided: the run stopped
at the first look because outputs_close failed"), not that more time might decide it. ``pairs=N``
instead measures exactly N pairs and looks once at ``confidence`` (the fixed design,
``min_time_s / N`` per block).

The ratio and its interval
--------------------------
For a percentile q (the budget's, and the median) every pair i gives a ratio of its two blocks'
percentiles (nearest rank, as ``stats.percentile``)

    r_i = Q_q(NEW block i) / Q_q(OLD block i),        i = 1..n,

the estimate is their median, and its one-sided bounds at confidence c are order statistics of the
sorted ratios r_(1) <= ... <= r_(n) (the sign-test interval for a median):

    upper = r_(k), k the smallest rank with  P(Binomial(n, 1/2) <= k - 1) >= c,
    lower = r_(n + 1 - k),

because each r_i falls below the pairs' median ratio with probability 1/2 whatever the latency
distribution (``stats.order_statistic_bounds`` with q = 50). With c = 0.95: n = 16 gives
[r_(5), r_(12)], n = 10 gives [r_(2), r_(9)]; n >= 5 is needed for any bound.

Why this and not a bootstrap over pooled samples (tried first): samples within a block are not
independent (one process, one allocator, the same neighbours), so the block is the unit; and on a
shared machine a neighbour's burst makes one block several times slower. Pooled over blocks, one
such block moves a pooled p95 and a bootstrap's interval with it (same model against itself:
[0.15, 5.9] in one run here); in a ratio per pair it moves one r_i, which the median and the
order statistics shrug off. The interval is exact for any distribution, with no small-sample
correction; it assumes only that the pairs are independent and exchangeable.

Verdict, for each check with limit L = 1 + tolerance: PASS when the upper bound <= L, FAIL when the
lower bound > L, INCONCLUSIVE otherwise. A predicted target scales each side by its per-node
transfer factor (``predict``; constant per model), so the predicted ratio is the host ratio times
factor(NEW) / factor(OLD), and says ``predicted``; each side's predicted percentiles have this host's
stalls clipped first (``predict.predicted_samples``), as ``bench``'s do.

Also compared: peak memory (the blocks' median; PASS when every NEW block is within
(1 + tolerance) x every OLD block plus ``MEMORY_SLACK_MB``, FAIL when no NEW block is, else
INCONCLUSIVE), file size (exact) and output agreement (``agreement``).
"""

from __future__ import annotations

from edgeopt.runtime.checks import combine
from edgeopt.runtime.compare._design import (
    ALPHA_SHARES,
    DEFAULT_MAX_TIME_S,
    DEFAULT_PAIRS,
    FIRST_LOOK,
    FRESH_PAIRS,
    GROWTH,
    LOOKS,
    MEDIAN,
    MEMORY_SLACK_MB,
    MIN_PAIRS,
    SUB_BLOCKS,
    Tolerances,
    agreement_checks,
    look_confidence,
    memory_check,
    min_pairs,
    pair_ratios,
    parse_fraction,
    ratio_check,
    ratio_interval,
    sequential_looks,
)
from edgeopt.runtime.compare._plan import block_settings, run_blocks
from edgeopt.runtime.compare._result import Comparison, Side
from edgeopt.runtime.compare._run import compare, decided

__all__ = [
    "compare",
    "run_blocks",
    "Tolerances",
    "Side",
    "Comparison",
    "ratio_interval",
    "ratio_check",
    "parse_fraction",
    "combine",
    "pair_ratios",
    "min_pairs",
    "decided",
    "look_confidence",
    "sequential_looks",
    "DEFAULT_PAIRS",
    "MIN_PAIRS",
    "MEMORY_SLACK_MB",
    "DEFAULT_MAX_TIME_S",
    "LOOKS",
    "ALPHA_SHARES",
    "SUB_BLOCKS",
    "FRESH_PAIRS",
    "FIRST_LOOK",
    "GROWTH",
    "MEDIAN",
    "agreement_checks",
    "memory_check",
    "block_settings",
]
