"""Brute-force NumPy float64 references: explicit loops over anchors, pairs, triplets.

Deliberately naive — nothing here shares code with the library. Each loss
reference returns per-anchor (value, count, nonzero) lists, reduced by
:func:`reduce`.
"""

import math

import numpy as np


def distance(a, b, metric):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if metric == "dot":          # a similarity, ranked as the distance -a.b
    return -float(a @ b)
  if metric == "cosine":
    na, nb = math.sqrt(a @ a), math.sqrt(b @ b)
    cos = 0.0 if na == 0 or nb == 0 else (a @ b) / (na * nb)
    return 1.0 - cos
  sq = float(np.sum((a - b) ** 2))
  return math.sqrt(sq) if metric == "euclidean" else sq


def distance_matrix(x, y, metric):
  return np.array([[distance(a, b, metric) for b in y] for a in x])


class Setup:
  """Anchors = batch; candidates = batch followed by optional references."""

  def __init__(self, x, labels, where=None, refs=None, ref_labels=None, ref_where=None):
    self.x = np.asarray(x, np.float64)
    self.labels = [int(v) for v in labels]
    self.where = [True] * len(self.labels) if where is None else [bool(v) for v in where]
    self.cands = self.x
    self.cand_labels = list(self.labels)
    self.cand_where = list(self.where)
    if refs is not None:
      self.cands = np.concatenate([self.x, np.asarray(refs, np.float64)])
      self.cand_labels += [int(v) for v in ref_labels]
      self.cand_where += ([True] * len(ref_labels) if ref_where is None
                          else [bool(v) for v in ref_where])

  def anchors(self):
    return [i for i in range(len(self.labels)) if self.where[i]]

  def positives(self, i):
    return [j for j in range(len(self.cand_labels)) if j != i and self.cand_where[j]
            and self.cand_labels[j] == self.labels[i] and self.where[i]]

  def negatives(self, i):
    return [k for k in range(len(self.cand_labels)) if self.cand_where[k]
            and self.cand_labels[k] != self.labels[i] and self.where[i]]

  def d(self, i, j, metric):
    return distance(self.x[i], self.cands[j], metric)

  def cand_negatives(self, j):
    """Negatives of candidate j (a batch or a bank row) among the candidates."""
    return [k for k in range(len(self.cand_labels)) if self.cand_where[k]
            and self.cand_labels[k] != self.cand_labels[j]]

  def cd(self, j, k, metric):
    return distance(self.cands[j], self.cands[k], metric)


def term(gap, margin, soft):
  if soft:
    return math.log1p(math.exp(gap)) if gap < 30 else gap
  return max(margin + gap, 0.0)


def reduce(per_anchor, reduction):
  values = np.array([v for v, _, _ in per_anchor], np.float64)
  counts = sum(c for _, c, _ in per_anchor)
  nonzero = sum(n for _, _, n in per_anchor)
  if reduction == "none":
    return values
  total = float(values.sum())
  if reduction == "sum":
    return total
  den = counts if reduction == "mean" else nonzero
  return total / den if den > 0 else 0.0


def _collect(values):
  """(sum, count, nonzero) of a list of term values."""
  return (float(sum(values)), len(values), sum(1 for v in values if v > 0))


def batch_hard(s, metric, margin, soft, positive="hard"):
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    if not pos or not neg:
      out.append((0.0, 0, 0))
      continue
    dps = [s.d(i, j, metric) for j in pos]
    dp = max(dps) if positive == "hard" else min(dps)
    dn = min(s.d(i, k, metric) for k in neg)
    out.append(_collect([term(dp - dn, margin, soft)]))
  return out


def batch_all(s, metric, margin, soft):
  out = []
  for i in range(len(s.labels)):
    vals = [term(s.d(i, j, metric) - s.d(i, k, metric), margin, soft)
            for j in s.positives(i) for k in s.negatives(i)]
    out.append(_collect(vals))
  return out


def semi_hard_facenet(s, metric, margin, soft):
  out = []
  for i in range(len(s.labels)):
    vals = []
    for j in s.positives(i):
      for k in s.negatives(i):
        dp, dn = s.d(i, j, metric), s.d(i, k, metric)
        if dp < dn < dp + margin:
          vals.append(term(dp - dn, margin, soft))
    out.append(_collect(vals))
  return out


