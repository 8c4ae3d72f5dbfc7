"""Default experiment: batch-hard triplet MLP on scikit-learn's bundled digits.

Classes 0-4 are split 70/30 (stratified, random_state=0): train on the 70 %,
evaluate "seen" on the held-out 30 % and "unseen" on every sample of classes
5-9, never seen in training. About a minute on 2 CPU cores.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="digits", path="", image_size=64, seen_classes=(0, 1, 2, 3, 4),
                test_fraction=0.3, split_seed=0)
  c.model = dict(name="mlp", hidden=(256,), embedding_dim=64, normalize=True, dropout=0.0,
                 init_weights="")
  c.loss = dict(name="batch_hard_triplet_loss", margin=0.2, metric="euclidean", soft=False)
  c.sampler = dict(p=5, k=16)
  c.optimizer = dict(name="adam", learning_rate=1e-3, warmup_steps=50, schedule="cosine",
                     weight_decay=0.0, grad_clip=0.0)
  c.augment = dict(max_shift=0, flip=False)
  c.num_steps = 1000
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  c.keep_checkpoints = 3
  c.eval_batch_size = 256
  c.eval_metric = "euclidean"
  c.parallel = "none"            # "none" | "pmap" | "mesh" (global-batch mining)
  c.nonfinite = "skip"           # "skip" the update and count it, or "stop"
  c.plots = True
  c.progress_bar = True
  return ml_collections.ConfigDict(c)
