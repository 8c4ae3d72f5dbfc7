"""Face verification on LFW (Huang et al. Labeled Faces in the Wild. 2007) with
its standard protocol: the 6,000 pairs of ``pairs.txt`` in 10 folds; for each
fold the distance threshold is chosen on the other nine; reported are the mean
and standard deviation of the fold accuracies (``verification/lfw_accuracy``)
and the ROC figures.

LFW is only evaluated on: training uses a separate identity folder
(``--config.data.train_path``, one sub-folder of aligned face crops per
person, e.g. CASIA-WebFace, Yi et al. 2014) that must not share identities with
LFW. Recipe: ResNet-50 from ImageNet weights at 112×112, 512-D L2-normalised
embeddings, ArcFace (Deng et al. 2019; margin 0.5 rad, scale 64) with the
class vectors trained alongside, P=32 identities × K=4, flips, SGD momentum
0.9 with cosine decay. Accuracies in the literature depend on the training set
and the face alignment; this recipe reproduces the protocol, not one paper's
number.

Data: extract lfw.tgz (or the aligned variant you train on) next to
pairs.txt and point ``--config.data.path`` at that folder.
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.data = dict(name="lfw", path="", train_path="")
  c.model = dict(name="resnet50", embedding_dim=512, normalize=True, weights=None)
  c.loss = dict(name="arcface_loss")
  c.sampler = dict(p=32, k=4)
  c.optimizer = dict(name="sgd", learning_rate=0.1, momentum=0.9)
  c.schedule = dict(name="cosine", warmup_steps=1000)
  c.augment = dict(size=(112, 112), flip=True)
  c.evals = {"verification": dict(name="verification", split="test", pairs="protocol")}
  c.num_steps = 50000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 1000
  c.eval_batch_size = 256
  c.raw_baseline = False
  c.workers = 8
  return c
