"""Serve a trained embedder with JAX alone: the ``jax.export`` artifact of a run.

``python -m experiments.tools.export --workdir=W --output=FILE`` writes a run's
encoder, in evaluation mode with its weights baked in as constants, as a
serialized :class:`jax.export.Exported` (``FILE``) beside a JSON sidecar
(``FILE.json``). Running it needs neither Flax nor this project::

  exported = jax.export.deserialize(open(FILE, "rb").read())
  embeddings = exported.call(inputs)      # float32 [b, *input_shape] -> [b, dim]

The batch dimension is symbolic (``b``): one artifact serves every batch size
(each new size compiles once). The artifact holds what the model does to its
inputs (``input_norm``: ImageNet standardisation) and to its outputs (L2
normalisation); it takes float inputs as :func:`metric_learning.training.load_embedder`
does, images scaled to [0, 1] (:func:`load` also takes ``uint8`` images and scales
them), and returns float32 embeddings.

:func:`load` wraps the artifact in ``embed(inputs) -> np.ndarray``, a drop-in
for ``load_embedder(workdir)``: it has the same ``input_shape``, ``step`` and
``identity`` (so an :class:`~metric_learning.index.EmbeddingIndex` made by the
run's encoder can be queried with it).

The sidecar ``FILE.json`` (:data:`FORMAT` 1) holds:

====================  ==============================================================
``format``            1
``input_shape``       one input's shape, e.g. ``[8, 8, 1]``
``input_dtype``       the dtype the artifact accepts: ``"float32"``
``embedding_dim``     the width of an embedding
``embedding_dtype``   ``"float32"``
``platforms``         where the artifact runs, e.g. ``["cpu", "cuda", "rocm", "tpu"]``
``jax_version``       the JAX that exported it (a newer JAX loads it; an older may not)
``compute_dtype``     ``"float32"`` or ``"bfloat16"`` (the encoder's arithmetic)
``model``             the model's registry name
``input_norm``        what the artifact does to inputs first: null or ``"imagenet"``
``normalized``        whether embeddings are L2-normalised (unit length)
``metric``            the distance the run trained with (its loss's ``metric``), or null
``step``              the checkpoint step exported
``identity``          ``{"config_sha256", "step"}``: the run's model identity, or null
====================  ==============================================================

Writing and reading an artifact needs the ``flatbuffers`` package (``jax``
leaves it optional): ``pip install "metric-learning-jax[serving]"`` (the
``experiments`` extra includes it). Without it, :func:`save` and :func:`load`
fail with that command.
"""

from __future__ import annotations

import json
import os
from typing import Any
from typing import Callable

import jax
import numpy as np

from metric_learning import _extras

FORMAT = 1
SIDECAR_SUFFIX = ".json"

__all__ = ("FORMAT", "float_inputs", "load", "read_metadata", "save", "sidecar_path")


def float_inputs(inputs) -> np.ndarray:
  """Raw inputs as an embedder takes them: integer images (0..255) scaled to [0, 1]
  in float32, as the models scale the uint8 batches they train on; floats kept.

  Example:
    >>> float_inputs(np.array([0, 255], np.uint8)).tolist()
    [0.0, 1.0]
  """
  x = np.asarray(inputs)
  return x.astype(np.float32) / 255.0 if np.issubdtype(x.dtype, np.integer) else x


def sidecar_path(path: str) -> str:
  """The metadata file of the artifact ``path``: ``path + ".json"``."""
  return os.fspath(path) + SIDECAR_SUFFIX


def save(path: str, exported: jax.export.Exported, metadata: dict[str, Any] | None = None
         ) -> dict[str, Any]:
  """Writes ``exported`` to ``path`` and its metadata to ``path + ".json"``, atomically.

  Each file is written to a temporary file in the same folder and renamed into
  place; on any error neither file is changed and no temporary file is left.

  Args:
    path: the artifact to write; its folder must exist.
    exported: an embedder taking ``[b, *input_shape]`` and returning ``[b, dim]``.
    metadata: what the exporter knows beyond the artifact (``step``,
      ``identity``, ``metric``, ...); the fields read from ``exported``
      (``input_shape``, ``input_dtype``, ``embedding_dim``, ``platforms``, ...)
      are added.

  Returns:
    The metadata written.

  Raises:
    FileNotFoundError: the folder of ``path`` does not exist.
    ValueError: ``exported`` is not a one-input, one-output function of a batch.
  """
  _extras.require_extra("serving", "metric_learning.serving.save")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"no such folder {folder!r} to write {os.path.basename(path)!r} in.")
  metadata = {**_describe(exported), **(metadata or {})}
  files = {path: exported.serialize(),
           sidecar_path(path): (json.dumps(metadata, indent=1, sort_keys=True) + "\n").encode()}
  written = []
  try:
    for target, data in files.items():
      tmp = f"{target}.tmp"
      written.append(tmp)
      with open(tmp, "wb") as f:
        f.write(data)
    for target in files:
      os.replace(f"{target}.tmp", target)
  finally:
    for tmp in written:
      if os.path.exists(tmp):
        os.remove(tmp)
  return metadata


