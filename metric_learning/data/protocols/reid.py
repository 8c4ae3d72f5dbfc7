"""Person re-identification: Market-1501, DukeMTMC-reID and MSMT17, single-query.

As in Zheng et al. 2015, "Scalable Person Re-identification: A Benchmark":
labels are the dataset's person ids (not renumbered) and ``cameras`` are set;
see :mod:`metric_learning.data.protocols` for each layout and split size.
"""

from __future__ import annotations

import os
import re

from metric_learning.data.files import ImageFiles
from metric_learning.data.protocols._common import _files
from metric_learning.data.protocols._common import _int
from metric_learning.data.protocols._common import _is_image
from metric_learning.data.protocols._common import _need_dir
from metric_learning.data.protocols._common import _read_table

_REID_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_REID_FOLDERS = (("train", "bounding_box_train"), ("query", "query"),
                 ("gallery", "bounding_box_test"))


def _reid_folders(root: str, dataset: str, example: str, archive: str
                  ) -> dict[str, ImageFiles]:
  """Market-1501 / DukeMTMC-reID: ids and cameras parsed from ``PPPP_cC...`` file names."""
  layout = (f"ROOT/bounding_box_train/, ROOT/bounding_box_test/ and ROOT/query/ holding "
            f"images named like {example}, as extracted from {archive}")
  out = {}
  for split, folder in _REID_FOLDERS:
    directory = _need_dir(os.path.join(root, folder), layout)
    with os.scandir(directory) as entries:
      names = sorted(e.name for e in entries if e.is_file() and _is_image(e.name))
    kept, pids, cams = [], [], []
    for name in names:
      match = _REID_NAME.match(name)
      if match is None:
        raise ValueError(f"{os.path.join(directory, name)!r}: expected an image named like "
                         f"{example} (person id, then _c and the camera).")
      pid = int(match.group(1))
      if split == "train" and pid <= 0:     # junk (-1) and distractors (0) are never trained on
        continue
      kept.append(name)
      pids.append(pid)
      cams.append(int(match.group(2)))
    out[split] = _files(f"{dataset}/{split}", directory, kept, pids, cameras=cams)
  return out


def market1501(root: str) -> dict[str, ImageFiles]:
  """Market-1501: ``train``, ``query`` and ``gallery`` from their folders.

  File names such as ``0002_c1s1_000451_03.jpg`` give the person id (label)
  and the camera (``c1`` → 1). ``gallery`` is ``bounding_box_test/`` with its
  junk images (id -1) and distractors (id 0) kept, as the evaluation protocol
  needs them; ``train`` never holds ids <= 0. Files are in sorted order;
  hidden files (``.``/``__`` prefixed) and non-images are skipped.

  Args:
    root: the extracted ``Market-1501-v15.09.15/`` folder.

  Returns:
    ``{"train", "query", "gallery"}`` :class:`ImageFiles` with ``cameras``.

  Example:
    >>> splits = market1501("/data/Market-1501-v15.09.15")  # doctest: +SKIP
    >>> [len(splits[s]) for s in ("train", "query", "gallery")]  # doctest: +SKIP
    [12936, 3368, 19732]
  """
  return _reid_folders(root, "market1501", "0002_c1s1_000451_03.jpg",
                       "Market-1501-v15.09.15.zip")


def dukemtmc(root: str) -> dict[str, ImageFiles]:
  """DukeMTMC-reID: ``train``, ``query`` and ``gallery`` from their folders.

  The layout and rules of :func:`market1501`, with file names such as
  ``0001_c2_f0046182.jpg`` (person 1, camera 2).

  Args:
    root: the extracted ``DukeMTMC-reID/`` folder.

  Returns:
    ``{"train", "query", "gallery"}`` :class:`ImageFiles` with ``cameras``.

  Example:
    >>> splits = dukemtmc("/data/DukeMTMC-reID")  # doctest: +SKIP
    >>> [len(splits[s]) for s in ("train", "query", "gallery")]  # doctest: +SKIP
    [16522, 2228, 17661]
  """
  return _reid_folders(root, "dukemtmc", "0001_c2_f0046182.jpg", "DukeMTMC-reID.zip")


_MSMT_LAYOUT = ("ROOT/list_train.txt, ROOT/list_val.txt, ROOT/list_query.txt and "
                "ROOT/list_gallery.txt (rows '<path> <person id>') with images under "
                "ROOT/train/ and ROOT/test/, as extracted from MSMT17_V1.tar.gz")


def msmt17(root: str, *, use_val: bool = True) -> dict[str, ImageFiles]:
  """MSMT17 (V1 layout): ``train``, ``query`` and ``gallery`` from its list files.

  Rows read ``0000/0000_000_01_0303morning_0015_0.jpg 0``: a path under
  ``train/`` (``list_train.txt``, ``list_val.txt``) or ``test/``
  (``list_query.txt``, ``list_gallery.txt``) and the person id. The camera is
  the file name's third field (``01`` → 1). As is common (Wei et al. 2018
  report on the 32,621 images of both), ``train`` is ``list_train.txt``
  followed by ``list_val.txt``. Train and test ids are numbered separately,
  and are kept as given.

  Args:
    root: the extracted ``MSMT17_V1/`` folder (V2's ``mask_train_v2/`` and
      ``mask_test_v2/`` image folders are used when ``train/`` and ``test/`` are
      absent).
    use_val: append ``list_val.txt`` to ``train``; False trains on
      ``list_train.txt`` alone (30,248 images).

  Returns:
    ``{"train", "query", "gallery"}`` :class:`ImageFiles` with ``cameras``.

  Example:
    >>> splits = msmt17("/data/MSMT17_V1")  # doctest: +SKIP
    >>> [len(splits[s]) for s in ("train", "query", "gallery")]  # doctest: +SKIP
    [32621, 11659, 82161]
  """
  if not isinstance(use_val, bool):
    raise TypeError(f"use_val must be a bool; got {use_val!r}.")
  folders = {}
  for part, v2 in (("train", "mask_train_v2"), ("test", "mask_test_v2")):
    folders[part] = os.path.join(root, part)
    if not os.path.isdir(folders[part]) and os.path.isdir(os.path.join(root, v2)):
      folders[part] = os.path.join(root, v2)
  lists = {"train": ["list_train.txt"] + (["list_val.txt"] if use_val else []),
           "query": ["list_query.txt"], "gallery": ["list_gallery.txt"]}
  out = {}
  for split, files in lists.items():
    base = folders["train" if split == "train" else "test"]
    paths, pids, cams = [], [], []
    for file in files:
      path = os.path.join(root, file)
      for number, (image, pid) in _read_table(path, _MSMT_LAYOUT, ("path", "pid")):
        fields = os.path.basename(image).split("_")
        if len(fields) < 3 or not fields[2].isdigit():
          raise ValueError(f"{path!r}, line {number}: expected a file name like "
                           f"0000_000_01_0303morning_0015_0.jpg (camera third); got {image!r}.")
        paths.append(image)
        pids.append(_int(pid, path, number, "the person id", minimum=0))
        cams.append(int(fields[2]))
    out[split] = _files(f"msmt17/{split}", base, paths, pids, cameras=cams)
  return out
