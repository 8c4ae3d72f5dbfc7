"""CUB-200-2011 under the protocol of Musgrave, Belongie, Lim. A Metric Learning
Reality Check. 2020 (MLRC), with its triplet loss.

Protocol:
  * classes 1–100 train, 101–200 test (all images of each; no validation
    classes are held out here — MLRC picks hyper-parameters by cross-validation
    on the training classes, this recipe uses the optimum it published);
  * 128-D embeddings, L2-normalised; batch 32 = 8 classes × 4 images;
  * RMSprop, learning rate 1e-6 for the trunk and the head (decay 0.99 as
    PyTorch's default); BatchNorm statistics of the trunk frozen;
  * random resized crop to 227×227 (scale 0.16–1) and flips; evaluation resizes
    to 256×256 and centre-crops 227×227;
  * MLRC's "triplet" loss: every triplet of the batch, margin 0.0961 (its
    optimum on CUB-200-2011), averaged over the non-zero ones;
  * MAP@R, R-precision and precision@1 of every test image against the others.

Backbone: MLRC uses an ImageNet BN-Inception, which this project does not
provide; the recipe uses torchvision's ImageNet ResNet-50 instead, so its
figures are not directly comparable with MLRC's tables (ResNet-50 is stronger).
MLRC stops on validation accuracy; this recipe trains a fixed 20,000 steps.

Data: extract CUB_200_2011.tgz (Wah et al. The Caltech-UCSD Birds-200-2011
Dataset. 2011) and point ``--config.data.path`` at CUB_200_2011/ (images.txt,
image_class_labels.txt, images/). Weights: ``--config.model.weights``, as in
trinet_market1501.py.
"""

from experiments.configs import default


def mlrc(dataset: str, margin: float):
  """The MLRC protocol on a class-disjoint benchmark with a ``test`` split."""
  c = default.get_config()
  c.data = dict(name=dataset, path="")
  c.model = dict(name="resnet50", embedding_dim=128, normalize=True, freeze_batch_norm=True,
                 weights=None)
  c.loss = dict(name="batch_all_triplet_loss", margin=margin, metric="euclidean",
                reduction="mean_nonzero")
  c.sampler = dict(p=8, k=4)
  c.optimizer = dict(name="rmsprop", learning_rate=1e-6, decay=0.99)
  c.schedule = dict(name="constant", warmup_steps=0)
  c.augment = dict(size=(227, 227), random_resized_crop=(0.16, 1.0), flip=True,
                   eval_resize=(256, 256))
  c.evals = {"test": dict(name="retrieval", split="test", ks=(1, 2, 4, 8))}
  c.num_steps = 20000
  c.log_every = 100
  c.eval_every = 2000
  c.checkpoint_every = 1000
  c.eval_batch_size = 128
  c.raw_baseline = False
  c.workers = 8
  return c


def get_config():
  return mlrc("cub200", margin=0.0961)
