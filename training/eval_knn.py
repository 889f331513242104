"""Weighted k-NN evaluation of a frozen encoder (methods.md §1.3; DINO's eval_knn.py protocol by default).

    python training/eval_knn.py --model dino_vits16 --data /data/imagenet --out runs/knn
    python training/eval_knn.py --model runs/mocov2 --data synthetic --out runs/mocov2/knn   # a run directory
    python training/eval_knn.py --model resnet50 --weights ckpt.safetensors --data DIR --out OUT --k 200 --temperature 0.1

Both splits are embedded once with the model's own eval preprocessing (resize, centre crop, normalise) and
its pooled embedding (a ViT's [CLS] after the final norm); features are L2-normalised; each test image takes
its k most cosine-similar training images, which vote with weight exp(similarity / T) (`clzoo.knn`, which
scans the bank in blocks, so a 1M x D bank never needs a full similarity matrix). Defaults are DINO's:
k in {10, 20, 100, 200}, T = 0.07, 20-NN reported. Writes OUT/knn.json and OUT/knn.png (accuracy over k,
confusion matrix at the reported k).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from clzoo.features import eval_transform
from clzoo.knn import knn_classify
from training.eval_common import (FEATURES, add_common_args, class_names, confusion_matrix, embed, feature_fn,
                                  image_size, load_model, load_split, model_description, save_report, write_json)


def knn_evaluate(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, ks: Sequence[int] = (10, 20, 100, 200), temperature: float = 0.07,
                 num_classes: Optional[int] = None, chunk_size: int = 256, bank_chunk_size: int = 65536) -> Dict:
    """Top-1 (and top-5 with >= 5 classes) accuracy for each k, and the predictions of each k."""
    num_classes = int(num_classes or max(int(train_labels.max()), int(test_labels.max())) + 1)
    result = {"top1": {}, "top5": {}, "predictions": {}}
    for k in ks:
        scores = knn_classify(train_features, train_labels, test_features, k=k, temperature=temperature,
                              num_classes=num_classes, chunk_size=chunk_size, bank_chunk_size=bank_chunk_size)
        pred = scores.argmax(dim=1)
        result["predictions"][k] = pred
        result["top1"][k] = (pred == test_labels).float().mean().item()
        if num_classes >= 5:
            top5 = scores.topk(5, dim=1).indices
            result["top5"][k] = (top5 == test_labels[:, None]).any(dim=1).float().mean().item()
    return result


def main(argv: Optional[List[str]] = None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], help="numbers of neighbours")
    p.add_argument("--temperature", type=float, default=0.07, help="T in exp(sim / T) (InstDisc, MoCo: 0.1)")
    p.add_argument("--report-k", type=int, default=20, help="the k reported as top1 (default 20, as DINO)")
    p.add_argument("--features", default="pooled", choices=FEATURES + ("dino",),
                   help="pooled embedding (default, DINO's k-NN), or DINO's linear-probe [CLS] concatenations")
    p.add_argument("--chunk-size", type=int, default=256, help="test rows per similarity block")
    p.add_argument("--bank-chunk-size", type=int, default=65536, help="bank rows per similarity block")
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or 64

    model = load_model(args)
    transform = eval_transform(model)
    size = image_size(model)
    train = load_split(args.data, "train", transform, size, args.seed, args.train_samples, args.target)
    test = load_split(args.data, "test", transform, size, args.seed, args.test_samples, args.target)
    forward = feature_fn(args.features, model)
    bank, bank_labels = embed(model, train, forward, args.batch_size, args.workers)
    feats, labels = embed(model, test, forward, args.batch_size, args.workers)
    names = class_names(train, test)
    ks = sorted(set(args.k))
    res = knn_evaluate(bank, bank_labels, feats, labels, ks, args.temperature, len(names), args.chunk_size,
                       args.bank_chunk_size)
    report_k = args.report_k if args.report_k in ks else ks[0]

    result = {
        "protocol": f"weighted kNN (methods.md §1.3): L2-normalised features, top-k cosine neighbours vote "
                    f"exp(s/T); T={args.temperature}",
        **model_description(args), "data": args.data, "target": args.target, "features": getattr(forward, "__name__", args.features),
        "feature_dim": int(bank.shape[1]), "num_train": len(bank), "num_test": len(feats),
        "num_classes": len(names), "temperature": args.temperature, "k": report_k,
        "top1": res["top1"][report_k], "top5": res["top5"].get(report_k),
        "top1_per_k": {str(k): v for k, v in res["top1"].items()},
        "top5_per_k": {str(k): v for k, v in res["top5"].items()} or None,
        "preprocessing": str(transform),
    }
    out = Path(args.out)
    write_json(out / "knn.json", result)
    cm = confusion_matrix(res["predictions"][report_k], labels, len(names))
    save_report(out / "knn.png", f"{args.model} — weighted kNN (T={args.temperature}) on {args.data}",
                ks, {"top-1": [res["top1"][k] for k in ks]}, "k (neighbours)", cm, names,
                f"confusion, {report_k}-NN: top-1 {100 * result['top1']:.1f}%", xlog=True)
    print(f"{report_k}-NN top-1 {100 * result['top1']:.2f}% "
          + " ".join(f"[{k}-NN {100 * v:.2f}%]" for k, v in res["top1"].items()) + f"; wrote {out}/knn.json, knn.png")
    return result


if __name__ == "__main__":
    main()
