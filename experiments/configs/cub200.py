"""CUB-200-2011 in the image-folder layout: classes 1-100 train, 101-200 unseen
(the standard zero-shot split). Point --config.data.path at images/ (one
sub-folder per class)."""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.data = dict(name="image_folder", path="", image_size=128, seen_classes=tuple(range(100)),
                test_fraction=0.2, split_seed=0)
  c.model = dict(name="resnet50", embedding_dim=128, normalize=True, small_inputs=False)
  c.loss = dict(name="multi_similarity_loss")
  c.sampler = dict(p=16, k=4)
  c.optimizer = dict(name="adamw", learning_rate=1e-4, weight_decay=1e-4)
  c.schedule = dict(name="cosine", warmup_steps=500)
  c.augment = dict(max_shift=12, flip=True)
  c.num_steps = 10000
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.eval_batch_size = 128
  return c
