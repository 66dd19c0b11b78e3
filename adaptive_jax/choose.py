"""Choosing the candidate with the lowest score, where a NaN score never wins.

Python's `min(items, key=...)` keeps a NaN that comes first (every comparison with NaN is
False), so a diverged candidate would be chosen over finite ones. `lowest` ranks NaN last:

  lowest(["a", "b"], {"a": nan, "b": 0.3}.get, what="methods")  ->  "b"

Ties keep the first, as `min` does; +inf ranks after finite scores, before NaN.
"""

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def lowest(items: Iterable[T], score: Callable[[T], float], *, what: str) -> T:
  """The item with the lowest score, NaN scores last; raises naming `what` and the items if
  there are none or every score is NaN."""
  items = list(items)
  scores = [float(score(item)) for item in items]
  finite = [i for i, s in enumerate(scores) if not math.isnan(s)]
  if not finite:
    listed = ", ".join(f"{item!r}: {s}" for item, s in zip(items, scores))
    raise ValueError(f"no {what} to choose from: every score is NaN ({listed})" if items
                     else f"no {what} to choose from: none given")
  return items[min(finite, key=lambda i: scores[i])]
