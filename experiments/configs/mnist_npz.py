"""MNIST-format images from an .npz with arrays 'inputs' [n, 28, 28] uint8 and
'labels' [n]: digits 0-4 train, 5-9 unseen, with a small CNN. Point
--config.data.path at the file."""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.data = dict(name="npz", path="", seen_classes=(0, 1, 2, 3, 4), test_fraction=0.3,
                split_seed=0)
  c.model = dict(name="cnn", widths=(32, 64, 128), embedding_dim=64, normalize=True)
  c.sampler = dict(p=5, k=32)
  c.num_steps = 3000
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.augment = dict(max_shift=2, flip=False)
  return c
