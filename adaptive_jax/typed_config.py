"""Turns a ConfigDict section into a frozen dataclass; the value checks every module shares.

`check_*` raise a ValueError naming the field (`section.name`, or an argument's name) and the
values it allows; `is_*` are their predicates, for checks whose message says more.
"""

import dataclasses

import numpy as np


def from_mapping(cls, values, section: str):
  """`cls(**values)`, but an unknown key raises an error naming the section and allowed keys."""
  values = dict(values)
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"unknown {section} config fields {unknown}; allowed: {sorted(known)}")
  return cls(**values)


def is_integer(value) -> bool:
  """A Python or NumPy integer; bools are not (True would pass as 1)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
  """A Python or NumPy real number, not a bool (NaN passes: compare it to reject it)."""
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
      value, (bool, np.bool_))


def check_integer(name: str, value, *, minimum: int = 1, maximum: int | None = None) -> int:
  """`value` as an int; ValueError naming `name` unless an integer in [minimum, maximum]."""
  if not is_integer(value) or value < minimum or (maximum is not None and value > maximum):
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
  return int(value)


def check_number(name: str, value, low: float, high: float = float("inf")) -> float:
  """`value` as a float; ValueError naming `name` unless low < value < high (NaN fails)."""
  if not is_number(value) or not low < value < high:
    raise ValueError(f"{name} must be a number in ({low}, {high}), got {value!r}")
  return float(value)


def check_int(section: str, name: str, value, *, minimum: int = 1) -> int:
  """`check_integer` for the config field `section.name`."""
  return check_integer(f"{section}.{name}", value, minimum=minimum)


def check_open_interval(section: str, name: str, value, low: float,
                        high: float = float("inf")) -> float:
  """`check_number` for the config field `section.name`."""
  return check_number(f"{section}.{name}", value, low, high)


def check_choice(section: str, name: str, value, choices):
  if value not in choices:
    raise ValueError(f"{section}.{name} must be one of {tuple(choices)}, got {value!r}")
