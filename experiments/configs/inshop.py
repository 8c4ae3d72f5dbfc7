"""In-shop Clothes Retrieval (Liu et al. DeepFashion: Powering Robust Clothes
Recognition and Retrieval with Rich Annotations. 2016): 3,997 training items
(25,882 images); 14,218 query images searched in a 12,612-image gallery of
3,985 other items; Recall@1, 10, 20, 30, 40 and 50 as in the paper.

Recipe: ImageNet ResNet-50, 128-D L2-normalised embeddings, multi-similarity
loss (Wang et al. 2019, its defaults), P=16 items × K=4 images (most items have
few images; K=4 draws with replacement when an item has fewer), random resized
crops 224×224 and flips, AdamW 1e-4 with cosine decay, 20,000 steps. It is a
strong baseline in the settings most In-shop papers use, not a reproduction of
one paper's number.

Data: extract "In-shop Clothes Retrieval Benchmark" and point
``--config.data.path`` at the folder holding list_eval_partition.txt and img/.
Weights: ``--config.model.weights``, as in trinet_market1501.py.
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.data = dict(name="inshop", path="")
  c.model = dict(name="resnet50", embedding_dim=128, normalize=True, weights=None)
  c.loss = dict(name="multi_similarity_loss")
  c.sampler = dict(p=16, k=4)
  c.optimizer = dict(name="adamw", learning_rate=1e-4, weight_decay=1e-4)
  c.schedule = dict(name="cosine", warmup_steps=500)
  c.augment = dict(size=(224, 224), random_resized_crop=(0.16, 1.0), flip=True,
                   eval_resize=(256, 256))
  c.evals = {"inshop": dict(name="retrieval", split="query", gallery="gallery",
                            ks=(1, 10, 20, 30, 40, 50))}
  c.num_steps = 20000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 1000
  c.eval_batch_size = 128
  c.raw_baseline = False
  c.workers = 8
  return c
