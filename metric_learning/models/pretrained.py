"""Initial weights: ``.safetensors`` from torchvision / timm, and our own orbax directories.

:func:`load_pretrained` reads a ``state_dict`` saved with ``safetensors`` (no
torch, no pickle at run time) in the source library's parameter names. Our
encoders mirror those names (``layer1.0.conv1`` is ``model.layer1[0].conv1``),
so the mapping is mechanical:

=====================  ============================  ============================
ours                   source                        layout
=====================  ============================  ============================
Conv ``kernel``        ``weight``                    OIHW → HWIO
Linear ``kernel``      ``weight``                    [out, in] → [in, out]
BatchNorm/LayerNorm    ``weight``, ``bias``          unchanged
``scale``, ``bias``
BatchNorm ``mean``,    ``running_mean``,             unchanged (batch statistics)
``var``                ``running_var``
``cls_token``, ...     same name                     unchanged
=====================  ============================  ============================

The source classifier (torchvision ``fc.*``, timm ``head.*``) and torch's
``num_batches_tracked`` counters are ignored; our embedding head (``head``)
keeps its fresh initialisation.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

_RENAME = {"scale": "weight", "mean": "running_mean", "var": "running_var", "kernel": "weight"}
_SHOWN = 5


def source_name(path: tuple) -> str:
  """The torch ``state_dict`` key of an NNX state path, e.g.
  ``('layer1', 0, 'bn1', 'mean')`` → ``'layer1.0.bn1.running_mean'``."""
  *module, leaf = (str(p) for p in path)
  return ".".join([*module, _RENAME.get(leaf, leaf) if module else leaf])


def _to_ours(name: str, value: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)        # OIHW → HWIO
  if leaf == "kernel" and value.ndim == 2:
    return value.T                            # [out, in] → [in, out]
  del name
  return value


def backbone_variables(state: nnx.State) -> dict[str, tuple[tuple, nnx.Variable]]:
  """Source name → (path, variable) of every backbone parameter and batch statistic
  of a model's ``state`` (everything but the embedding head ``head``)."""
  return {source_name(path): (path, variable) for path, variable in nnx.to_flat_state(state)
          if path[0] != "head"}


def load_pretrained(model: nnx.Module, path: str) -> nnx.Module:
  """Loads a backbone's weights from a ``.safetensors`` file in torchvision/timm names.

  Every backbone parameter and BatchNorm statistic must be in the file with the
  right shape; extra tensors other than the source classifier and
  ``num_batches_tracked`` are an error too (they mean a different
  architecture). The embedding head is left as initialised (a partial
  restore). The model is updated in place and returned. A grey model
  (``input_shape`` ``(h, w, 1)``) takes RGB weights: the input convolution's
  kernel is summed over its three colour channels, which equals feeding the
  grey image repeated as RGB (exactly under ``input_norm`` ``None`` or
  ``"inception"``; ``"imagenet"`` uses the channels' mean statistics).

  Args:
    model: a :class:`~metric_learning.models.ResNet`,
      :class:`~metric_learning.models.VisionTransformer` (or any encoder whose
      attribute names follow the file's).
    path: a ``.safetensors`` file, e.g. written by
      ``safetensors.torch.save_file(torch_model.state_dict(), path)``.

  Returns:
    ``model``, with the file's backbone weights.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: a missing, mis-shaped or unexpected tensor (named, with the file).

  Example:
    >>> import tempfile, numpy as np, safetensors.numpy
    >>> from flax import nnx
    >>> from metric_learning import models
    >>> m = models.create("mlp", (4,), hidden=(3,), embedding_dim=2)
    >>> path = tempfile.mkdtemp() + "/mlp.safetensors"
    >>> safetensors.numpy.save_file({"layers.0.weight": np.ones((3, 4), np.float32),
    ...                              "layers.0.bias": np.zeros(3, np.float32)}, path)
    >>> float(load_pretrained(m, path).layers[0].kernel[...].sum())
    12.0
  """
  from safetensors import numpy as st  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(os.fspath(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"pretrained weights not found: {path!r} (expected a "
                            ".safetensors file; nothing is downloaded).")
  tensors = st.load_file(path)
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  expected = backbone_variables(state)
  ignored = tuple(getattr(model, "classifier_prefixes", ()))
  missing = [n for n in expected if n not in tensors]
  if missing:
    raise ValueError(f"{path!r} lacks {len(missing)} tensor(s) the model needs: "
                     f"{missing[:_SHOWN]}{' ...' if len(missing) > _SHOWN else ''}.")
  unexpected = [n for n in tensors if n not in expected and not n.startswith(ignored)
                and not n.endswith("num_batches_tracked")]
  if unexpected:
    raise ValueError(f"{path!r} has {len(unexpected)} tensor(s) the model does not: "
                     f"{unexpected[:_SHOWN]}{' ...' if len(unexpected) > _SHOWN else ''} "
                     "(a different architecture or settings?).")
  values = {}
  for name, (var_path, variable) in expected.items():   # check everything, then assign
    value = _to_ours(name, np.asarray(tensors[name]), str(var_path[-1]))
    value = _grey_input(value, variable[...].shape)
    if value.shape != variable[...].shape:
      raise ValueError(f"tensor {name!r} in {path!r} has shape {tensors[name].shape} "
                       f"(as ours: {value.shape}); the model's is {variable[...].shape}.")
    values[name] = value
  for name, (_, variable) in expected.items():
    variable[...] = jnp.asarray(values[name], variable[...].dtype)
  nnx.update(model, state)
  return model


def _grey_input(value: np.ndarray, shape) -> np.ndarray:
  """An RGB input convolution's ``[kh, kw, 3, out]`` kernel for a grey (1-channel) model:
  summed over its colour channels, so that a grey image gives what the RGB
  weights give on that image repeated in all three channels (exactly, when the
  input normalisation treats the channels alike: ``input_norm`` ``None`` or
  ``"inception"``). Any other shape is returned unchanged."""
  if (value.ndim == 4 and len(shape) == 4 and value.shape[2] == 3 and shape[2] == 1
      and value.shape[:2] + value.shape[3:] == tuple(shape[:2]) + tuple(shape[3:])):
    return value.sum(axis=2, keepdims=True)
  return value


def load_weights(model: nnx.Module, path: str) -> nnx.Module:
  """Restores parameters saved by :func:`save_weights` (a local directory; no downloads)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"initial weights not found: {path!r}; expected a directory "
                            "written by metric_learning.models.save_weights.")
  graphdef, state = nnx.split(model)
  restored = ocp.StandardCheckpointer().restore(path, state)
  return nnx.merge(graphdef, restored)


def save_weights(model: nnx.Module, path: str) -> None:
  """Writes the model's state to a directory :func:`load_weights` restores."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(os.path.abspath(path), nnx.state(model))
  ckpt.wait_until_finished()
