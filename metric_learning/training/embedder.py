"""Use a trained run: ``load_embedder(workdir)`` -> ``embed(inputs) -> embeddings``.

A training run records what is needed to rebuild its encoder in
``workdir/model.json`` (the model's registry name, input shape and settings,
written by :func:`save_model_spec`); the weights come from the newest
restorable checkpoint. Nothing else of the run (optimizer, data) is needed.

Embeddings of two encoders are not comparable, so :func:`model_identity` names
the encoder a workdir holds: a hash of the run's ``config.json`` and the
checkpoint step. An :class:`~metric_learning.index.EmbeddingIndex` records it
(its ``model``) and the tools refuse to mix encoders (:func:`same_model`).

:func:`export_embedder` turns the same encoder into a ``jax.export`` artifact
that runs with JAX alone (:mod:`metric_learning.serving`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from metric_learning import _validation
from metric_learning import models
from metric_learning import serving
from metric_learning.data.sampler import padded_batches
from metric_learning.training import checkpoint
from metric_learning.training import rundir

MODEL_SPEC = rundir.MODEL_SPEC
CONFIG = rundir.CONFIG
# The fields of a model identity that name the encoder; "workdir" is for messages.
IDENTITY_FIELDS = ("config_sha256", "step")
# Where an exported embedder runs by default: every platform jax.export lowers for.
EXPORT_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
EXPORT_DTYPES = ("float32", "bfloat16")


def save_model_spec(workdir: str, name: str, input_shape, settings: dict[str, Any], *,
                    proxies: tuple[int, int, int] | None = None) -> None:
  """Writes ``workdir/model.json``: enough to rebuild the encoder by name.

  ``proxies``: ``(num_classes, embedding_dim, per_class)`` when the run trained
  the encoder inside :class:`metric_learning.models.EncoderWithProxies`.
  """
  spec = {"name": name, "input_shape": [int(s) for s in input_shape],
          "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
          "proxies": None if proxies is None else [int(v) for v in proxies]}
  rundir.RunDir(workdir).write_json(MODEL_SPEC, spec)


def load_model_spec(workdir: str) -> dict[str, Any]:
  spec = rundir.RunDir(workdir).read_json(MODEL_SPEC)
  if spec is None:
    raise FileNotFoundError(f"{rundir.RunDir(workdir).path(MODEL_SPEC)!r} not found: "
                            f"{workdir!r} is not a workdir of a training run "
                            "(python -m experiments.main --workdir=... writes it).")
  return spec


def load_model(workdir: str, step: int | None = None) -> tuple[nnx.Module, int]:
  """The encoder of ``workdir`` with a checkpoint's weights, and that step.

  ``step``: the checkpoint to restore; None: the newest restorable one.
  """
  spec = load_model_spec(workdir)
  settings = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["settings"].items()}
  model = models.create(spec["name"], tuple(spec["input_shape"]), **settings)
  if spec.get("proxies"):
    classes, dim, per_class = spec["proxies"]
    model = models.EncoderWithProxies(model, classes, dim, per_class=per_class,
                                      rngs=nnx.Rngs(0))
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  template = {"params": checkpoint.storable(params),
              "model_state": checkpoint.storable(model_state)}
  mgr = checkpoint.manager(workdir, max_to_keep=None)
  try:
    steps = sorted(mgr.all_steps(), reverse=True)
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in "
                                f"{rundir.RunDir(workdir).path(rundir.CHECKPOINTS)!r}; its steps are "
                                f"{sorted(steps)}.")
      steps = [step]
    for step in steps:  # pylint: disable=redefined-argument-from-local
      try:
        restored = mgr.restore(step, args=ocp.args.PyTreeRestore(
            item=template, partial_restore=True))
      except Exception:  # pylint: disable=broad-except
        continue      # a corrupt newest checkpoint: use the previous one
      params = checkpoint.from_storable(params, restored["params"])
      model_state = checkpoint.from_storable(model_state, restored["model_state"])
      model = nnx.merge(graphdef, params, model_state)
      return (model.encoder if spec.get("proxies") else model), step
  finally:
    mgr.close()
  raise FileNotFoundError(f"no restorable checkpoint in "
                          f"{rundir.RunDir(workdir).path(rundir.CHECKPOINTS)!r}.")


def model_identity(workdir: str, step: int | None = None) -> dict[str, Any]:
  """Which encoder ``workdir`` holds: its config and its checkpoint step.

  Args:
    workdir: a training run's ``--workdir`` (it holds ``config.json``).
    step: the checkpoint step; None: the newest checkpoint in
      ``workdir/checkpoints`` (``load_embedder(workdir).identity`` gives the
      step the embedder actually restored, which differs only when the newest
      checkpoint is corrupt).

  Returns:
    ``{"config_sha256": sha256 of config.json's JSON content (keys sorted, so
    formatting does not matter), "step": int, "workdir": absolute path}``. Two
    identities name the same encoder when :func:`same_model` says so; the
    workdir is only for messages (a moved run is the same encoder).

  Raises:
    FileNotFoundError: no ``config.json``, or (``step=None``) no checkpoint.
  """
  config = rundir.RunDir(workdir).read_json(CONFIG)
  if config is None:
    raise FileNotFoundError(f"{rundir.RunDir(workdir).path(CONFIG)!r} not found: {workdir!r} "
                            "is not a workdir of a training run (python -m experiments.main "
                            "--workdir=... writes it).")
  digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()
  if step is None:
    directory = rundir.RunDir(workdir).path(rundir.CHECKPOINTS)
    steps = []
    if os.path.isdir(directory):
      mgr = checkpoint.manager(workdir, max_to_keep=None)
      try:
        steps = list(mgr.all_steps())
      finally:
        mgr.close()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory!r}.")
    step = max(steps)
  return {"config_sha256": digest, "step": int(step), "workdir": os.path.abspath(workdir)}


def same_model(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
  """Whether two :func:`model_identity` dicts name the same encoder (same config
  hash and step; the workdir is not compared). False when either is None."""
  if a is None or b is None:
    return False
  return all(a.get(k) == b.get(k) for k in IDENTITY_FIELDS)


def load_embedder(workdir: str, *, step: int | None = None, batch_size: int = 256
                  ) -> Callable[[np.ndarray], np.ndarray]:
  """``embed(inputs) -> embeddings`` of the trained encoder in ``workdir``.

  Args:
    workdir: a training run's ``--workdir``.
    step: the checkpoint to use; None (the default): the newest restorable one.
    batch_size: rows embedded per call; the last batch is padded, so any
      number of inputs compiles once.

  Returns:
    ``embed(inputs [n, *input_shape]) -> np.ndarray [n, embedding_dim]`` in
    evaluation mode (BatchNorm statistics, no dropout). Float inputs are used
    as given; integer inputs (``uint8`` images) are scaled to [0, 1] first, as
    the model scales the uint8 batches it trains on. ``embed.input_shape``
    and ``embed.step`` (the checkpoint's step) tell what it expects and holds;
    ``embed.identity`` is :func:`model_identity` at that step (None when the
    workdir has no ``config.json``).
  """
  model, step = load_model(workdir, step)
  model.eval()
  graphdef, state = nnx.split(model)
  input_shape = tuple(load_model_spec(workdir)["input_shape"])

  @jax.jit
  def forward(state, x):
    return nnx.merge(graphdef, state)(x)

  def embed(inputs) -> np.ndarray:
    # Integer inputs are 0..255 images, scaled as the model scales the uint8
    # batches it trains on (a bare cast to float32 would skip that).
    x = serving.float_inputs(inputs).astype(np.float32, copy=False)
    if x.shape[1:] != input_shape:
      raise ValueError(f"inputs must have shape [n, {', '.join(map(str, input_shape))}] "
                       f"for the model in {workdir!r}; got {list(x.shape)}.")
    out = [np.asarray(forward(state, x[index]))[where]
           for index, where in padded_batches(len(x), batch_size)]
    if not out:     # no inputs: an empty [0, embedding_dim] array
      dim = forward(state, np.zeros((1,) + input_shape, np.float32)).shape[-1]
      return np.zeros((0, dim), np.float32)
    return np.concatenate(out)

  embed.input_shape = input_shape
  embed.step = step
  embed.identity = (model_identity(workdir, step)
                    if rundir.RunDir(workdir).exists(CONFIG) else None)
  return embed


def export_embedder(workdir: str, *, step: int | None = None, dtype: str | None = None,
                    platforms=EXPORT_PLATFORMS) -> tuple[jax.export.Exported, dict[str, Any]]:
  """The encoder of ``workdir`` as a ``jax.export`` artifact, and its metadata.

  The artifact computes what :func:`load_embedder` computes on float inputs —
  the encoder in evaluation mode, its own input conversion (``input_norm``) and
  output normalisation included; ``load_embedder`` does nothing else to inputs
  but cast them to float32 — with the weights as constants and a symbolic
  batch dimension ``b``: ``float32 [b, *input_shape] -> float32 [b, dim]``.
  Write it with :func:`metric_learning.serving.save`; run it with
  :func:`metric_learning.serving.load` or ``jax.export.deserialize``.

  Args:
    workdir: a training run's ``--workdir``.
    step: the checkpoint to export; None: the newest restorable one.
    dtype: the encoder's arithmetic: ``"float32"`` or ``"bfloat16"`` (weights
      stored in bfloat16 and the backbone computing in bfloat16, as the
      model's ``dtype="bfloat16"`` setting does; the embedding head and the
      embeddings stay float32). None: the run's own model ``dtype`` (float32
      unless it trained in bfloat16), which reproduces ``load_embedder``.
    platforms: the platforms to lower for (a subset of ``EXPORT_PLATFORMS``);
      lowering needs no such device.

  Returns:
    ``(exported, metadata)``: the metadata fields of :mod:`metric_learning.serving`
    that the artifact does not carry itself (``compute_dtype``, ``model``,
    ``input_norm``, ``normalized``, ``metric``, ``step``, ``identity``).

  Raises:
    FileNotFoundError: no ``model.json``, or no (restorable) checkpoint
      (at ``step``).
    ValueError: an unknown ``dtype`` or platform.
  """
  if dtype is not None:
    _validation.choice(dtype, "dtype", EXPORT_DTYPES)
  platforms = tuple(platforms)
  for platform in platforms:
    _validation.choice(platform, "platform", EXPORT_PLATFORMS)
  spec = load_model_spec(workdir)
  settings = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["settings"].items()}
  input_shape = tuple(spec["input_shape"])
  trained = settings.get("dtype", "float32")
  dtype = trained if dtype is None else dtype
  model, step = load_model(workdir, step)
  if dtype != trained:
    # The same encoder built for the other arithmetic, given the trained state
    # (the checkpoint holds every weight, so no initial weights are read).
    twin = models.create(spec["name"], input_shape, **{**settings, "dtype": dtype,
                                                       "weights": None})
    nnx.update(twin, nnx.state(model))
    model = twin
  model.eval()
  graphdef, state = nnx.split(model)
  if dtype == "bfloat16":
    state = jax.tree.map(
        lambda v: v.astype(jnp.bfloat16) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)

  def embed(x):
    return nnx.merge(graphdef, state)(x).astype(jnp.float32)

  batch, = jax.export.symbolic_shape("b")
  exported = jax.export.export(jax.jit(embed), platforms=platforms)(
      jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32))
  config = rundir.RunDir(workdir).read_json(CONFIG)
  identity = model_identity(workdir, step) if config is not None else None
  metadata = {
      "compute_dtype": dtype,
      "model": spec["name"],
      "input_norm": settings.get("input_norm"),
      "normalized": bool(settings.get("normalize", False)),
      "metric": ((config or {}).get("loss") or {}).get("metric"),
      "step": int(step),
      "identity": None if identity is None else {k: identity[k] for k in IDENTITY_FIELDS},
  }
  return exported, metadata
