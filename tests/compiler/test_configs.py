from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.compile

pytest.importorskip("torch")

from edgeopt.compiler.formats import (  # noqa: E402  (imported after the importorskip guards)
    DenseConfig,
    LowRankConfig,
    TTConfig,
    balanced_factors,
    choose_modes,
    parse_config,
    resolve_ranks,
    validate_rank_spec,
)
from edgeopt.errors import InputError  # noqa: E402  (imported after the importorskip guards)


@pytest.mark.parametrize("bad", [0, -3, 1.0, 0.0, 1.5, True, "8", [2, 4, 1], [1, 0, 1], [1, 4], None])
def test_rank_spec_rejected_with_one_clear_line(bad):
    with pytest.raises(InputError, match=r"^TTConfig: rank: expected an int >= 1, .*, found .*$"):
        TTConfig(rank=bad)


def test_the_one_message_template():
    with pytest.raises(InputError) as err:
        TTConfig(rank=-3)
    assert str(err.value) == (
        "TTConfig: rank: expected an int >= 1, a float in (0, 1) (relative error), or a list "
        "of ints >= 1 that starts and ends with 1, found an integer -3"
    )


def test_rank_forms_normalize_in_one_place():
    assert validate_rank_spec(8, owner="X") == 8
    assert validate_rank_spec(0.1, owner="X") == 0.1
    assert validate_rank_spec([1, 4, 1], owner="X") == (1, 4, 1)
    # an int means every internal bond = min(int, bond max)
    assert resolve_ranks(16, [8, 64, 8], owner="X") == ((1, 8, 16, 8, 1), True)
    assert resolve_ranks((1, 99, 2, 1), [8, 64], owner="X") == ((1, 8, 2, 1), True)
    ranks, exact = resolve_ranks(0.05, [8, 64], owner="X")
    assert ranks == (1, 8, 64, 1) and not exact
    # a bond cannot carry more than its neighbours allow
    assert resolve_ranks(100, [100, 100], owner="X", shape=[2, 50, 2])[0] == (1, 2, 2, 1)


def test_plan_entries_parse_from_dicts_aliases_and_names():
    assert parse_config({"format": "tt", "rank": 4}) == TTConfig(rank=4)
    assert parse_config({"format": "lowrank", "rank": 0.1}) == LowRankConfig(rank=0.1)
    assert parse_config("dense") == DenseConfig()
    assert TTConfig(rank=4, in_modes=[8, 8]).to_dict() == {"format": "tt", "rank": 4, "in_modes": [8, 8]}


@pytest.mark.parametrize("fmt", ["lowrank", "tt"])
def test_ranks_is_a_deprecated_alias_of_the_one_rank_key(fmt):
    with pytest.warns(DeprecationWarning, match="'ranks' is deprecated: write 'rank'"):
        config = parse_config({"format": fmt, "ranks": [1, 4, 1]})
    assert config.rank == (1, 4, 1)
    assert config.to_dict() == {"format": fmt, "rank": [1, 4, 1]}  # always written under the one key


@pytest.mark.parametrize(
    "entry,match",
    [
        (
            {"format": "svd"},
            r"^plan\['fc1'\]: format: expected one of 'dense', 'lowrank', 'tt', 'prune', found a string 'svd'$",
        ),
        ({"rank": 3}, r"^plan\['fc1'\]: format: expected one of .*, found nothing$"),
        (
            {"format": "lowrank", "rank": -3},
            r"^LowRankConfig, layer 'fc1': rank: expected an int >= 1, .*, found an integer -3$",
        ),
        (
            {"format": "lowrank", "rank": 3, "alpha": 1},
            r"^LowRankConfig, layer 'fc1': alpha: expected one of \['rank'\]",
        ),
        ({"format": "tt", "rank": 3, "ranks": 3}, "given once"),
        ({"format": "tt", "rank": 3, "in_modes": [8, 8], "out_modes": [4, 4, 4]}, "as many modes"),
        ({"format": "tt", "rank": 3, "in_modes": [0, 8]}, r"^TTConfig, layer 'fc1': in_modes: expected a list"),
    ],
)
def test_bad_plan_entries(entry, match):
    with pytest.raises(InputError, match=match):
        parse_config(entry, layer="fc1")


def test_balanced_factors():
    assert balanced_factors(1024, 2) == (32, 32)
    assert balanced_factors(4096, 3) == (16, 16, 16)
    assert balanced_factors(1000, 2) == (25, 40)
    assert balanced_factors(97, 2) is None


@pytest.mark.parametrize("n", [7, 97, 1009, 4099, 10, 2 * 997])
def test_bad_sizes_get_padded_modes(n):
    modes, why = choose_modes(n, 2)
    assert modes is not None, why
    assert n <= math.prod(modes) <= n * 1.25 + 2
    assert max(modes) / min(modes) <= 4


def test_unfactorable_size_gives_reason():
    modes, why = choose_modes(2, 2)
    assert modes is None and "no balanced factorization" in why
