"""Embed inputs with a finished run's encoder.

``python -m experiments.tools.embed --workdir=W --inputs=PATH --output=OUT.npz``

``PATH`` is either an ``.npz`` (array ``inputs`` ``[n, *input_shape]``, float or
uint8; optional integer ``labels`` ``[n]`` and class ``names``) or an image
folder: ``ROOT/CLASS_NAME/IMAGE.png`` (labelled by class folder) or
``ROOT/IMAGE.png`` (unlabelled). Images are resized to the model's ``H`` × ``W``
and converted to its channels (grayscale for a 1-channel model, RGB for 3);
hidden entries (``.ipynb_checkpoints/``, ``.DS_Store``) are skipped. A run
trained on image files (a streamed dataset such as ``cub200``) reads images the
way its evaluation did: its ``config.augment`` transform's evaluation views
(resize, centre crop, test-time flips / crops), the embeddings of an image's
views averaged. A run trained on arrays in memory whose ``config.augment``
changes its evaluation views (``size``, ``eval_resize``, ``tta``) takes them of
every row read (an ``.npz``'s rows at any height and width), as its evaluation
did.

``OUT.npz`` holds ``embeddings`` ``[n, dim]``, ``labels`` ``[n]`` (when known),
``names`` (a JSON object ``{"label": "class name"}``) and ``rows`` (each row's
file, relative to ``ROOT``, or its index). It is written atomically.

This module also holds what ``experiments.tools.enroll`` and ``experiments.tools.query``
share: reading inputs, loading the embedder, and ending a mistake in one line
(stderr, exit status 2) that names the flag.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable

import numpy as np
from absl import app
from absl import flags
from absl import logging

from metric_learning.data import datasets
from metric_learning.data import protocols
from metric_learning.data import sources
from metric_learning.training import embedder as embedder_lib
from metric_learning.training import rundir

IMAGE_MODES = {1: "L", 3: "RGB"}


class ToolError(Exception):
  """A mistake in a tool's arguments: one line naming the flag, no traceback."""


@dataclasses.dataclass(frozen=True)
class Inputs:
  """Rows to embed, as the model expects them.

  Attributes:
    inputs: ``[n, *input_shape]`` float32.
    labels: ``[n]`` int32, or None when the inputs are unlabelled.
    names: ``{label: class name}`` for every label present (empty when unlabelled).
    rows: ``[n]`` each row's file (relative to the folder) or ``"row i"``.
  """
  inputs: np.ndarray
  labels: np.ndarray | None
  names: dict[int, str]
  rows: list[str]

  def row_classes(self) -> list[str] | None:
    """Each row's class name, or None when the inputs are unlabelled."""
    if self.labels is None:
      return None
    return [self.names[int(label)] for label in self.labels]


def load_embedder(workdir: str) -> Callable[[np.ndarray], np.ndarray]:
  """``embedder.load_embedder`` whose failures name ``--workdir``."""
  if not os.path.isdir(workdir):
    raise ToolError(f"--workdir: no such directory {workdir!r}; give the --workdir of a "
                    "finished training run (python -m experiments.main --workdir=...).")
  try:
    embed = embedder_lib.load_embedder(workdir)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise ToolError(f"--workdir: {e}") from e
  transform, in_memory = workdir_transform(workdir)
  if transform is None:
    return embed

  def embed_views(inputs: np.ndarray) -> np.ndarray:
    """Rows ``[n, views, h, w, 3]`` (an image's evaluation views): their mean embedding."""
    if inputs.ndim != len(embed.input_shape) + 2:
      return embed(inputs)
    n, views = inputs.shape[:2]
    out = embed(inputs.reshape((n * views,) + inputs.shape[2:]))
    return out.reshape(n, views, -1).mean(axis=1)

  for attr in ("input_shape", "step", "identity"):
    setattr(embed_views, attr, getattr(embed, attr))
  embed_views.transform, embed_views.in_memory = transform, in_memory
  return embed_views