def _describe(exported: jax.export.Exported) -> dict[str, Any]:
  """The metadata an artifact carries itself; checks that it is an embedder."""
  ins, outs = exported.in_avals, exported.out_avals
  if len(ins) != 1 or len(outs) != 1 or len(ins[0].shape) < 2 or len(outs[0].shape) != 2:
    raise ValueError("an exported embedder maps one [batch, *input_shape] array to one "
                     f"[batch, dim] array; got inputs {ins} and outputs {outs}.")
  return {"format": FORMAT, "input_shape": [int(s) for s in ins[0].shape[1:]],
          "input_dtype": str(ins[0].dtype), "embedding_dim": int(outs[0].shape[1]),
          "embedding_dtype": str(outs[0].dtype), "platforms": list(exported.platforms),
          "jax_version": jax.__version__}


def read_metadata(path: str) -> dict[str, Any]:
  """The sidecar ``path + ".json"`` of an artifact; ``{}`` when there is none."""
  try:
    with open(sidecar_path(path), encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def load(path: str) -> Callable[[np.ndarray], np.ndarray]:
  """``embed(inputs) -> embeddings`` of an exported embedder, with JAX alone.

  Args:
    path: an artifact written by ``python -m experiments.tools.export`` or
      :func:`save` (its sidecar is optional).

  Returns:
    ``embed(inputs [n, *input_shape]) -> np.ndarray [n, dim]`` float32, all
    rows in one call. Float inputs (images scaled to [0, 1]) are cast to the
    artifact's input dtype; integer inputs (``uint8`` images) are scaled to
    [0, 1] first, as ``load_embedder`` does. ``embed.input_shape``, ``embed.embedding_dim``, ``embed.step`` and
    ``embed.identity`` (None when the sidecar does not say), ``embed.metadata``
    (the sidecar) and ``embed.exported`` tell what it holds.

  Raises:
    FileNotFoundError: no file ``path``.
    ValueError: ``path`` is not a ``jax.export`` artifact of an embedder.

  Example:
    >>> import os, tempfile
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> batch, = jax.export.symbolic_shape("b")
    >>> double = jax.export.export(jax.jit(lambda x: 2 * x.reshape(x.shape[0], -1)))(
    ...     jax.ShapeDtypeStruct((batch, 2, 1), jnp.float32))
    >>> path = os.path.join(tempfile.mkdtemp(), "double.jax")
    >>> _ = save(path, double, {"step": 7})
    >>> embed = load(path)
    >>> embed.input_shape, embed.embedding_dim, embed.step
    ((2, 1), 2, 7)
    >>> embed(np.ones((3, 2, 1))).tolist()
    [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no exported embedder {path!r}; python -m experiments.tools.export "
                            "--workdir=... --output=... writes one.")
  _extras.require_extra("serving", "metric_learning.serving.load")
  with open(path, "rb") as f:
    blob = f.read()
  try:
    exported = jax.export.deserialize(bytearray(blob))
    described = _describe(exported)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path!r} is not a jax.export artifact of an embedder: {e}") from e
  metadata = read_metadata(path)
  input_shape = tuple(described["input_shape"])
  dtype = np.dtype(described["input_dtype"])
  dim = described["embedding_dim"]
  call = jax.jit(exported.call)

  def embed(inputs) -> np.ndarray:
    x = float_inputs(inputs)      # 0..255 images scaled, as load_embedder takes them
    if not np.issubdtype(x.dtype, np.floating):
      raise TypeError(f"inputs must be floating point (images scaled to [0, 1]) or integer "
                      f"(0..255 images) for the embedder {path!r}; got {x.dtype}.")
    if x.shape[1:] != input_shape or x.ndim != len(input_shape) + 1:
      raise ValueError(f"inputs must have shape [n, {', '.join(map(str, input_shape))}] for "
                       f"the embedder {path!r}; got {list(x.shape)}.")
    if not len(x):      # a symbolic dimension is at least 1
      return np.zeros((0, dim), np.float32)
    return np.asarray(call(x.astype(dtype, copy=False)), np.float32)

  embed.input_shape = input_shape
  embed.embedding_dim = dim
  embed.step = metadata.get("step")
  embed.identity = metadata.get("identity")
  embed.metadata = metadata
  embed.exported = exported
  return embed
