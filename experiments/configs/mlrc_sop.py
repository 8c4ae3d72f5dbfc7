"""Stanford Online Products under the MLRC protocol (Musgrave et al. 2020; see
mlrc_cub200.py): ``Ebay_train.txt`` (11,318 classes) for training,
``Ebay_test.txt`` (11,316 classes, 60,502 images) for testing, MLRC's triplet
loss with its SOP optimum, margin 0.0451. Backbone: ResNet-50 in place of
BN-Inception (not directly comparable with MLRC's tables).

Data: Stanford_Online_Products (Oh Song et al. Deep Metric Learning via Lifted
Structured Feature Embedding. 2016); point ``--config.data.path`` at the
folder holding Ebay_train.txt, Ebay_test.txt and the per-category folders.
"""

from experiments.configs import mlrc_cub200


def get_config():
  c = mlrc_cub200.mlrc("sop", margin=0.0451)
  c.evals = {"test": dict(name="retrieval", split="test", ks=(1, 10, 100))}
  return c
