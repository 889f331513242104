"""Linear probe (multinomial logistic regression) on frozen features or on raw pixels.

    python training/linear_probe.py --pixels --data synthetic --image-size 32
    python training/linear_probe.py --model local-dir:runs/quickstart --data synthetic --image-size 32

Features are standardised, then a linear classifier is fitted full-batch with L-BFGS and an L2 penalty
chosen on a held-out fifth of the training features; the reported number is top-1 on the test split.
Also prints the weighted kNN top-1 (k=20, T=0.07) of the same features.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from clzoo.knn import knn_accuracy
from training.data import build_dataset
from training.monitor import eval_view, extract_features, linear_probe


def pixels(dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([x.float().flatten() / 255 for x, _ in items]), torch.tensor([y for _, y in items])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pixels", action="store_true", help="raw pixels as features")
    src.add_argument("--model", help="clzoo / timm name, or local-dir:RUN_DIR of a trained run")
    p.add_argument("--random-init", action="store_true", help="with --model: do not load the weights")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-samples", type=int, default=10_000)
    p.add_argument("--test-samples", type=int, default=2_000)
    args = p.parse_args(argv)
    train_set = build_dataset(args.data, "train", args.image_size, args.seed)
    test_set = build_dataset(args.data, "test", args.image_size, args.seed)
    if args.pixels:
        (trx, try_), (tex, tey) = pixels(train_set, args.train_samples), pixels(test_set, args.test_samples)
    else:
        import clzoo
        torch.manual_seed(args.seed)  # --random-init: the same weights on every call
        model = clzoo.create_model(args.model, pretrained=not args.random_init)
        trx, try_ = extract_features(model, eval_view(train_set, args.image_size, args.data),
                                     max_samples=args.train_samples)
        tex, tey = extract_features(model, eval_view(test_set, args.image_size, args.data),
                                    max_samples=args.test_samples)
    out = linear_probe(trx, try_, tex, tey)
    out["knn_top1"] = knn_accuracy(trx, try_, tex, tey, k=20, temperature=0.07)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
