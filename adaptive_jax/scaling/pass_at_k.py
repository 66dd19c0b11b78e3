"""Curves of fixed-N methods read off a pool of N samples per question.

`unbiased_pass_at_k` is the closed form for a perfect selector; `random_order_curve` runs any
selector on the first k samples of random orders of each pool. Letters: Q questions, N pool
samples, K the ks of a curve.
"""

from typing import Callable

import numpy as np

from adaptive_jax.typed_config import check_integer


def unbiased_pass_at_k(correct_QxN, k: int) -> np.ndarray:
  """pass_Q (float64): P(some of k samples drawn without replacement is correct), per question.

  Chen et al. (2021): 1 - C(n - c, k) / C(n, k), with c correct of n, computed as
  1 - prod_{j = n - c + 1}^{n} (1 - k / j); the product has the factor 0 at j = k when
  n - c < k, which gives exactly 1.
  """
  correct_QxN = np.asarray(correct_QxN)
  if correct_QxN.ndim != 2 or correct_QxN.shape[1] == 0:
    raise ValueError(f"correct_QxN must be 2-D with N >= 1 samples, got shape {correct_QxN.shape}")
  if not np.isin(correct_QxN, (0, 1)).all():
    raise ValueError("correct_QxN must hold booleans or 0/1")
  n = correct_QxN.shape[1]
  k = check_integer("k", k, minimum=1, maximum=n)
  c_Q = correct_QxN.astype(np.int64).sum(1)
  j_N = np.arange(1, n + 1)
  factor_QxN = np.where(j_N[None, :] > (n - c_Q)[:, None], 1 - k / j_N[None, :], 1.0)
  return 1 - factor_QxN.prod(1)


def random_orders(num_questions: int, n: int, *, orders: int, seed: int):
  """Yields `orders` order_QxN: one random permutation of every question's n pool slots each,
  from np.random.default_rng(seed). Every random-order curve draws its orders here."""
  rng = np.random.default_rng(seed)
  for _ in range(orders):
    yield np.argsort(rng.random((num_questions, n)), axis=1)


def random_order_curve(answer_fn: Callable[[np.ndarray], np.ndarray], gold_Q, n: int, ks, *,
                       orders: int, seed: int) -> np.ndarray:
  """accuracy_KxQ (float64): a fixed-k method's accuracy, averaged over random pool orders.

  Each of `orders` rounds draws one random permutation of every question's n pool slots
  (from np.random.default_rng(seed)); for every k in ks, answer_fn(slots_QxK) gets the pool
  slots of the first k samples in that order (int, row i for question i) and returns
  answer_Q, scored as answer_Q == gold_Q. The same permutations serve every k, so the k
  samples are nested as k grows. answer_fn closes over the pool (answers, scores, ...).
  """
  gold_Q = np.asarray(gold_Q)
  if gold_Q.ndim != 1 or gold_Q.size == 0:
    raise ValueError(f"gold_Q must be a non-empty 1-D array, got shape {gold_Q.shape}")
  n = check_integer("n", n)
  ks = [check_integer("ks", k, maximum=n) for k in np.atleast_1d(np.asarray(ks))]
  if not ks:
    raise ValueError("ks must hold at least one k in [1, n]")
  orders = check_integer("orders", orders)
  seed = check_integer("seed", seed, minimum=0)
  q = len(gold_Q)
  correct_KxQ = np.zeros((len(ks), q))
  for slots_QxN in random_orders(q, n, orders=orders, seed=seed):
    for row, k in enumerate(ks):
      answer_Q = np.asarray(answer_fn(slots_QxN[:, :k]))
      if answer_Q.shape != (q,):
        raise ValueError(f"answer_fn must return answer_Q of shape ({q},), got {answer_Q.shape}")
      correct_KxQ[row] += answer_Q == gold_Q
  return correct_KxQ / orders
