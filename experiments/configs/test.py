"""Tiny configuration: the whole pipeline in a few seconds, for tests."""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.model.hidden = (32,)
  c.model.embedding_dim = 8
  c.sampler.p, c.sampler.k = 4, 4
  c.evals.unseen_fewshot.episodes = 50
  c.num_steps = 6
  c.log_every = 2
  c.eval_every = 4
  c.checkpoint_every = 3
  c.eval_batch_size = 128
  c.progress_bar = False
  return c
