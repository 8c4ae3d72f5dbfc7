"""Face verification: Labeled Faces in the Wild with the fixed pairs of ``pairs.txt``.

Huang et al. 2007, http://vis-www.cs.umass.edu/lfw/ (View 2: 10 folds of 300
matched and 300 mismatched pairs).
"""

from __future__ import annotations

import os

import numpy as np

from metric_learning.data.files import ImageFiles
from metric_learning.data.files import VerificationPairs
from metric_learning.data.protocols._common import _files
from metric_learning.data.protocols._common import _int
from metric_learning.data.protocols._common import _need_file

_LFW_LAYOUT = ("ROOT/pairs.txt (first line '<folds> <pairs per fold>', then per fold the "
               "matched lines 'Name i j' and the mismatched lines 'Name1 i Name2 j') and "
               "ROOT/lfw/NAME/NAME_0001.jpg as extracted from lfw.tgz (or ROOT/NAME/... "
               "directly)")


def lfw(root: str) -> dict[str, ImageFiles]:
  """LFW verification: the fixed pairs of ``pairs.txt`` over one split ``test``.

  ``pairs.txt`` starts with ``<folds>\\t<n>`` (``10\\t300``); each fold then
  lists ``n`` matched pairs ``Name\\ti\\tj`` followed by ``n`` mismatched pairs
  ``Name1\\ti\\tName2\\tj`` (1-based image numbers). The split holds each image
  referenced by a pair once, sorted by (name, number); images live in
  ``ROOT/lfw/`` (``lfw-deepfunneled/`` or ``lfw_funneled/`` also accepted),
  else directly in ``ROOT``.

  Args:
    root: the folder holding ``pairs.txt`` and the extracted ``lfw/``.

  Returns:
    ``{"test": ImageFiles}``: label = the person's index in ``class_names``
    (the sorted names of the persons in the pairs), and ``pairs`` a
    :class:`VerificationPairs` in file order, ``fold`` 0-based.

  Example:
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "lfw"))
    >>> with open(os.path.join(root, "pairs.txt"), "w") as f:
    ...   _ = f.write("1\\t1\\nAnn\\t1\\t2\\nAnn\\t1\\tBob\\t1\\n")
    >>> test = lfw(root)["test"]
    >>> [os.path.basename(p) for p in test.paths], test.labels.tolist(), test.class_names
    (['Ann_0001.jpg', 'Ann_0002.jpg', 'Bob_0001.jpg'], [0, 0, 1], ('Ann', 'Bob'))
    >>> test.pairs.first.tolist(), test.pairs.second.tolist(), test.pairs.same.tolist()
    ([0, 0], [1, 2], [True, False])
  """
  path = _need_file(os.path.join(root, "pairs.txt"), _LFW_LAYOUT)
  with open(path, encoding="utf-8") as f:
    lines = [(n, line.split()) for n, line in enumerate(f.read().splitlines(), 1)
             if line.strip()]
  if not lines or len(lines[0][1]) != 2:
    raise ValueError(f"{path!r}, line 1: expected '<folds>\\t<pairs per fold>'; got "
                     f"{' '.join(lines[0][1]) if lines else 'an empty file'!r}.")
  folds = _int(lines[0][1][0], path, lines[0][0], "the number of folds", minimum=1)
  n = _int(lines[0][1][1], path, lines[0][0], "the pairs per fold", minimum=1)
  body = lines[1:]
  if len(body) != folds * 2 * n:
    raise ValueError(f"{path!r}, line 1: announces {folds} folds of {n} matched and {n} "
                     f"mismatched pairs ({folds * 2 * n} lines) but {len(body)} follow.")
  pairs = []
  for k, (number, fields) in enumerate(body):
    same = k % (2 * n) < n
    if len(fields) != (3 if same else 4):
      kind = "matched 'Name i j'" if same else "mismatched 'Name1 i Name2 j'"
      raise ValueError(f"{path!r}, line {number}: expected a {kind} pair (fold {k // (2 * n)}); "
                       f"got {' '.join(fields)!r}.")
    a = (fields[0], _int(fields[1], path, number, "the image number", minimum=1))
    b = ((fields[0], _int(fields[2], path, number, "the image number", minimum=1)) if same else
         (fields[2], _int(fields[3], path, number, "the image number", minimum=1)))
    pairs.append((a, b, same, k // (2 * n)))
  images = sorted({key for a, b, _, _ in pairs for key in (a, b)})
  index = {key: i for i, key in enumerate(images)}
  names = sorted({name for name, _ in images})
  label = {name: i for i, name in enumerate(names)}
  base = next((os.path.join(root, d) for d in ("lfw", "lfw-deepfunneled", "lfw_funneled")
               if os.path.isdir(os.path.join(root, d))), root)
  if base == root and not os.path.isdir(os.path.join(root, images[0][0])):
    raise FileNotFoundError(f"no image folder {os.path.join(root, 'lfw')!r} nor "
                            f"{os.path.join(root, images[0][0])!r}; expected {_LFW_LAYOUT}.")
  first, second, same, fold = (np.array(column) for column in zip(
      *((index[a], index[b], s, f) for a, b, s, f in pairs)))
  test = _files("lfw/test", base, [f"{name}/{name}_{i:04d}.jpg" for name, i in images],
                [label[name] for name, _ in images], class_names=names)
  return {"test": ImageFiles(test.paths, test.labels, name=test.name,
                             class_names=test.class_names,
                             pairs=VerificationPairs(first, second, same, fold))}
