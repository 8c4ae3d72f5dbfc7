"""TriNet on Market-1501 (Hermans, Beyer, Leibe. In Defense of the Triplet Loss
for Person Re-Identification. 2017): the paper's protocol, to reproduce its
rank-1 84.9 % and mAP 69.1 % (single query, no re-ranking; the paper reports
86.7 % and 81.1 % with k-reciprocal re-ranking).

Protocol, as in the paper:
  * ResNet-50 from ImageNet weights, its 2048-D pooled features → a 1024-D
    hidden layer (BatchNorm, ReLU) → a 128-D embedding, not normalised;
  * batch-hard triplet loss with the soft margin (the ``hermans`` preset),
    euclidean distances, P=18 identities × K=4 images;
  * 256×128 random crops of images resized to 288×144, horizontal flips;
  * Adam (lr 3e-4, β1 0.9, β2 0.999, ε 1e-3), 25,000 iterations, the learning
    rate decayed exponentially to 0.001× from iteration 15,000;
  * test-time augmentation: the embeddings of 5 crops × flip averaged;
  * CMC rank-k, mAP (and mINP, Ye et al. 2021) on query/ against
    bounding_box_test/ (junk images and same-camera matches removed), without
    (``reid``) and with (``reid_rerank``) k-reciprocal re-ranking (Zhong et
    al. 2017: k1 20, k2 6, λ 0.3).

Data: download Market-1501-v15.09.15 (Zheng et al. Scalable Person
Re-identification: A Benchmark. 2015) and extract it; point
``--config.data.path`` at the folder holding bounding_box_train/,
bounding_box_test/ and query/.

Weights: ``--config.model.weights=PATH.safetensors``, torchvision's ImageNet
ResNet-50 in torchvision's parameter names (for instance
``python -m experiments.tools.export_weights --model=resnet50 --out=resnet50.safetensors``
on a machine with torchvision). Without weights the run starts from random
initialisation and is not comparable to the paper.

Run on 2 CPU cores it is far too slow to reproduce; it is smoke-tested on a
Market-1501-layout fixture (tests/recipes_test.py).
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.data = dict(name="market1501", path="")
  c.model = dict(name="resnet50", embedding_dim=128, normalize=False, head_hidden=(1024,),
                 weights=None)
  c.loss = dict(name="hermans")
  c.sampler = dict(p=18, k=4)
  c.optimizer = dict(name="adam", learning_rate=3e-4, b1=0.9, b2=0.999, eps=1e-3)
  c.schedule = dict(name="exponential", warmup_steps=0, final_fraction=0.001,
                    decay_begin=15000)
  c.augment = dict(size=(256, 128), resize=(288, 144), flip=True, eval_resize=(288, 144),
                   tta="five_crop_flip")
  c.evals = {"reid": dict(name="reid", query="query", gallery="gallery", ks=(1, 5, 10)),
             "reid_rerank": dict(name="reid", query="query", gallery="gallery",
                                 ks=(1, 5, 10), rerank=True, k1=20, k2=6, lambda_value=0.3)}
  c.num_steps = 25000
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 1000
  c.eval_batch_size = 64
  c.raw_baseline = False
  c.workers = 8
  return c