def semi_hard_tfa(s, metric, margin, soft):
  out = []
  for i in range(len(s.labels)):
    neg = s.negatives(i)
    vals = []
    for j in (s.positives(i) if neg else []):
      dp = s.d(i, j, metric)
      farther = [s.d(i, k, metric) for k in neg if s.d(i, k, metric) > dp]
      dn = min(farther) if farther else max(s.d(i, k, metric) for k in neg)
      vals.append(term(dp - dn, margin, soft))
    out.append(_collect(vals))
  return out


def quadruplet(s, metric, margin, margin2, soft=False):
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    if not pos or not neg:
      out.append((0.0, 0, 0))
      continue
    dp = max(s.d(i, j, metric) for j in pos)
    dn = min(s.d(i, k, metric) for k in neg)
    value = term(dp - dn, margin, soft)
    pairs = [s.cd(k, l, metric) for k in neg for l in neg
             if s.cand_labels[k] != s.cand_labels[l]]
    if pairs:
      value += term(dp - min(pairs), margin2, soft)
    out.append((value, 1, int(value > 0)))
  return out


def contrastive_parts(s, metric, margin, pos_margin=0.0, squared=True):
  """(positive-pair terms, negative-pair terms), per anchor."""
  shape = (lambda h: 0.5 * h * h) if squared else (lambda h: h)
  pos, neg = [], []
  for i in range(len(s.labels)):
    pos.append(_collect([shape(max(s.d(i, j, metric) - pos_margin, 0.0))
                         for j in s.positives(i)]))
    neg.append(_collect([shape(max(margin - s.d(i, k, metric), 0.0))
                         for k in s.negatives(i)]))
  return pos, neg


def contrastive(s, metric, margin):
  pos, neg = contrastive_parts(s, metric, margin)
  return [(p[0] + n[0], p[1] + n[1], p[2] + n[2]) for p, n in zip(pos, neg)]


def lifted(s, metric, margin):
  out = []
  for i in range(len(s.labels)):
    vals = []
    for j in s.positives(i):
      total = sum(math.exp(margin - s.d(i, k, metric)) for k in s.negatives(i))
      total += sum(math.exp(margin - s.cd(j, l, metric)) for l in s.cand_negatives(j))
      if total == 0:
        continue
      vals.append(0.5 * max(math.log(total) + s.d(i, j, metric), 0.0) ** 2)
    # count = pairs, value = sum; the paper's 1/(2|P|) over unordered pairs.
    out.append((float(sum(vals)), len(vals), sum(1 for v in vals if v > 0)))
  return out


def multi_similarity(s, alpha, beta, base, epsilon):
  out = []
  for i in range(len(s.labels)):
    pos, neg = s.positives(i), s.negatives(i)
    if not pos or not neg:
      out.append((0.0, 0, 0))
      continue
    sim = lambda j, i=i: 1.0 - s.d(i, j, "cosine")
    min_pos = min(sim(j) for j in pos)
    max_neg = max(sim(k) for k in neg)
    kp = [j for j in pos if sim(j) - epsilon < max_neg]
    kn = [k for k in neg if sim(k) + epsilon > min_pos]
    out.append(multi_similarity_terms(s, i, kp, kn, alpha, beta, base, empty_count=1))
  return out


def multi_similarity_terms(s, i, kp, kn, alpha, beta, base, empty_count=0):
  """Anchor i's (value, count, nonzero) on the kept positives kp and negatives kn."""
  if not kp or not kn:
    return (0.0, empty_count, 0)
  sim = lambda j: 1.0 - s.d(i, j, "cosine")
  value = (math.log1p(sum(math.exp(-alpha * (sim(j) - base)) for j in kp)) / alpha
           + math.log1p(sum(math.exp(beta * (sim(k) - base)) for k in kn)) / beta)
  return (value, 1, int(value > 0))


def margin_loss(s, metric, beta, margin):
  out = []
  for i in range(len(s.labels)):
    b = beta[i] if np.ndim(beta) else beta
    vals = [max(margin + s.d(i, j, metric) - b, 0.0) for j in s.positives(i)]
    vals += [max(margin - s.d(i, k, metric) + b, 0.0) for k in s.negatives(i)]
    out.append(_collect(vals))
  return out


