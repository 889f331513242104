"""SimCLR v2's stage 3 (Chen et al., NeurIPS 2020, §2, eq. 2): distil a fine-tuned teacher into a student on
all training images, labels unused:

    L = -(1 - a) sum_x sum_y P_T(y | x; tau) log P_S(y | x; tau)  +  a * CE(student(x), label)  (labelled x only)
    P(y | x; tau) = softmax(logits / tau);  a = --label-weight (0: the paper's distillation loss alone)

    python training/distill.py --teacher runs/ft --output runs/distilled
    python training/distill.py --teacher runs/ft --student resnet18 --output runs/student

The teacher (a `training/finetune.py` output) is frozen in eval mode and sees the student's own augmented
view. The student is, by default, the teacher's network from random weights (self-distillation; SimCLR v2
also distils into smaller ones: `--student NAME`, a timm / clzoo architecture with a linear classifier);
`--student-init teacher` starts it from the teacher's weights instead. Writes the same files as finetune.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F

import clzoo
from clzoo._io import write_json
from training.finetune import common_args, datasets, export, top1, train


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy of the student's tempered distribution to the teacher's, mean over the batch."""
    target = F.softmax(teacher_logits.detach().float() / tau, dim=1)
    return -(target * F.log_softmax(student_logits.float() / tau, dim=1)).sum(1).mean()


def build_student(teacher_dir: str, student: str | None, init: str, num_classes: int):
    if init not in ("random", "teacher"):
        raise ValueError(f"--student-init must be 'random' or 'teacher', got {init!r}")
    if student is None:  # the teacher's network (config.json), from its weights or from random ones
        return clzoo.create_model(f"local-dir:{teacher_dir}", pretrained=init == "teacher")
    if init == "teacher":
        raise ValueError("--student-init teacher needs the teacher's architecture (leave --student out)")
    return clzoo.create_model("head_classifier", base=student, num_classes=num_classes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="a training/finetune.py output directory")
    p.add_argument("--student", default=None, help="a timm / clzoo architecture (default: the teacher's)")
    p.add_argument("--student-init", default="random", help="random (default) or teacher")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--label-weight", type=float, default=0.0,
                   help="a: weight of the label loss on the teacher's labelled images (its labelled.json)")
    common_args(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if not 0.0 <= args.label_weight <= 1.0:
        raise SystemExit(f"error: --label-weight must be in [0, 1], got {args.label_weight}")
    train_set, test_set = datasets(args)
    num_classes = int(train_set.targets.max()) + 1
    teacher = clzoo.create_model(f"local-dir:{args.teacher}", pretrained=True).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    student = build_student(args.teacher, args.student, args.student_init, num_classes)
    labelled = torch.zeros(len(train_set), dtype=torch.bool)
    labelled_file = os.path.join(args.teacher, "labelled.json")
    if args.label_weight and os.path.exists(labelled_file):
        labelled[torch.tensor(json.load(open(labelled_file))["indices"])] = True
    elif args.label_weight:
        raise SystemExit(f"error: --label-weight needs the teacher's labelled subset ({labelled_file})")
    labels, a = train_set.targets, args.label_weight

    def loss_fn(model, x, index):
        logits = model(x)
        with torch.no_grad():
            t = teacher(x)
        loss = (1 - a) * distillation_loss(logits, t, args.temperature)
        lab = labelled[index]
        if a and lab.any():
            loss = loss + a * F.cross_entropy(logits[lab], labels[index][lab])
        return loss

    t0 = time.time()
    history = train(student, loss_fn, train_set, torch.arange(len(train_set)), args)
    acc, teacher_acc = top1(student, test_set, args.image_size, args.data), top1(teacher, test_set, args.image_size, args.data)
    results = {"stage": "distill", "teacher": args.teacher, "student": args.student or "teacher's architecture",
               "student_init": args.student_init, "temperature": args.temperature, "label_weight": a,
               "test_top1": acc, "teacher_test_top1": teacher_acc, "loss": history, "seed": args.seed,
               "wall_time_s": round(time.time() - t0, 1)}
    export(student, args, results)
    print(f"distilled on {len(train_set)} images: student test top-1 {acc:.4f} (teacher {teacher_acc:.4f}); "
          f"exported {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
