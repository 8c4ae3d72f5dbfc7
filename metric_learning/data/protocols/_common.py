"""Shared readers: every protocol reads its files through these, so the errors read alike.

A missing file raises FileNotFoundError naming the path and the expected
layout; a malformed line raises ValueError naming the file and the line number.
Hidden entries (``.`` or ``__`` prefixed) are never data.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from metric_learning.data import datasets
from metric_learning.data.files import ImageFiles


def _hidden(name: str) -> bool:
  """Never data: ``.DS_Store``, ``._x.jpg`` (macOS), ``.ipynb_checkpoints``, ``__MACOSX``."""
  return name.startswith((".", "__"))


def _is_image(name: str) -> bool:
  return not _hidden(name) and name.lower().endswith(datasets.IMAGE_SUFFIXES)


def _need_file(path: str, layout: str) -> str:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path!r} not found; expected {layout}.")
  return path


def _need_dir(path: str, layout: str) -> str:
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path!r} not found; expected {layout}.")
  return path


def _read_table(path: str, layout: str, columns: Sequence[str], *, header: bool = False,
                skip: int = 0) -> list[tuple[int, list[str]]]:
  """``(line number, fields)`` of a whitespace-separated text table, blank lines skipped.

  ``skip`` lines are left to the caller; with ``header`` the next line must
  name ``columns``. Every other line must have ``len(columns)`` fields.
  """
  with open(_need_file(path, layout), encoding="utf-8") as f:
    lines = f.read().splitlines()
  start = skip
  if header:
    got = lines[skip].split() if len(lines) > skip else []
    if got != list(columns):
      raise ValueError(f"{path!r}, line {skip + 1}: expected the header "
                       f"{' '.join(columns)!r}; got {' '.join(got)!r}.")
    start += 1
  rows = []
  for number, line in enumerate(lines[start:], start + 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != len(columns):
      raise ValueError(f"{path!r}, line {number}: expected {len(columns)} fields "
                       f"({' '.join(columns)}); got {line.strip()!r}.")
    rows.append((number, fields))
  return rows


def _int(token: str, path: str, number: int, what: str, *, minimum: int | None = None) -> int:
  try:
    value = int(token)
  except ValueError:
    value = None
  if value is None or (minimum is not None and value < minimum):
    bound = "" if minimum is None else f" >= {minimum}"
    raise ValueError(f"{path!r}, line {number}: {what} must be an integer{bound}; "
                     f"got {token!r}.")
  return value


def _id_table(path: str, layout: str, what: str) -> tuple[dict[int, str], dict[int, int]]:
  """``"<id> <value>"`` rows (CUB's files): ``{id: value}`` and ``{id: line number}``."""
  values, lines = {}, {}
  for number, (key, value) in _read_table(path, layout, ("id", what)):
    key = _int(key, path, number, "the id", minimum=1)
    if key in values:
      raise ValueError(f"{path!r}, line {number}: id {key} repeats line {lines[key]}.")
    values[key], lines[key] = value, number
  return values, lines


def _files(name: str, base: str, relative: Sequence[str], labels: Sequence[int], *,
           cameras: Sequence[int] | None = None,
           class_names: Sequence[str] | None = None) -> ImageFiles:
  paths = np.array([os.path.join(base, p) for p in relative], dtype=str)
  return ImageFiles(paths, np.asarray(labels, np.int32),
                    None if cameras is None else np.asarray(cameras, np.int32),
                    name=name, class_names=None if class_names is None else tuple(class_names))
