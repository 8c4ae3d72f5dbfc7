"""Hermans, Beyer, Leibe 2017 on Market-1501: batch-hard, soft margin, P=18, K=4,
128-D, ResNet-50, Adam 3e-4, exponential decay to 0.001× from step 15k of 25k.

Point --config.data.path at the extracted Market-1501 folder
(bounding_box_train/, bounding_box_test/, query/). Evaluated with the re-ID
protocol (CMC rank-k and mAP). The paper trains from ImageNet weights at
256×128; pass --config.model.weights for a local weights directory.
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.data = dict(name="market1501", path="", image_size=128)
  c.model = dict(name="resnet50", embedding_dim=128, normalize=False, small_inputs=False)
  c.loss = dict(name="hermans")
  c.sampler = dict(p=18, k=4)
  c.optimizer = dict(name="adam", learning_rate=3e-4)
  c.schedule = dict(name="exponential", warmup_steps=0, final_fraction=0.001,
                    decay_begin=15000)
  c.augment = dict(max_shift=8, flip=True)
  c.evals = {"reid": dict(type="reid", query="query", gallery="gallery")}
  c.num_steps = 25000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 1000
  c.eval_batch_size = 128
  return c
