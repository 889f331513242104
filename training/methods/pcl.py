"""PCL — Li, Zhou, Xiong, Hoi, "Prototypical Contrastive Learning of Unsupervised Representations", ICLR 2021.
Official code: salesforce/PCL (pcl/builder.py, main_pcl.py).

    MoCo (methods/mocov1.py): q, k, a queue of r keys, InfoNCE at temperature tau
    at each epoch start >= warmup_epochs: for each clustering m (num_cluster: k_1, k_2, ...), k-means over the
        momentum features v' of every image -> prototypes c (L2-normalised), each image's cluster s_m(i),
        and each cluster's concentration phi (modules/kmeans.py `concentration`: mean ||v' - c|| / log(n + 10),
        clipped to its 10th-90th percentiles, scaled to mean tau)
    ProtoNCE_m: q scored against [c_{s_m(j)} for every j of the batch] + r prototypes sampled from the rest,
        each column divided by its phi; the target of sample j is its own column (builder.py)
    L = InfoNCE + mean_m ProtoNCE_m
`pclv2` is PCL v2: the MLP head (`--mlp`), with the recipe's "aug+" and cosine schedule (configs/pclv2.yaml).

Where this differs from main_pcl.py, and why:
* The momentum features are the keys of the previous epoch's training views, kept in a memory of the whole
  dataset (filled from the gathered indices and keys, as the trainer's DeepCluster-v2 keeps its own), not a
  separate pass over centre crops in eval mode: the trainer hands a method batches, not the dataset. So the
  first epoch after the warmup clusters keys from the epoch before it, and with `warmup_epochs: 0` the first
  epoch has no ProtoNCE (the memory is still empty).
* k-means is DeepCluster-v2's spherical k-means (argmax of dot products, the normalised mean), not faiss's
  L2 k-means with 5 restarts; phi uses the distance to the cluster mean, which is faiss's centroid.
* The r negative prototypes are drawn once per step for the global batch (excluding the global batch's
  positives) from the seed and step, and the positive columns are the global batch's: one process computes
  what several do (the official draw is per GPU, from its own batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.rng import generator
from ..modules.dist import fp32, gather_no_grad, rank
from ..modules.kmeans import concentration, spherical_kmeans
from .mocov1 import MoCo

PROTO_KEY = 0x9C1  # the negative-prototype draw: (seed, this, step, clustering)


class PCL(MoCo):
    def __init__(self, backbone, info, tau: float = 0.2, K: int = 16384, m: float = 0.999, dim: int = 128,
                 mlp: bool = False, num_cluster=(25000, 50000, 100000), warmup_epochs: int = 20,
                 kmeans_iters: int = 20, r: int | None = None):
        super().__init__(backbone, info, tau=tau, K=K, m=m, dim=dim, mlp=mlp)
        self.num_cluster = tuple(int(k) for k in num_cluster)
        if not self.num_cluster or min(self.num_cluster) < 2:
            raise ValueError(f"pcl num_cluster must list cluster counts >= 2, got {list(num_cluster)}")
        if max(self.num_cluster) > info.num_samples:
            raise ValueError(f"pcl num_cluster {list(self.num_cluster)}: more clusters than the {info.num_samples} "
                             f"training images; use fewer (the recipe's 25000-100000 are for ImageNet)")
        self.warmup_epochs, self.kmeans_iters = warmup_epochs, kmeans_iters
        self.r = K if r is None else r  # main_pcl.py's --pcl-r: the queue size and the negative prototypes
        self.steps_per_epoch, self.seed = info.steps_per_epoch, info.seed
        N = info.num_samples
        self.register_buffer("memory", torch.zeros(N, dim))
        self.register_buffer("filled", torch.zeros(N, dtype=torch.bool))
        self.register_buffer("assignments", torch.full((len(self.num_cluster), N), -1, dtype=torch.long))
        for h, k in enumerate(self.num_cluster):
            self.register_buffer(f"prototypes{h}", torch.zeros(k, dim))
            self.register_buffer(f"density{h}", torch.ones(k))
        self._memory_pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def clustered(self) -> bool:
        return bool((self.assignments[0] >= 0).any())

    def proto_nce(self, q: torch.Tensor, batch: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """mean_m ProtoNCE_m over the clusterings, and the prototype accuracy (for the log). `batch`: the
        global batch's indices (gathered over processes); `q` this process's queries."""
        offset = rank() * len(q)
        targets = torch.arange(offset, offset + len(q), device=q.device)
        loss, correct = 0.0, 0.0
        for h, k in enumerate(self.num_cluster):
            prototypes, density = getattr(self, f"prototypes{h}"), getattr(self, f"density{h}")
            pos = self.assignments[h][batch]
            rest = torch.ones(k, dtype=torch.bool, device=q.device)
            rest[pos] = False
            candidates = rest.nonzero().squeeze(1)
            draw = torch.randperm(len(candidates), generator=generator(self.seed, PROTO_KEY, step, h))
            neg = candidates[draw[:self.r].to(candidates.device)]
            columns = torch.cat([pos, neg])
            logits = fp32(q) @ prototypes[columns].T / density[columns]
            loss = loss + F.cross_entropy(logits, targets)
            correct = correct + (logits.argmax(1) == targets).float().mean()
        return loss / len(self.num_cluster), correct / len(self.num_cluster)

    def forward(self, batch: dict, step: int):
        q, k = self.encode(batch)
        loss, logs = self.contrast(q, k, batch)  # InfoNCE; the keys go to the queue and, here, to the memory
        index = gather_no_grad(batch["index"].to(self.memory.device))
        self._memory_pending.append((index, self._pending[-1]))
        if step // self.steps_per_epoch >= self.warmup_epochs and self.clustered:
            proto, acc = self.proto_nce(q, index, step)
            loss = loss + proto
            logs.update(loss_proto=proto.detach(), acc_proto=acc)
        return loss, logs

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for index, keys in self._memory_pending:
            self.memory[index] = fp32(keys)
            self.filled[index] = True
        self._memory_pending = []
        super().after_optimizer_step(step)
        next_epoch = (step + 1) // self.steps_per_epoch
        if (step + 1) % self.steps_per_epoch == 0 and next_epoch >= self.warmup_epochs:
            self.cluster(next_epoch)

    @torch.no_grad()
    def cluster(self, epoch: int) -> None:
        """k-means of the memory for `epoch`, identical on every process (a seeded draw, the same memory)."""
        rows = self.filled.nonzero().squeeze(1)
        x = self.memory[rows]
        self.assignments.fill_(-1)
        for h, k in enumerate(self.num_cluster):
            centroids, assign = spherical_kmeans(x, k, self.kmeans_iters, generator(self.seed, 3001, epoch, h))
            getattr(self, f"prototypes{h}").copy_(centroids)
            getattr(self, f"density{h}").copy_(concentration(x, centroids, assign, self.tau))
            self.assignments[h, rows] = assign


class PCLv2(PCL):
    def __init__(self, backbone, info, tau: float = 0.2, K: int = 16384, m: float = 0.999, dim: int = 128,
                 num_cluster=(25000, 50000, 100000), warmup_epochs: int = 20, kmeans_iters: int = 20,
                 r: int | None = None):
        super().__init__(backbone, info, tau=tau, K=K, m=m, dim=dim, mlp=True, num_cluster=num_cluster,
                         warmup_epochs=warmup_epochs, kmeans_iters=kmeans_iters, r=r)
