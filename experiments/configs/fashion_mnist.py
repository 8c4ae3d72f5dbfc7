"""Fashion-MNIST from Debian's dataset-fashion-mnist (IDX files): classes 0-4 train, 5-9 unseen.

Draft recipe; numbers to follow.
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.data = dict(name="idx", path="/usr/share/datasets/fashion-mnist",
                seen_classes=(0, 1, 2, 3, 4), unseen_from="all")
  c.model = dict(name="cnn", widths=(32, 64, 128), embedding_dim=64, normalize=True,
                 head_batch_norm=True)
  c.loss = dict(name="batch_hard_triplet_loss", margin=0.4)
  c.sampler = dict(p=5, k=32)
  c.optimizer = dict(name="adam", learning_rate=1e-3)
  c.schedule = dict(name="cosine", warmup_steps=100)
  c.augment = dict(max_shift=2, flip=True)
  c.evals = {"seen": dict(name="retrieval", split="seen"),
             "unseen": dict(name="retrieval", split="unseen")}
  c.num_steps = 2000
  c.log_every = 100
  c.eval_every = 0
  c.checkpoint_every = 500
  c.plots = False
  c.progress_bar = False
  return c