def workdir_transform(workdir: str):
  """``(transform, in_memory)``: the run's evaluation transform and whether it
  was trained on arrays in memory; ``(None, True)`` for a run on arrays whose
  transform leaves every row as it is (no resize, one view)."""
  config = rundir.RunDir(workdir).read_json(rundir.CONFIG)
  if config is None:
    return None, True
  kind = sources.kind(config.get("data", {}).get("name"))
  augment = sources.upgrade_augment(config.get("data", {}).get("name"),
                                    config.get("augment", {}))
  transform = kind.make_transform(augment)   # lists become tuples
  if kind is sources.Arrays and transform.size is None and not transform.changes_evaluation:
    return None, True
  return transform, kind is sources.Arrays


def read_run_inputs(path: str, embed, workdir: str, *, flag: str = "--inputs") -> Inputs:
  """:func:`read_inputs` for ``embed``, the :func:`load_embedder` of run
  ``workdir``: its input shape, class names and evaluation views."""
  return read_inputs(path, embed.input_shape, flag=flag, known_names=workdir_names(workdir),
                     transform=getattr(embed, "transform", None),
                     in_memory=getattr(embed, "in_memory", True))


def workdir_names(workdir: str) -> dict[int, str]:
  """The run's ``labels.json`` (``{label: class name}``), empty when absent."""
  path = rundir.RunDir(workdir).path(rundir.LABELS)
  if not os.path.isfile(path):
    return {}
  try:
    return datasets.load_label_names(path)
  except ValueError as e:
    raise ToolError(f"--workdir: {e}") from e


def read_inputs(path: str, input_shape: tuple[int, ...], *, flag: str = "--inputs",
                known_names: dict[int, str] | None = None, transform=None,
                in_memory: bool = False) -> Inputs:
  """An ``.npz`` or an image folder as rows of the model's ``input_shape``.

  Args:
    path: an ``.npz`` file or an image folder (see the module docstring).
    input_shape: what the model takes per row, e.g. ``(8, 8, 1)``.
    flag: the flag that named ``path``, for error messages.
    known_names: ``{label: name}`` used for an npz's labels when it has no
      ``names`` array (the run's ``labels.json``); other labels are named by
      their number.
    transform: the run's :class:`~metric_learning.data.transforms.Transform`
      (None: rows as read): rows are then each image's evaluation views
      ``[n, views, h, w, c]`` — of each decoded image (uint8) for a run on image
      files, of each row read (float32) for a run on arrays (``in_memory``).
    in_memory: ``transform`` is that of a run trained on arrays in memory.

  Returns:
    The rows with their labels and class names when known.

  Raises:
    ToolError: ``path`` is missing or unreadable, or its rows do not fit
      ``input_shape``.
  """
  if not os.path.exists(path):
    raise ToolError(f"{flag}: no such file or folder {path!r}; give an .npz (arrays inputs, "
                    "labels optional) or an image folder ROOT/CLASS_NAME/IMAGE.png.")
  # A run on image files takes the views of each decoded image; a run on arrays,
  # of each row read (an .npz's rows may then have any height and width).
  views = transform if in_memory else None
  if os.path.isdir(path):
    data = _read_folder(path, tuple(input_shape), flag, None if in_memory else transform)
  else:
    data = _read_npz(path, tuple(input_shape), flag, known_names or {}, views is not None)
  if views is None:
    return data
  rows = np.stack([views.eval_views(row) for row in data.inputs])
  if rows.shape[2:] != tuple(input_shape):
    raise ToolError(f"{flag}: {path!r}: its rows' evaluation views have shape "
                    f"{list(rows.shape[2:])} but the model takes {_shape(input_shape)}.")
  return dataclasses.replace(data, inputs=rows)


def _shape(shape) -> str:
  return "[n, " + ", ".join(map(str, shape)) + "]"


