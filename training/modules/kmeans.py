"""k-means over a memory of L2-normalised embeddings: DeepCluster-v2's (main_deepclusterv2.py
`cluster_memory`), also PCL's clustering (methods/pcl.py), and PCL's per-cluster concentration."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def spherical_kmeans(x: torch.Tensor, K: int, n_iters: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """main_deepclusterv2.py `cluster_memory` on one memory: (centroids (K, D), assignments (N,)).
    E step: argmax of dot products; M step: the mean of each non-empty cluster, L2-normalised."""
    if len(x) < K:
        raise ValueError(f"k-means: {K} clusters but only {len(x)} embeddings in memory; reduce the number of "
                         "clusters (deepclusterv2 nmb_prototypes, pcl num_cluster)")
    centroids = x[torch.randperm(len(x), generator=g)[:K].to(x.device)].clone()
    for it in range(n_iters + 1):
        assign = (x @ centroids.T).argmax(1)
        if it == n_iters:
            break
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=K)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
        centroids = F.normalize(centroids, dim=1)
    return centroids, assign


@torch.no_grad()
def concentration(x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor, tau: float,
                  alpha: float = 10.0) -> torch.Tensor:
    """PCL's phi per cluster (main_pcl.py `run_kmeans`): the mean L2 distance of its members to the cluster
    mean (faiss's centroid) over log(n + alpha); clusters of one member or none take the largest phi; phi is
    clipped to its 10th-90th percentiles and scaled to mean tau."""
    K = len(centroids)
    counts = torch.bincount(assign, minlength=K)
    means = torch.zeros_like(centroids).index_add_(0, assign, x) / counts.clamp_min(1)[:, None]
    dist = (x - means[assign]).norm(dim=1)
    phi = torch.zeros(K, dtype=x.dtype, device=x.device).index_add_(0, assign, dist) / counts.clamp_min(1)
    phi = phi / torch.log(counts.to(x.dtype) + alpha)
    several = counts > 1
    phi = torch.where(several, phi, phi[several].max() if several.any() else torch.ones((), dtype=x.dtype))
    lo, hi = torch.quantile(phi.double(), torch.tensor([0.1, 0.9], dtype=torch.float64, device=phi.device))
    phi = phi.clamp(float(lo), float(hi))
    return tau * phi / phi.mean()
