"""Cars196 under the MLRC protocol (Musgrave et al. 2020; see mlrc_cub200.py):
classes 1–98 train, 99–196 test, MLRC's triplet loss with its Cars196 optimum,
margin 0.1190. Backbone: ResNet-50 in place of BN-Inception (not directly
comparable with MLRC's tables).

Data: the Stanford Cars images and ``cars_annos.mat`` (Krause et al. 3D Object
Representations for Fine-Grained Categorization. 2013); point
``--config.data.path`` at the folder holding cars_annos.mat and car_ims/.
"""

from experiments.configs import mlrc_cub200


def get_config():
  return mlrc_cub200.mlrc("cars196", margin=0.1190)