def _read_npz(path, input_shape, flag, fallback_names, any_size=False) -> Inputs:
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ToolError(f"{flag}: {path!r} is a single array, not an .npz with arrays inputs "
                      "(and labels).")
    with loaded as f:
      if "inputs" not in f.files:
        raise ToolError(f"{flag}: {path!r} has no array 'inputs'; it has {f.files}.")
      inputs = f["inputs"]
      labels = f["labels"] if "labels" in f.files else None
      names = f["names"] if "names" in f.files else None
  except ToolError:
    raise
  except (OSError, ValueError) as e:   # not an npz, or pickled objects
    raise ToolError(f"{flag}: cannot read {path!r} as an .npz of plain arrays: {e}") from e
  if inputs.dtype == np.uint8:
    inputs = inputs.astype(np.float32) / 255.0
  elif not np.issubdtype(inputs.dtype, np.floating):
    raise ToolError(f"{flag}: {path!r}: 'inputs' must be float or uint8; got {inputs.dtype}.")
  if inputs.ndim == len(input_shape) and input_shape[-1:] == (1,):
    inputs = inputs[..., None]      # [n, h, w] images for an [h, w, 1] model
  if (inputs.shape[1:] != input_shape if not any_size
      else inputs.ndim != len(input_shape) + 1 or inputs.shape[-1] != input_shape[-1]):
    raise ToolError(f"{flag}: {path!r} holds inputs of shape {list(inputs.shape)} but the "
                    f"model takes {_shape(input_shape)}.")
  if labels is None:
    return Inputs(inputs.astype(np.float32), None, {}, [f"row {i}" for i in range(len(inputs))])
  if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(inputs),):
    raise ToolError(f"{flag}: {path!r}: 'labels' must be integers of shape "
                    f"[{len(inputs)}]; got {labels.dtype} {list(labels.shape)}.")
  present = np.unique(labels).tolist()
  known = _npz_names(names, path, flag) if names is not None else fallback_names
  if names is not None and any(label not in known for label in present):
    raise ToolError(f"{flag}: {path!r}: 'names' does not name every label; labels are "
                    f"{present}, names cover {sorted(known)}.")
  return Inputs(inputs.astype(np.float32), labels.astype(np.int32),
                {label: known.get(label, str(label)) for label in present},
                [f"row {i}" for i in range(len(inputs))])


def _npz_names(names: np.ndarray, path: str, flag: str) -> dict[int, str]:
  """``names``: a JSON object string ``{"label": "name"}`` or ``names[label]`` strings."""
  if names.ndim == 0:
    try:
      raw = json.loads(str(names))
      return {int(k): str(v) for k, v in raw.items()}
    except (ValueError, AttributeError) as e:
      raise ToolError(f"{flag}: {path!r}: a 0-d 'names' must be a JSON object "
                      f"{{\"label\": \"name\"}}: {e}") from e
  if names.ndim == 1 and names.dtype.kind == "U":
    return {i: str(name) for i, name in enumerate(names)}
  raise ToolError(f"{flag}: {path!r}: 'names' must be strings, names[label], or a JSON "
                  f"object; got {names.dtype} {list(names.shape)}.")


def _image_files(folder: str) -> list[str]:
  return sorted(f for f in os.listdir(folder)
                if not protocols._hidden(f)  # pylint: disable=protected-access
                and f.lower().endswith(datasets.IMAGE_SUFFIXES)
                and os.path.isfile(os.path.join(folder, f)))


def _read_folder(root, input_shape, flag, transform=None) -> Inputs:
  if len(input_shape) != 3 or input_shape[-1] not in IMAGE_MODES:
    raise ToolError(f"{flag}: {root!r} is an image folder, but the model takes "
                    f"{_shape(input_shape)}, not images [n, height, width, 1 or 3]; give "
                    "an .npz of inputs instead.")
  classes = sorted(d for d in os.listdir(root)
                   if not protocols._hidden(d)  # pylint: disable=protected-access
                   and os.path.isdir(os.path.join(root, d)))
  loose = _image_files(root)
  if classes and loose:
    raise ToolError(f"{flag}: {root!r} mixes class folders {classes[:3]} with images "
                    f"{loose[:3]}; put every image in its class folder, or give a folder "
                    "of images only.")
  if classes:
    files = [(os.path.join(name, f), label) for label, name in enumerate(classes)
             for f in _image_files(os.path.join(root, name))]
  else:
    files = [(f, -1) for f in loose]
  if not files:
    raise ToolError(f"{flag}: no images under {root!r}; expected ROOT/CLASS_NAME/IMAGE.png "
                    f"or ROOT/IMAGE.png ({', '.join(datasets.IMAGE_SUFFIXES)}).")
  height, width, channels = input_shape
  if transform is not None:   # the run's evaluation views, as in its evaluation
    from metric_learning.data import transforms  # pylint: disable=import-outside-toplevel
    try:
      images = np.stack([transform.eval_views(transforms.decode(os.path.join(root, f)))
                         for f, _ in files])
    except OSError as e:
      raise ToolError(f"{flag}: {e}") from e
  else:
    images = np.stack([_load_image(os.path.join(root, f), height, width, channels, flag)
                       for f, _ in files])
  rows = [f for f, _ in files]
  if not classes:
    return Inputs(images, None, {}, rows)
  labels = np.asarray([label for _, label in files], np.int32)
  return Inputs(images, labels, {i: classes[i] for i in np.unique(labels).tolist()}, rows)


