"""Turns a ConfigDict section into a frozen dataclass, rejecting fields the dataclass lacks."""

import dataclasses


def from_mapping(cls, values, section: str):
  """`cls(**values)`, but an unknown key raises an error naming the section and allowed keys."""
  values = dict(values)
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"unknown {section} config fields {unknown}; allowed: {sorted(known)}")
  return cls(**values)


def check_int(section: str, name: str, value, *, minimum: int = 1):
  """ValueError naming `section.name` unless value is an int (not bool) >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{section}.{name} must be an integer >= {minimum}, got {value!r}")


def check_open_interval(section: str, name: str, value, low: float, high: float = float("inf")):
  """ValueError naming `section.name` unless low < value < high (NaN fails)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
    raise ValueError(f"{section}.{name} must be a number in ({low}, {high}), got {value!r}")


def check_choice(section: str, name: str, value, choices):
  if value not in choices:
    raise ValueError(f"{section}.{name} must be one of {tuple(choices)}, got {value!r}")
