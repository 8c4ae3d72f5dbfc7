r"""Proxy and classifier losses: embeddings against learned class vectors.

Every loss here compares a batch of embeddings with an explicit array of
class vectors — proxies, centres or classifier weights — of shape
``[num_classes, dim]``, or ``[num_classes * k, dim]`` with ``k`` vectors per
class, class :math:`c` owning rows :math:`ck, \dots, ck + k - 1`. Gradients
flow to that array, so it is trained together with the encoder; :class:`metric_learning.models.Proxies`
is a small Flax NNX module that holds one.

Labels index the classes: ``0 <= labels < num_classes`` on real rows (padding
rows, ``where=False``, may hold anything). Concrete labels are checked and an
out-of-range one raises ValueError; under ``jax.jit`` they cannot be, and a
real row with an out-of-range label makes the loss NaN instead of silently
wrong.

All losses use the cosine similarity :math:`s_{ic} = \hat x_i^\top \hat p_c` of
L2-normalised vectors, computed at ``HIGHEST`` matmul precision in fp32 or
wider. With ``axis_name`` (inside ``pmap`` / ``shard_map``) the loss is the
loss of the global batch: the proxies are replicated, each device's gradient
w.r.t. its embeddings equals the single-device one, and the proxies'
gradients are this device's share — summed over devices (as a data-parallel
train step does) they equal the single-device gradient.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from metric_learning import _validation
from metric_learning import distances as distances_lib
from metric_learning import reductions
from metric_learning.losses import _pipeline

_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------- #
# Shared steps.
# --------------------------------------------------------------------------- #


def _check_labels(labels, where, num_classes: int, name: str) -> None:
  """Raises when concrete labels of real rows fall outside ``[0, num_classes)``."""
  if isinstance(labels, jax.core.Tracer) or isinstance(where, jax.core.Tracer):
    return
  labels, where = np.asarray(labels), np.asarray(where)
  bad = where & ((labels < 0) | (labels >= num_classes))
  if np.any(bad):
    raise ValueError(
        f"labels must index the rows of {name}: 0 <= label < {num_classes} "
        f"({name} has shape [{num_classes}{' * k' if name != 'proxies' else ''}, dim]); "
        f"got {labels[bad][:5].tolist()} at rows {np.flatnonzero(bad)[:5].tolist()}.")


def _similarities(embeddings, labels, proxies, where, axis_name, *, name: str,
                  per_class: int = 1):
  """Validates the inputs; returns (batch, ``[B, C*k]`` cosine similarities, C)."""
  batch = _pipeline.prepare(embeddings, labels, where, axis_name=axis_name)
  proxies = _validation.float_matrix(proxies, name)
  _validation.same_dim(batch.anchors, proxies, "embeddings", name)
  if proxies.shape[0] % per_class or proxies.shape[0] == 0:
    raise ValueError(
        f"{name} must have num_classes * {per_class} rows (> 0); got shape {proxies.shape}.")
  num_classes = proxies.shape[0] // per_class
  _check_labels(labels, batch.where, num_classes, name)
  dtype = _validation.compute_dtype(jnp.result_type(batch.anchors, proxies))
  x = distances_lib.l2_normalize(batch.anchors.astype(dtype))
  p = distances_lib.l2_normalize(proxies.astype(dtype))
  cos = jnp.matmul(x, p.T, precision=_HIGHEST)
  return batch, cos, num_classes


def _one_hot(labels, num_classes):
  return labels[:, None] == jnp.arange(num_classes)[None, :]


def _invalid(labels, where, num_classes):
  """Real rows whose label is not a class index (only possible under jit)."""
  return where & ((labels < 0) | (labels >= num_classes))


def _per_row(batch, values, num_classes, reduction):
  """Reduces per-row losses over real rows; NaN marks out-of-range labels."""
  values = jnp.where(_invalid(batch.labels, batch.where, num_classes), jnp.nan, values)
  return batch.finish(_pipeline.terms(values, batch.where), reduction)


def _cross_entropy(logits, labels, num_classes):
  r"""Per-row softmax cross-entropy at integer ``labels`` (clipped into range).

  Written as :math:`(m - z_y) + \mathrm{log1p}(\sum_{c \ne y} e^{z_c - m} +
  \mathrm{expm1}(z_y - m))` with :math:`m = \max_c z_c`: no overflow, and a
  well-classified row keeps its small loss (down to ~1e-38 in fp32) instead
  of rounding it to 0 below 6e-8 as ``logsumexp(z) - z_y`` does.
  """
  index = jnp.clip(labels, 0, num_classes - 1)[:, None]
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  target = jnp.take_along_axis(logits, index, axis=-1)
  others = jnp.sum(jnp.where(_one_hot(index[:, 0], num_classes), 0,
                             jnp.exp(logits - top)), axis=-1, keepdims=True)
  return ((top - target) + jnp.log1p(others + jnp.expm1(target - top)))[:, 0]


def _margin_softmax(cos, labels, num_classes, target: Callable, scale):
  """Cross-entropy of ``scale * logits`` whose target logit is ``target(cos)``."""
  logits = jnp.where(_one_hot(labels, num_classes), target(cos), cos)
  return _cross_entropy(scale * logits, labels, num_classes)


def _check_reduction(reduction, **nonnegative):
  _pipeline.check_options(reduction=reduction, **nonnegative)


# --------------------------------------------------------------------------- #
# Proxy-based metric learning losses.
# --------------------------------------------------------------------------- #


def _log1p_sum_exp_rows(z, mask, axis_name):
  r"""Per column :math:`\log(1 + \sum_{i \in mask} e^{z_{ic}})` over the global batch.

  Shifted by :math:`\max(0, \max_i z_{ic})` so that no exponential overflows;
  unshifted columns use ``log1p``, so small terms keep their value.
  Under ``axis_name`` the sums are completed across devices, but only this
  device's share is differentiated (see the module docstring).
  """
  fill = jnp.where(mask, jax.lax.stop_gradient(z), _pipeline.NEG_LOG)
  shift = jnp.maximum(jnp.max(fill, axis=0), 0.0)
  if axis_name is not None:
    shift = jax.lax.pmax(shift, axis_name)
  shift = jax.lax.stop_gradient(shift)
  total = jnp.sum(jnp.where(mask, jnp.exp(jnp.where(mask, z, shift) - shift), 0), axis=0)
  if axis_name is not None:
    total = total + jax.lax.stop_gradient(jax.lax.psum(total, axis_name) - total)
  return jnp.where(shift > 0, shift + jnp.log(jnp.exp(-shift) + total), jnp.log1p(total))


def proxy_anchor_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array, *,
                      margin=0.1, alpha=32.0, where: jax.Array | None = None,
                      reduction: str = "mean",
                      axis_name: str | None = None) -> jax.Array:
  r"""Proxy-Anchor loss (Kim, Kim, Cho, Kwak 2020).

  Each proxy :math:`p` is an anchor; :math:`X_p^+` are the batch rows of its
  class, :math:`X_p^-` the others, :math:`P^+` the proxies with
  :math:`X_p^+ \neq \emptyset`, and :math:`s(x, p)` the cosine similarity:

  .. math::
    \ell = \frac{1}{|P^+|} \sum_{p \in P^+}
             \log\Big(1 + \sum_{x \in X_p^+} e^{-\alpha (s(x, p) - \delta)}\Big)
         + \frac{1}{|P|} \sum_{p \in P}
             \log\Big(1 + \sum_{x \in X_p^-} e^{\alpha (s(x, p) + \delta)}\Big)

  The terms are per proxy, not per row: ``"none"`` gives each proxy's
  positive plus negative term (``[num_classes]``), ``"sum"`` their total,
  ``"mean"`` the paper's :math:`\ell` above, and ``"mean_nonzero"`` divides the
  two sums by the numbers of proxies whose positive (negative) term is > 0.
  Defaults :math:`\delta = 0.1, \alpha = 32` are the paper's.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer class indices in ``[0, num_classes)``.
    proxies: ``[num_classes, dim]`` floating array (normalised internally).
    margin: :math:`\delta`.
    alpha: scale :math:`\alpha > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: inside ``pmap`` / ``shard_map``, the loss of the global batch.

  Returns:
    A scalar, or ``[num_classes]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.proxies import proxy_anchor_loss
    >>> x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> proxies = jnp.array([[1.0, 0.2], [0.2, 1.0]])
    >>> round(float(proxy_anchor_loss(x, jnp.array([0, 0, 1, 1]), proxies)), 4)
    27.0477

  References:
    Kim, Kim, Cho, Kwak. Proxy Anchor Loss for Deep Metric Learning. CVPR
    2020. https://arxiv.org/abs/2003.13911
  """
  _check_reduction(reduction, margin=margin)
  _validation.positive(alpha, "alpha")
  batch, cos, num_classes = _similarities(embeddings, labels, proxies, where, axis_name,
                                          name="proxies")
  same = _one_hot(batch.labels, num_classes)
  real = batch.where[:, None]
  pos = _log1p_sum_exp_rows(-alpha * (cos - margin), same & real, axis_name)
  neg = _log1p_sum_exp_rows(alpha * (cos + margin), ~same & real, axis_name)
  bad = jnp.any(_invalid(batch.labels, batch.where, num_classes))
  if axis_name is not None:
    bad = jax.lax.psum(bad.astype(jnp.int32), axis_name) > 0
  pos = jnp.where(bad, jnp.nan, pos)
  if reduction == "none":
    return (pos + neg).astype(batch.out_dtype)
  if reduction == "sum":
    return jnp.sum(pos + neg).astype(batch.out_dtype)
  if reduction == "mean":
    has_pos = jnp.sum(same & real, axis=0)
    if axis_name is not None:
      has_pos = jax.lax.psum(has_pos, axis_name)
    pos_count, neg_count = jnp.sum(has_pos > 0), num_classes
  else:
    pos_count, neg_count = jnp.sum(pos > 0), jnp.sum(neg > 0)
  value = (reductions.safe_divide(jnp.sum(pos), jnp.asarray(pos_count, pos.dtype))
           + reductions.safe_divide(jnp.sum(neg), jnp.asarray(neg_count, neg.dtype)))
  return value.astype(batch.out_dtype)


def proxy_nca_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array, *,
                   scale=1.0, where: jax.Array | None = None, reduction: str = "mean",
                   axis_name: str | None = None) -> jax.Array:
  r"""Proxy-NCA loss (Movshovitz-Attias, Toshev, Leung, Ioffe, Singh 2017).

  With :math:`d(x, p) = \|\hat x - \hat p\|^2` between L2-normalised vectors,

  .. math::
    \ell_i = -\log \frac{e^{-\sigma\, d(x_i, p_{y_i})}}{\sum_{c} e^{-\sigma\, d(x_i, p_c)}}

  The denominator runs over all proxies, as in NCA and pytorch-metric-learning's
  ``ProxyNCALoss`` (the paper's equation leaves the positive proxy out, which
  makes the loss unbounded below). :math:`\sigma` is pytorch-metric-learning's
  ``softmax_scale`` (default 1; the paper has none). ``"mean"`` is over real
  rows.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer class indices in ``[0, num_classes)``.
    proxies: ``[num_classes, dim]`` floating array (normalised internally).
    scale: softmax scale :math:`\sigma > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: inside ``pmap`` / ``shard_map``, the loss of the global batch.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.proxies import proxy_nca_loss
    >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> proxies = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> [round(v, 4) for v in proxy_nca_loss(x, jnp.array([0, 1]), proxies,
    ...                                      reduction="none").tolist()]
    [0.1269, 0.1269]

  References:
    Movshovitz-Attias, Toshev, Leung, Ioffe, Singh. No Fuss Distance Metric
    Learning using Proxies. ICCV 2017. https://arxiv.org/abs/1703.07464
  """
  _check_reduction(reduction)
  _validation.positive(scale, "scale")
  batch, cos, num_classes = _similarities(embeddings, labels, proxies, where, axis_name,
                                          name="proxies")
  # d = 2 - 2 cos for unit vectors; the constant cancels in the softmax.
  values = _cross_entropy(2.0 * scale * cos, batch.labels, num_classes)
  return _per_row(batch, values, num_classes, reduction)


def soft_triple_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array, *,
                     centers_per_class: int = 10, la=20.0, gamma=0.1, margin=0.01, center_reg=0.0,
                     where: jax.Array | None = None, reduction: str = "mean",
                     axis_name: str | None = None) -> jax.Array:
  r"""SoftTriple loss (Qian, Shang, Sun, Hu, Li, Jin 2019).

  Each class :math:`c` has :math:`K` centres; the similarity to a class is a
  softmax-weighted mean over its centres,

  .. math::
    S_{ic} = \sum_k \frac{e^{s_{i,ck}/\gamma}}{\sum_{k'} e^{s_{i,ck'}/\gamma}} s_{i,ck},
    \qquad
    \ell_i = -\log \frac{e^{\lambda (S_{iy_i} - \delta)}}
                        {e^{\lambda (S_{iy_i} - \delta)} + \sum_{c \ne y_i} e^{\lambda S_{ic}}}

  Defaults (:math:`K = 10, \lambda = 20, \gamma = 0.1, \delta = 0.01`) are the
  paper's. ``center_reg=τ`` adds the paper's regulariser, which pulls a class's
  centres together so that redundant ones merge:

  .. math::
    \tau \, \frac{\sum_c \sum_{t < s} \sqrt{2 + 10^{-5} - 2\, w_{ct}^\top w_{cs}}}
                  {C K (K - 1)}

  over the normalised centres (0 when K = 1; the paper uses τ = 0.2). It is
  added to every reduction (to each row with ``"none"``) and, under
  ``axis_name``, counted once for the global batch. The default 0 leaves it to
  the caller, as pytorch-metric-learning's ``SoftTripleLoss`` does.
  ``"mean"`` is over real rows.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer class indices in ``[0, num_classes)``.
    proxies: ``[num_classes * centers_per_class, dim]``; class ``c`` owns rows
      ``c * K`` to ``c * K + K - 1`` (normalised internally).
    centers_per_class: :math:`K`, a static positive int.
    la: :math:`\lambda > 0`, the scale of the class logits.
    gamma: :math:`\gamma > 0`, the temperature of the softmax over centres.
    margin: :math:`\delta \ge 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: inside ``pmap`` / ``shard_map``, the loss of the global batch.
    center_reg: :math:`\tau \ge 0`, the weight of the centre regulariser.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.proxies import soft_triple_loss
    >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> centers = jnp.array([[1.0, 0.0], [1.0, 0.5], [0.0, 1.0], [0.5, 1.0]])
    >>> round(float(soft_triple_loss(x, jnp.array([0, 1]), centers,
    ...                              centers_per_class=2)), 4)
    0.0

  References:
    Qian, Shang, Sun, Hu, Li, Jin. SoftTriple Loss: Deep Metric Learning
    Without Triplet Sampling. ICCV 2019. https://arxiv.org/abs/1909.05235
  """
  _check_reduction(reduction, margin=margin, center_reg=center_reg)
  _validation.positive(la, "la")
  _validation.positive(gamma, "gamma")
  per_class = _static_count(centers_per_class, "centers_per_class")
  batch, cos, num_classes = _similarities(embeddings, labels, proxies, where, axis_name,
                                          name="proxies", per_class=per_class)
  cos = cos.reshape(cos.shape[0], num_classes, per_class)
  weights = jax.nn.softmax(cos / gamma, axis=-1)
  sim = jnp.sum(weights * cos, axis=-1)
  values = _margin_softmax(sim, batch.labels, num_classes, lambda s: s - margin, la)
  loss = _per_row(batch, values, num_classes, reduction)
  if (isinstance(center_reg, (int, float)) and center_reg == 0) or per_class == 1:
    return loss
  w = distances_lib.l2_normalize(proxies.astype(cos.dtype)).reshape(num_classes, per_class, -1)
  gram = jnp.einsum("ckd,cld->ckl", w, w, precision=jax.lax.Precision.HIGHEST)
  upper = jnp.triu(jnp.ones((per_class, per_class), bool), k=1)
  spread = jnp.sum(jnp.where(upper, jnp.sqrt(jnp.where(upper, 2.0 + 1e-5 - 2.0 * gram, 1.0)),
                             0.0))
  reg = center_reg * spread / (num_classes * per_class * (per_class - 1))
  if axis_name is not None:   # once for the global batch: each device differentiates 1/n
    share = reg / jax.lax.psum(1, axis_name)
    reg = share + jax.lax.stop_gradient(reg - share)
  return (loss + reg).astype(loss.dtype)


# --------------------------------------------------------------------------- #
# Normalised classifier losses (class weights as proxies).
# --------------------------------------------------------------------------- #


def normalized_softmax_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array,
                            *, temperature=0.05, where: jax.Array | None = None,
                            reduction: str = "mean",
                            axis_name: str | None = None) -> jax.Array:
  r"""Normalised softmax loss (Zhai and Wu 2019): a cosine classifier.

  .. math::
    \ell_i = -\log \frac{e^{s_{iy_i}/T}}{\sum_c e^{s_{ic}/T}}

  with :math:`s_{ic}` the cosine similarity of row :math:`i` and class weight
  :math:`w_c`. The default :math:`T = 0.05` is the paper's and
  pytorch-metric-learning's. ``"mean"`` is over real rows.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer class indices in ``[0, num_classes)``.
    proxies: ``[num_classes, dim]`` class weights, the proxies (normalised internally).
    temperature: :math:`T > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: inside ``pmap`` / ``shard_map``, the loss of the global batch.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.proxies import normalized_softmax_loss
    >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    >>> w = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> [round(v, 4) for v in normalized_softmax_loss(
    ...     x, jnp.array([0, 0]), w, temperature=0.5, reduction="none").tolist()]
    [0.1269, 0.913]

  References:
    Zhai, Wu. Classification is a Strong Baseline for Deep Metric Learning.
    BMVC 2019. https://arxiv.org/abs/1811.12649
  """
  _check_reduction(reduction)
  _validation.positive(temperature, "temperature")
  batch, cos, num_classes = _similarities(embeddings, labels, proxies, where, axis_name,
                                          name="proxies")
  values = _cross_entropy(cos / temperature, batch.labels, num_classes)
  return _per_row(batch, values, num_classes, reduction)


def _arc_target(margin):
  r"""ArcFace's target logit :math:`\cos(\theta + m)`, kept monotonic past :math:`\pi - m`.

  Written with :math:`\sin\theta = \sqrt{1 - \cos^2\theta}` and a safe sqrt
  rather than ``arccos``, whose derivative is infinite at :math:`\cos = \pm 1`.
  """
  def target(cos):
    cos = jnp.clip(cos, -1.0, 1.0)
    sin = distances_lib.safe_sqrt(jnp.maximum(1.0 - cos * cos, 0.0))
    cos_m, sin_m = jnp.cos(margin), jnp.sin(margin)
    # theta <= pi - m  <=>  cos(theta) >= cos(pi - m) = -cos(m)
    return jnp.where(cos >= -cos_m, cos * cos_m - sin * sin_m, cos - margin * sin_m)
  return target


def arcface_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array, *,
                 margin=0.5, scale=64.0, where: jax.Array | None = None,
                 reduction: str = "mean", axis_name: str | None = None) -> jax.Array:
  r"""ArcFace: additive angular margin loss (Deng, Guo, Xue, Zafeiriou 2019).

  With :math:`\theta_{ic}` the angle between row :math:`i` and class weight
  :math:`w_c`,

  .. math::
    \ell_i = -\log \frac{e^{s \psi(\theta_{iy_i})}}
                        {e^{s \psi(\theta_{iy_i})} + \sum_{c \ne y_i} e^{s \cos\theta_{ic}}},
    \qquad
    \psi(\theta) = \begin{cases} \cos(\theta + m) & \theta \le \pi - m \\
                                 \cos\theta - m \sin m & \text{otherwise} \end{cases}

  (the second branch keeps :math:`\psi` decreasing, as in
  pytorch-metric-learning's ``ArcFaceLoss``). ``margin`` is in **radians**:
  the default 0.5 is the paper's; pytorch-metric-learning's default is 28.6
  degrees (0.4992 rad). ``"mean"`` is over real rows.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer class indices in ``[0, num_classes)``.
    proxies: ``[num_classes, dim]`` class weights, the proxies (normalised internally).
    margin: additive angular margin :math:`m \ge 0`, in radians.
    scale: logit scale :math:`s > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: inside ``pmap`` / ``shard_map``, the loss of the global batch.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.proxies import arcface_loss
    >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    >>> w = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> [round(v, 4) for v in arcface_loss(x, jnp.array([0, 1]), w, scale=4.0,
    ...                                    reduction="none").tolist()]
    [0.0294, 1.1317]

  References:
    Deng, Guo, Xue, Zafeiriou. ArcFace: Additive Angular Margin Loss for Deep
    Face Recognition. CVPR 2019. https://arxiv.org/abs/1801.07698
  """
  _check_reduction(reduction, margin=margin)
  _validation.positive(scale, "scale")
  batch, cos, num_classes = _similarities(embeddings, labels, proxies, where, axis_name,
                                          name="proxies")
  values = _margin_softmax(cos, batch.labels, num_classes, _arc_target(margin), scale)
  return _per_row(batch, values, num_classes, reduction)


def cosface_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array, *,
                 margin=0.35, scale=64.0, where: jax.Array | None = None,
                 reduction: str = "mean", axis_name: str | None = None) -> jax.Array:
  r"""CosFace: large margin cosine loss (Wang et al. 2018).

  .. math::
    \ell_i = -\log \frac{e^{s (\cos\theta_{iy_i} - m)}}
                        {e^{s (\cos\theta_{iy_i} - m)} + \sum_{c \ne y_i} e^{s \cos\theta_{ic}}}

  Defaults :math:`s = 64, m = 0.35` are the paper's and pytorch-metric-learning's.
  ``"mean"`` is over real rows.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer class indices in ``[0, num_classes)``.
    proxies: ``[num_classes, dim]`` class weights, the proxies (normalised internally).
    margin: cosine margin :math:`m \ge 0`.
    scale: logit scale :math:`s > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: inside ``pmap`` / ``shard_map``, the loss of the global batch.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.proxies import cosface_loss
    >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    >>> w = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> [round(v, 4) for v in cosface_loss(x, jnp.array([0, 1]), w, scale=4.0,
    ...                                    reduction="none").tolist()]
    [0.0716, 1.0375]

  References:
    Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu. CosFace: Large Margin Cosine
    Loss for Deep Face Recognition. CVPR 2018. https://arxiv.org/abs/1801.09414
  """
  _check_reduction(reduction, margin=margin)
  _validation.positive(scale, "scale")
  batch, cos, num_classes = _similarities(embeddings, labels, proxies, where, axis_name,
                                          name="proxies")
  values = _margin_softmax(cos, batch.labels, num_classes, lambda c: c - margin, scale)
  return _per_row(batch, values, num_classes, reduction)


def subcenter_arcface_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array,
                           *, sub_centers: int = 3, margin=0.5, scale=64.0,
                           where: jax.Array | None = None, reduction: str = "mean",
                           axis_name: str | None = None) -> jax.Array:
  r"""Sub-center ArcFace (Deng, Guo, Liu, Zafeiriou, Xue 2020).

  Each class has :math:`K` sub-centres; the cosine to a class is the largest
  cosine to its sub-centres,
  :math:`\cos\theta_{ic} = \max_k \hat x_i^\top \hat w_{ck}`, and the loss is
  :func:`arcface_loss` on those. Defaults :math:`K = 3, m = 0.5, s = 64` are the
  paper's (pytorch-metric-learning: ``margin=28.6`` degrees). ``"mean"`` is
  over real rows.

  Args:
    embeddings: ``[batch, dim]`` floating array (normalised internally).
    labels: ``[batch]`` integer class indices in ``[0, num_classes)``.
    proxies: ``[num_classes * sub_centers, dim]``; class ``c`` owns rows
      ``c * K`` to ``c * K + K - 1`` (normalised internally).
    sub_centers: :math:`K`, a static positive int.
    margin: additive angular margin :math:`m \ge 0`, in radians.
    scale: logit scale :math:`s > 0`.
    where: optional ``[batch]`` bool; False marks padding rows.
    reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"mean_nonzero"``.
    axis_name: inside ``pmap`` / ``shard_map``, the loss of the global batch.

  Returns:
    A scalar, or ``[batch]`` with ``reduction="none"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from metric_learning.losses.proxies import subcenter_arcface_loss
    >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    >>> w = jnp.array([[1.0, 0.0], [0.0, -1.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> [round(v, 4) for v in subcenter_arcface_loss(
    ...     x, jnp.array([0, 1]), w, sub_centers=2, scale=4.0, reduction="none").tolist()]
    [0.0294, 1.1317]

  References:
    Deng, Guo, Liu, Zafeiriou, Xue. Sub-center ArcFace: Boosting Face
    Recognition by Large-Scale Noisy Web Faces. ECCV 2020.
    https://www.ecva.net/papers/eccv_2020/papers_ECCV/papers/123560715.pdf
  """
  _check_reduction(reduction, margin=margin)
  _validation.positive(scale, "scale")
  per_class = _static_count(sub_centers, "sub_centers")
  batch, cos, num_classes = _similarities(embeddings, labels, proxies, where, axis_name,
                                          name="proxies", per_class=per_class)
  cos = jnp.max(cos.reshape(cos.shape[0], num_classes, per_class), axis=-1)
  values = _margin_softmax(cos, batch.labels, num_classes, _arc_target(margin), scale)
  return _per_row(batch, values, num_classes, reduction)


def _static_count(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int; got {value!r}.")
  return int(value)


# --------------------------------------------------------------------------- #
# The proxies' initialisation (the trainable holder is
# ``metric_learning.models.Proxies``, which needs flax).
# --------------------------------------------------------------------------- #


def default_proxy_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  r"""He-normal init of a ``[rows, dim]`` proxy array: :math:`\mathcal N(0, 2 / rows)`.

  This is ``torch.nn.init.kaiming_normal_(mode="fan_out")`` on a
  ``[rows, dim]`` tensor, the initialisation of the Proxy-Anchor authors and
  pytorch-metric-learning's ``ProxyAnchorLoss``. The losses normalise the
  proxies, so only their directions matter at the start: isotropic random
  directions.
  """
  return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / shape[0])
