"""Optimizers, parameter groups and per-step schedules (methods.md §1.2, §4.12).

Methods declare parameter groups as dicts understood here:
  {"params": [...], "weight_decay": bool (default True), "lars": bool (trust-ratio adaptation,
   default True), "fixed_lr": bool (lr not scheduled, e.g. SimSiam's predictor), "lr_scale": float}
`build_optimizer` turns them into torch groups; the loop sets each group's lr / weight decay from the
schedules at every optimizer step (DINO's `cosine_scheduler` style: arrays indexed by the global step,
so resuming needs no scheduler state).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn


def split_decay(module: nn.Module, exclude_bias_and_norm: bool = True) -> list[dict]:
    """Two groups: weights, and biases + norm parameters (every tensor with ndim <= 1) which get neither
    weight decay nor the LARS trust ratio (SimCLR, BYOL, PIRL/VISSL, MoCo v3, DINO)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not exclude_bias_and_norm:
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": False, "lars": False}]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as in the Barlow Twins / MoCo v3
    / DINO code and optax's `lars` (BYOL): g <- g + wd w; g <- g * eta ||w|| / ||g|| (groups with lars=True,
    both norms > 0); mu <- momentum mu + g; w <- w - lr mu. `lr_in_momentum` is SimCLR's TF
    `LARSOptimizer` (classic_momentum, lars_optimizer.py:106-115): mu <- momentum mu + lr g; w <- w - mu.
    The two differ whenever the lr changes from one step to the next (warmup, cosine): the momentum buffer
    then carries each past step's own lr."""

    def __init__(self, params, lr=0.0, weight_decay=0.0, momentum=0.9, eta=0.001, lr_in_momentum=False):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True,
                                      lr_in_momentum=lr_in_momentum))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad.add(p, alpha=g["weight_decay"]) if g["weight_decay"] else p.grad.clone()
                if g["lars"]:
                    w_norm, g_norm = torch.norm(p), torch.norm(dp)
                    q = torch.where((w_norm > 0) & (g_norm > 0), g["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                if g["lr_in_momentum"]:
                    p.sub_(state["mu"].mul_(g["momentum"]).add_(dp, alpha=g["lr"]))
                else:
                    p.add_(state["mu"].mul_(g["momentum"]).add_(dp), alpha=-g["lr"])
        return loss


class LARC(torch.optim.SGD):
    """SGD wrapped as apex `LARC(optimizer, trust_coefficient=0.001, clip=False)` (SwAV, DeepCluster-v2,
    SimSiam's linear probe): where ||w|| > 0 and ||g|| > 0, g <- (g + wd w) x trust ||w|| / (||g|| + wd ||w|| +
    eps); elsewhere g is left as it is, without weight decay; then SGD with momentum and no weight decay of
    its own. Unlike `LARS`, the trust ratio's denominator is ||g|| + wd ||w||, not ||g + wd w||. Groups with
    lars=False (exclusions) take plain SGD with their weight decay."""

    def __init__(self, params, lr: float = 0.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False, trust: float = 0.001, eps: float = 1e-8):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        for g in self.param_groups:
            g.setdefault("lars", True)
        self.trust, self.eps = trust, eps

    @torch.no_grad()
    def step(self, closure=None):
        decays = [g["weight_decay"] for g in self.param_groups]
        for g, wd in zip(self.param_groups, decays):
            for p in g["params"]:
                if p.grad is None:
                    continue
                if not g["lars"]:
                    p.grad.add_(p, alpha=wd)
                    continue
                w, gn = torch.norm(p), torch.norm(p.grad)
                adapt = (w > 0) & (gn > 0)
                rate = torch.where(adapt, self.trust * w / (gn + wd * w + self.eps), torch.ones_like(w))
                p.grad.add_(p * torch.where(adapt, wd, 0.0)).mul_(rate)
            g["weight_decay"] = 0.0  # absorbed above, as apex's LARC does for the wrapped SGD step
        try:
            return super().step(closure)
        finally:
            for g, wd in zip(self.param_groups, decays):
                g["weight_decay"] = wd


OPTIMIZERS = ("sgd", "lars", "larc", "adamw")


def build_optimizer(groups: list[dict], name: str, weight_decay: float, momentum: float = 0.9,
                    betas=(0.9, 0.999), eta: float = 0.001, lars_lr_in_momentum: bool = False) -> torch.optim.Optimizer:
    torch_groups = []
    for g in groups:
        g = dict(g)
        decay = g.pop("weight_decay", True)
        tg = {"params": g.pop("params"), "lr": 0.0, "weight_decay": weight_decay if decay else 0.0,
              "wd_scale": 1.0 if decay else 0.0, "fixed_lr": g.pop("fixed_lr", False),
              "lr_scale": g.pop("lr_scale", 1.0)}
        lars = g.pop("lars", True)
        if name in ("lars", "larc"):
            tg["lars"] = lars
        if g:
            raise ValueError(f"unknown parameter-group keys {sorted(g)}")
        torch_groups.append(tg)
    if name == "sgd":
        return torch.optim.SGD(torch_groups, lr=0.0, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(torch_groups, weight_decay=weight_decay, momentum=momentum, eta=eta,
                    lr_in_momentum=lars_lr_in_momentum)
    if name == "larc":
        return LARC(torch_groups, momentum=momentum, weight_decay=weight_decay, trust=eta)
    if name == "adamw":
        return torch.optim.AdamW(torch_groups, lr=0.0, betas=tuple(betas), weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def warmup_ramp(start: float, peak: float, steps: int, endpoint: bool = False) -> np.ndarray:
    """The warmup's lr per step. endpoint False: start + (peak - start) x step / steps, below the peak at the
    last step (MoCo v3 `lr x epoch / warmup_epochs`, BYOL, Barlow Twins). endpoint True: np.linspace(start,
    peak, steps), at the peak on the last step (DINO `utils.cosine_scheduler`, SwAV / DeepCluster-v2)."""
    return np.linspace(start, peak, steps, endpoint=endpoint) if steps else np.array([])


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    start_warmup: float = 0.0, warmup_endpoint: bool = False) -> np.ndarray:
    """Linear warmup from `start_warmup` (`warmup_ramp`), then cosine from `base` to `final` over the
    remaining steps; one value per optimizer step."""
    warmup_steps = min(warmup_steps, total_steps)
    warmup = warmup_ramp(start_warmup, base, warmup_steps, warmup_endpoint)
    t = np.arange(total_steps - warmup_steps)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * t / max(len(t), 1)))
    return np.concatenate((warmup, cos))


def step_schedule(base: float, total_steps: int, milestones, gamma, warmup_steps: int = 0,
                  start_warmup: float = 0.0, warmup_endpoint: bool = False) -> np.ndarray:
    """Piecewise-constant decay: lr x gamma[i] from fraction milestones[i] of training on (the 120/160 of
    200 epochs of InstDisc / MoCo v1 are milestones [0.6, 0.8], gamma [0.1, 0.01]); optional warmup."""
    t = np.arange(total_steps) / max(total_steps, 1)
    lr = np.full(total_steps, base, dtype=np.float64)
    for frac, g in zip(milestones, gamma):
        lr[t >= frac] = base * g
    if warmup_steps:
        w = min(warmup_steps, total_steps)
        lr[:w] = warmup_ramp(start_warmup, base, w, warmup_endpoint)
    return lr


def cancel_gradients(params) -> None:
    """Drop the gradients of `params` for this step (SwAV's frozen prototypes, DINO's
    `cancel_gradients_last_layer`): with no gradient the optimizers leave them untouched (no momentum,
    no weight decay)."""
    for p in params:
        p.grad = None


@torch.no_grad()
def clip_gradients_per_param(params, clip: float) -> None:
    """DINO's `utils.clip_gradients`: each parameter's gradient rescaled to norm <= clip on its own."""
    for p in params:
        if p.grad is not None:
            norm = p.grad.norm(2)
            p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))


def scaled_lr(base_lr: float, global_batch: int, rule: str) -> float:
    """linear: base x N / 256 (most methods); sqrt: base x sqrt(N) (SimCLR v2, 0.1 sqrt N); none."""
    if rule == "linear":
        return base_lr * global_batch / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(global_batch)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown lr scaling {rule!r}; choose from linear, sqrt, none")
