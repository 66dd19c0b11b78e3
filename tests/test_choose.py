"""choose.lowest: NaN never wins, against a hand-computed choice."""

import math

import pytest

from adaptive_jax.choose import lowest

NAN = math.nan


def test_builtin_min_keeps_a_leading_nan():  # the bug `lowest` exists for
  assert math.isnan(min([NAN, 0.2, 0.1]))


@pytest.mark.parametrize("scores, expected", [
    ([NAN, 0.2, 0.1], 2),
    ([0.3, NAN, 0.1, NAN], 2),
    ([NAN, math.inf, 0.5], 2),
    ([NAN, math.inf], 1),
    ([0.1, 0.1], 0),  # ties keep the first, as min does
])
def test_lowest_ranks_nan_last(scores, expected):
  assert lowest(range(len(scores)), scores.__getitem__, what="candidates") == expected


def test_lowest_of_tuples_as_the_calibration_study_uses_it():
  candidates = [(NAN, {"lr": 1.0}), (0.07, {"lr": 0.01}), (0.09, {"lr": 0.1})]
  assert lowest(candidates, lambda c: c[0], what="calibration candidates")[1] == {"lr": 0.01}


def test_all_nan_raises_naming_the_candidates():
  with pytest.raises(ValueError, match=r"calibration candidates.*'a': nan.*'b': nan"):
    lowest(["a", "b"], lambda _: NAN, what="calibration candidates")
  with pytest.raises(ValueError, match="no methods to choose from: none given"):
    lowest([], lambda _: 0.0, what="methods")
