"""The shared value checks: one rule, each caller's error class and a one-line message."""

from __future__ import annotations

import numpy as np
import pytest

from kdcache import losses
from kdcache.errors import LossConfigError, RecipeError, SpecError
from kdcache.validate import (
    Invalid,
    check,
    choice,
    flag,
    fraction,
    int_in,
    non_negative,
    non_negative_int,
    optional,
    pair,
    positive,
    positive_int,
)
from kdcache.views import Recipe, view_generator


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (positive, [(2, 2.0), (np.float32(0.5), 0.5)], [0, -1.0, True, "1", float("inf"), float("nan")]),
        (non_negative, [(0, 0.0), (3.5, 3.5)], [-0.1, False, None]),
        (fraction, [(0, 0.0), (1, 1.0), (0.25, 0.25)], [1.01, -0.01, True]),
        (positive_int, [(1, 1), (np.int64(7), 7)], [0, 1.0, True]),
        (non_negative_int, [(0, 0)], [-1, 0.0, np.bool_(True)]),
        (int_in(0, 255), [(255, 255)], [256, -1]),
        (flag, [(True, True)], [1, "false"]),
        (choice("a", "b"), [("a", "a")], ["c", None]),
        (optional(positive), [(None, None), (1, 1.0)], [0]),
        (pair(positive, "a pair"), [((1, 2), [1.0, 2.0])], [(1,), (1, 0), "ab"]),
    ],
)
def test_parsers_normalise_good_values_and_refuse_bad_ones(parse, good, bad):
    for value, expected in good:
        out = parse(value)
        assert out == expected and type(out) is type(expected)
    for value in bad:
        with pytest.raises(Invalid, match="^must "):
            parse(value)


def test_check_raises_the_callers_error_in_one_line():
    with pytest.raises(SpecError) as info:
        check(non_negative_int, -3, SpecError, "seed")
    assert str(info.value) == "seed=-3 must be a non-negative integer"


def test_views_and_losses_share_the_same_rule():
    # The same value is refused by the same check, each in its own words and class.
    with pytest.raises(RecipeError, match=r"horizontal_flip\): p=True must be a number$"):
        Recipe.from_dict({"name": "r", "ops": [{"name": "horizontal_flip", "configuration": {"p": True}}]})
    with pytest.raises(LossConfigError, match=r"^kd: kd_weight must be a number, got True\.$"):
        losses.spec("kd").resolve({"kd_weight": True})
    with pytest.raises(RecipeError, match=r"p=1.5 must be in \[0, 1\]$"):
        Recipe.from_dict({"name": "r", "ops": [{"name": "horizontal_flip", "configuration": {"p": 1.5}}]})
    with pytest.raises(SpecError, match=r"^view=-1 must be a non-negative integer$"):
        view_generator(0, 0, -1)
