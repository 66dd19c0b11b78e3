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