def _load_image(path: str, height: int, width: int, channels: int, flag: str) -> np.ndarray:
  """One image as ``[height, width, channels]`` in [0, 1], resized like ``image_folder``."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      # Colour to gray (or gray to colour) first: a model trained on 1-channel
      # digits reads any picture as gray, as a person would expect.
      im = im.convert(IMAGE_MODES[channels]).resize((width, height), Image.BILINEAR)
      x = np.asarray(im, np.float32) / 255.0
  except OSError as e:
    raise ToolError(f"{flag}: cannot read image {path!r}: {e}") from e
  return x.reshape(height, width, channels)


def save_npz(path: str, **arrays) -> None:
  """``np.savez`` written atomically (temporary file, then rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def run(workdir: str, inputs: str, output: str) -> dict:
  """Embeds ``inputs`` with the encoder of ``workdir`` and writes ``output``.

  Args:
    workdir: a finished training run's ``--workdir``.
    inputs: an ``.npz`` or an image folder (see the module docstring).
    output: the ``.npz`` to write.

  Returns:
    ``{"embeddings": [n, dim], "labels": [n] or None, "names": {label: name},
    "rows": [n], "step": checkpoint step}``; prints one line saying so.

  Raises:
    ToolError: a missing workdir or path, or inputs that do not fit the model.
  """
  if os.path.isdir(output):
    raise ToolError(f"--output: {output!r} is a folder; give the .npz file to write.")
  embed = load_embedder(workdir)
  data = read_run_inputs(inputs, embed, workdir)
  emb = embed(data.inputs)
  arrays = {"embeddings": emb, "names": np.asarray(json.dumps(
      {str(k): v for k, v in sorted(data.names.items())})), "rows": np.asarray(data.rows)}
  if data.labels is not None:
    arrays["labels"] = data.labels
  save_npz(output, **arrays)
  print(f"embedded {emb.shape[0]} rows, dim {emb.shape[1]}, checkpoint step {embed.step} "
        f"-> {output}")
  return {"embeddings": emb, "labels": data.labels, "names": data.names, "rows": data.rows,
          "step": embed.step}


# ------------------------------------------------------ command line ---- #

def fail(message: str) -> None:
  """One line on stderr and exit status 2, like absl's flag errors; no traceback."""
  print(f"FATAL {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl flag parsing whose mistakes (a missing flag too) end in one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"Flags parsing error: {e}")


def main_of(run_with_flags: Callable[[], object]) -> Callable[[list[str]], None]:
  """An ``app.run`` main that calls ``run_with_flags`` and turns a ToolError into
  one line on stderr (exit status 2)."""
  def main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]}; every argument is a --flag.")
    if not flags.FLAGS["verbosity"].present:
      # Library INFO logs (orbax restoring) would bury the tool's output.
      logging.set_verbosity(logging.WARNING)
    try:
      run_with_flags()
    except ToolError as e:
      fail(str(e))
  return main


def main() -> None:
  workdir = flags.DEFINE_string("workdir", None, "A finished training run's --workdir.")
  inputs = flags.DEFINE_string("inputs", None,
                               "An .npz (inputs, labels optional) or an image folder.")
  output = flags.DEFINE_string("output", None, "The .npz to write the embeddings to.")
  flags.mark_flags_as_required(["workdir", "inputs", "output"])
  app.run(main_of(lambda: run(workdir.value, inputs.value, output.value)),
          flags_parser=parse_flags)


if __name__ == "__main__":
  main()
