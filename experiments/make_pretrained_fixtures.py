"""Writes the golden fixtures of tests/pretrained_test.py (torchvision / timm parity).

Tiny, randomly initialised (fixed seed) models of torchvision's and timm's own
classes — torchvision's ``ResNet`` with its ``BasicBlock`` / ``Bottleneck``
(downsample included), narrowed to a few channels per stage, and timm's
``VisionTransformer`` with 32-wide tokens and 2 blocks — with non-trivial
BatchNorm / LayerNorm parameters and running statistics. For each, it saves

* ``NAME.safetensors``: the torch ``state_dict()`` (classifier included), and
* ``NAME.npz``: ``inputs`` ``[2, 3, 32, 32]`` float32 NCHW (already normalised:
  load with ``input_norm=None``), the source model's pooled ``features``
  (torchvision: the flattened ``avgpool`` output, the input of ``fc``; timm:
  ``forward_head(forward_features(x), pre_logits=True)``), and how to rebuild
  the model: ``model``, a class of ``metric_learning.models``, and its keyword
  arguments ``settings`` (JSON).

Regenerate (needs torch, torchvision and timm; not the project's environment)::

  python3 -m venv /tmp/tvenv
  /tmp/tvenv/bin/pip install torchvision==0.29.1 timm safetensors
  /tmp/tvenv/bin/python experiments/make_pretrained_fixtures.py \
      --out=tests/fixtures/pretrained
"""

import argparse
import json
import os

import numpy as np
import safetensors.torch
import timm
import torch
from torch import nn
from torchvision.models import resnet as tv_resnet


class NarrowResNet(tv_resnet.ResNet):
  """torchvision's ResNet with ``width`` stem channels instead of 64 (each stage
  scaled alike); the blocks are torchvision's own modules."""

  def __init__(self, block, layers, *, width: int, num_classes: int = 5):
    self._width = width
    super().__init__(block, layers, num_classes=num_classes)
    self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.fc = nn.Linear(8 * width * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
    if planes == 64:                     # the first stage: starts from the narrow stem
      self.inplanes = self._width
    return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.flatten(self.avgpool(x), 1)


def _perturb_norms(model: nn.Module, generator: torch.Generator) -> None:
  """Random affine parameters for every BatchNorm / LayerNorm (not 1 and 0)."""
  for m in model.modules():
    if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
      with torch.no_grad():
        m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=generator))
        m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=generator))


def _running_statistics(model: nn.Module, generator: torch.Generator) -> None:
  model.train()
  with torch.no_grad():
    for _ in range(3):
      model(2 * torch.randn(8, 3, 32, 32, generator=generator) + 0.5)
  model.eval()


def _save(out: str, name: str, model: nn.Module, inputs: torch.Tensor,
          features: torch.Tensor, class_name: str, settings: dict) -> None:
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  safetensors.torch.save_file(state, os.path.join(out, f"{name}.safetensors"))
  np.savez_compressed(os.path.join(out, f"{name}.npz"), inputs=inputs.numpy(),
                      features=features.numpy(), model=np.array(class_name),
                      settings=np.array(json.dumps(settings)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="tests/fixtures/pretrained")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  torch.manual_seed(args.seed)
  generator = torch.Generator().manual_seed(args.seed)
  inputs = torch.randn(2, 3, 32, 32, generator=generator)

  # resnet_basic is ResNet-18 narrowed (models.create("resnet18", base_width=4) loads it).
  for name, block, layers in (("resnet_basic", tv_resnet.BasicBlock, [2, 2, 2, 2]),
                              ("resnet_bottleneck", tv_resnet.Bottleneck, [2, 1, 1, 1])):
    model = NarrowResNet(block, layers, width=4)
    _perturb_norms(model, generator)
    _running_statistics(model, generator)
    with torch.no_grad():
      features = model.features(inputs)
      assert torch.allclose(model.fc(features), model(inputs), atol=1e-6)
    settings = dict(stages=layers, bottleneck=block is tv_resnet.Bottleneck, base_width=4,
                    input_norm=None)
    _save(args.out, name, model, inputs, features, "ResNet", settings)

  model = timm.models.vision_transformer.VisionTransformer(
      img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=5)
  _perturb_norms(model, generator)
  with torch.no_grad():
    model.cls_token.copy_(torch.randn(model.cls_token.shape, generator=generator))
  model.eval()
  with torch.no_grad():
    features = model.forward_head(model.forward_features(inputs), pre_logits=True)
  settings = dict(dim=32, depth=2, num_heads=2, patch_size=16, input_norm=None)
  _save(args.out, "vit_tiny", model, inputs, features, "VisionTransformer", settings)
  for f in sorted(os.listdir(args.out)):
    print(f, os.path.getsize(os.path.join(args.out, f)), "bytes")


if __name__ == "__main__":
  main()