def margin_triplets(s, metric, beta, margin):
  """Every triplet (i, j, k): [a + D_ij - b]_+ + [a - D_ik + b]_+; count = triplets,
  nonzero = active pair terms over all triplets (pytorch-metric-learning's divisor)."""
  out = []
  for i in range(len(s.labels)):
    b = beta[i] if np.ndim(beta) else beta
    value, count, nonzero = 0.0, 0, 0
    for j in s.positives(i):
      for k in s.negatives(i):
        lp = max(margin + s.d(i, j, metric) - b, 0.0)
        ln = max(margin - s.d(i, k, metric) + b, 0.0)
        value += lp + ln
        count += 1
        nonzero += int(lp > 0) + int(ln > 0)
    out.append((value, count, nonzero))
  return out


def npair_sohn(s):
  """Sohn 2016 eq. 3: the first real row of a label is its anchor, the second its
  positive; an anchor's negatives are the other labels' positives."""
  order = {}
  for c in range(len(s.cand_labels)):
    if s.cand_where[c]:
      order.setdefault(s.cand_labels[c], []).append(c)
  positive = {label: rows[1] for label, rows in order.items() if len(rows) > 1}
  out = []
  for i in range(len(s.labels)):
    label = s.labels[i]
    negs = [p for other, p in positive.items() if other != label]
    if (not s.where[i] or label not in positive or order[label][0] != i or not negs):
      out.append((0.0, 0, 0))
      continue
    logits = [float(s.x[i] @ s.cands[positive[label]])]
    logits += [float(s.x[i] @ s.cands[p]) for p in negs]
    top = max(logits)
    value = top + math.log(sum(math.exp(v - top) for v in logits)) - logits[0]
    out.append((value, 1, int(value > 0)))
  return out


def npair(s):
  out = []
  for i in range(len(s.labels)):
    neg = s.negatives(i)
    vals = []
    for j in (s.positives(i) if neg else []):
      sij = float(s.x[i] @ s.cands[j])
      z = [float(s.x[i] @ s.cands[k]) - sij for k in neg]
      top = max(0.0, max(z))                    # log(1 + sum e^z), shifted: no overflow
      vals.append(top + math.log(math.exp(-top) + sum(math.exp(v - top) for v in z)))
    out.append(_collect(vals))
  return out


def selected(s, triplets, metric, margin, soft):
  """Per-anchor terms of explicit triplet lists: triplets[i] = [(p, n), ...]."""
  return [_collect([term(s.d(i, p, metric) - s.d(i, n, metric), margin, soft)
                    for p, n in triplets[i]]) for i in range(len(s.labels))]


def rank_triplets(s, metric, positive_ranks, negative_ranks):
  """Every (positive at rank in [lo, hi), negative at rank in [lo, hi)) per anchor;
  positives ranked farthest first, negatives closest first, ties by index."""
  out = []
  for i in range(len(s.labels)):
    pos = sorted(s.positives(i), key=lambda j: (-s.d(i, j, metric), j))
    neg = sorted(s.negatives(i), key=lambda k: (s.d(i, k, metric), k))
    pos = pos[positive_ranks[0]:positive_ranks[1]]
    neg = neg[negative_ranks[0]:negative_ranks[1]]
    out.append([(p, n) for p in pos for n in neg])
  return out


def k_reciprocal_rerank(qg, qq, gg, k1, k2, lam):
  """Zhong et al. 2017's re-ranked [Q, G] distances: the paper's sets, Python loops, float64."""
  d = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64)
  d = d / np.maximum(d.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
  n, q = len(d), len(qq)
  order = [list(np.argsort(d[i], kind="stable")) for i in range(n)]

  def nearest(i, k):
    return set(int(j) for j in order[i][:k + 1])

  def reciprocal(i, k):
    return {j for j in nearest(i, k) if i in nearest(j, k)}

  half = int(np.around(k1 / 2))
  v = np.zeros((n, n))
  for i in range(n):
    r = reciprocal(i, k1)
    expanded = set(r)
    for c in r:
      rc = reciprocal(c, half)
      if len(rc & r) > 2 / 3 * len(rc):
        expanded |= rc
    cols = sorted(expanded)
    if cols:
      w = np.exp(-d[i, cols])
      v[i, cols] = w / w.sum()
  if k2 != 1:
    v = np.array([np.mean([v[j] for j in order[i][:k2]], axis=0) for i in range(n)])
  out = np.zeros((q, n - q))
  for i in range(q):
    for j in range(q, n):
      common = sum(min(v[i, l], v[j, l]) for l in range(n))
      union = sum(max(v[i, l], v[j, l]) for l in range(n))
      jaccard = 1 - common / union if union > 0 else 1.0
      out[i, j - q] = (1 - lam) * jaccard + lam * d[i, j]
  return out
