"""The `clzoo` command (also `python -m clzoo`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main", "build_parser"]


def _cmd_list(args) -> int:
    import clzoo
    names = clzoo.list_models(args.pattern, pretrained=args.pretrained)
    if not names:
        print(f"no clzoo model matches {args.pattern!r}", file=sys.stderr)
        return 1
    if args.names_only:
        print("\n".join(names))
        return 0
    if args.markdown:
        from clzoo._registry import list_entries
        print(markdown_table(list_entries(args.pattern) if not args.pretrained else names))
        return 0
    rows = []
    for name in names:
        info = clzoo.model_info(name)
        linear = next((m["value"] for m in info["metrics"] if m["name"] == "imagenet_linear_top1"), None)
        weights = "yes" if info["weights"]["has_weights"] else "-"
        rows.append((name, info["method_name"], info["backbone"], f"{linear:.1f}" if linear else "-",
                     info["license"] or "-", weights))
    header = ("name", "method", "backbone", "linear", "licence", "weights")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def _metric(info, name):
    return next((m for m in info["metrics"] if m["name"] == name), None)


def markdown_table(names) -> str:
    """The README model table: one row per entry, numbers marked with the protocol they were measured under."""
    import clzoo

    protocols = {}

    def value(metric):
        if not metric:
            return "-"
        ref = protocols.setdefault(metric["protocol"], len(protocols) + 1)
        return f"{metric['value']} [{ref}]"

    lines = ["| model | method | backbone | epochs | linear top-1 | kNN top-1 | licence | weights |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        info = clzoo.model_info(name)
        lin, knn = _metric(info, "imagenet_linear_top1"), _metric(info, "imagenet_knn_top1")
        w = info["weights"]
        url = "folder (manual download)" if w["folder_file"] else "URL"
        source = " + ".join(s for s, ok in ((url, w["url"]), ("Hub", w["hf_hub_id"])) if ok) or "local file"
        lines.append(f"| `{info['name']}` | {info['method_name']} | {info['backbone']} | "
                     f"{info['training']['epochs'] or '?'} | {value(lin)} | {value(knn)} | {info['license']} "
                     f"| {source} |")
    lines.append("")
    lines += [f"[{ref}] {protocol}  " for protocol, ref in protocols.items()]
    return "\n".join(lines)


def _cmd_info(args) -> int:
    import clzoo
    info = clzoo.model_info(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    p = info["paper"]
    print(f"{info['name']}  ({info['method_name']}, {info['backbone']})")
    print(f"  paper:     {p['title']} — {p['authors']}, {p['venue']}, {p['url']}")
    print(f"  code:      {p['code'] or '-'}")
    print(f"  licence:   {info['license']}")
    print(f"  tags:      {', '.join(info['available_tags']) or '-'}")
    if info["aliases"]:
        print(f"  aliases:   {', '.join(info['aliases'])}")
    w = info["weights"]
    print(f"  weights:   {w['url'] or '-'}" + (f"  (hub: {w['hf_hub_id']})" if w["hf_hub_id"] else ""))
    print(f"  format:    {w['format'] or '-'}")
    print(f"  hash:      {w['hash'] or '-'}")
    t = info["training"]
    print(f"  training:  {t['epochs'] or '?'} epochs, batch {t['batch_size'] or '?'} on {t['dataset']}")
    if t["recipe"]:
        print(f"             {t['recipe']}")
    pre = info["preprocessing"]
    print(f"  input:     {pre['input_size']}, {pre['interpolation']}, crop {pre['crop_pct']}, "
          f"mean {pre['mean']}, std {pre['std']}")
    for m in info["metrics"]:
        print(f"  reported:  {m['value']}% {m['name']} [{m['source']}] — {m['protocol']}")
    if info["notes"]:
        print(f"  notes:     {info['notes']}")
    return 0


def _cmd_convert(args) -> int:
    import clzoo
    from clzoo._registry import _full_name, get_weights_info
    name = _full_name(args.name)
    fmt = args.format or get_weights_info(name).weights_format
    out = clzoo.convert_file(args.input, fmt, args.output)
    # load it back into the architecture, so a wrong file fails here rather than at use
    model = clzoo.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({fmt} -> timm layout, {n / 1e6:.2f}M parameters, loads into {name})")
    return 0


def _cmd_export(args) -> int:
    import clzoo
    from clzoo.detection import export_backbone
    source = args.name if not os.path.isdir(args.name) else f"local-dir:{args.name}"
    kw = dict(pretrained_cfg_overlay=dict(file=str(args.weights))) if args.weights else {}
    model = clzoo.create_model(source, pretrained=True, num_classes=0, **kw)
    try:
        export_backbone(model, args.to, args.output, author=f"clzoo:{args.name}")
    except (TypeError, ValueError) as e:
        print(f"clzoo export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {args.name} for {args.to}")
    return 0


def _cmd_push(args) -> int:
    from clzoo.hub import HubError, push_to_hub
    try:
        info = push_to_hub(args.source, args.repo_id, private=args.private, token=args.token, endpoint=args.endpoint,
                           commit_message=args.message, overwrite_card=args.overwrite_card, license=args.license,
                           file=args.file)
    except (HubError, ValueError) as e:
        print(f"clzoo push: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.source} to {args.repo_id}: {info.commit_url}")
    print(f"load it with clzoo.create_model('hf-hub:{args.repo_id}', pretrained=True)")
    return 0


def _cmd_cards(args) -> int:
    from clzoo.cards import check_cards, write_cards
    if args.write:
        changed = write_cards(args.dir)
        print(f"{len(changed)} card(s) written or removed in {args.dir}" + "".join(f"\n  {c}" for c in changed))
        return 0
    problems = check_cards(args.dir)
    if problems:
        print("\n".join(problems) + "\nmodel cards are not current: run `clzoo cards --write`", file=sys.stderr)
        return 1
    print(f"model cards in {args.dir} are current")
    return 0


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="a clzoo/timm name (its pretrained weights), or a training run directory")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", help="a checkpoint file for the architecture --model names")
    weights.add_argument("--random-init", action="store_true", help="random weights (no download)")
    p.add_argument("--img-size", type=int, help="input size (ViTs are built for it)")


def load_encoder_from_args(args, **kwargs):
    from clzoo.features import load_encoder
    return load_encoder(args.model, weights=args.weights, pretrained=not args.random_init,
                        img_size=args.img_size, **kwargs)


def _cmd_extract(args) -> int:
    import torch

    from clzoo.features import extract_features
    model = load_encoder_from_args(args)
    if args.device:
        model.to(torch.device(args.device))
    emb = extract_features(model, args.images, batch_size=args.batch_size, num_workers=args.workers,
                           out=args.out, chunk_size=args.chunk_size)
    print(f"wrote {args.out}: {emb.features.shape[0]} x {emb.features.shape[1]} embeddings of {args.images} "
          f"(rows in file-name order; clzoo.load_features reads them)")
    return 0


def _cmd_attention(args) -> int:
    import torch
    from PIL import Image

    from clzoo.attention import attention_maps, attention_rollout, save_attention_figure
    from clzoo.features import data_config, eval_transform
    model = load_encoder_from_args(args, **(dict(dynamic_img_size=True) if args.image_size else {}))
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        print(f"clzoo attention: {args.model} is not a ViT ({type(model).__name__}); attention maps need one",
              file=sys.stderr)
        return 2
    cfg = data_config(model)
    with Image.open(args.image) as img:
        img = img.convert("RGB")
        if args.image_size:  # DINO's visualisation: the whole image, resized to a multiple of the patch size
            from torchvision import transforms
            patch = model.patch_embed.patch_size[0]
            side = max(patch, args.image_size // patch * patch)
            x = transforms.Compose([transforms.Resize((side, side), interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.ToTensor(), transforms.Normalize(cfg["mean"], cfg["std"])])(img)
        else:
            x = eval_transform(cfg)(img)
    shown = x * torch.tensor(cfg["std"]).view(3, 1, 1) + torch.tensor(cfg["mean"]).view(3, 1, 1)
    maps = attention_maps(model, x[None])[0]
    rollout = attention_rollout(model, x[None])[0] if args.rollout else None
    title = f"{args.model}{' (random init)' if args.random_init else ''}: {Path(args.image).name}"
    save_attention_figure(args.out, shown, maps, mass=args.mass, rollout=rollout, title=title)
    print(f"wrote {args.out}: {maps.shape[0]} heads, {maps.shape[1]}x{maps.shape[2]} patches, "
          f"mask keeps {args.mass:.0%} of the mean map's attention")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clzoo", description="Self-supervised encoders as timm models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list entries (architectures, or arch.tag with weights)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'moco*'")
    p.add_argument("--pretrained", action="store_true", help="list arch.tag names that have weights")
    p.add_argument("--names-only", action="store_true", help="one name per line, no table")
    p.add_argument("--markdown", action="store_true", help="the README model table")
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser("info", help="method, paper, licence, weights and reported numbers of an entry")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_info)

    p = sub.add_parser("convert", help="convert an official checkpoint file to timm-layout safetensors")
    p.add_argument("name", help="the entry the file belongs to, e.g. mocov2_resnet50.800ep")
    p.add_argument("--input", required=True, help="the official file, as released")
    p.add_argument("--output", required=True, help="output .safetensors path")
    p.add_argument("--format", help="override the entry's checkpoint format (see clzoo.list_formats())")
    p.set_defaults(fn=_cmd_convert)

    p = sub.add_parser("export", help="a ResNet backbone in detectron2 / mmdet / torchvision layout")
    p.add_argument("name", help="a clzoo entry (its weights), or a training run directory")
    p.add_argument("--to", required=True, choices=["detectron2", "mmdet", "torchvision"])
    p.add_argument("--output", required=True, help="output file (.pkl for detectron2, .pth otherwise)")
    p.add_argument("--weights", help="a local weight file for the entry (instead of downloading)")
    p.set_defaults(fn=_cmd_export)

    p = sub.add_parser("push", help="push an entry, or a training run directory, to the Hugging Face Hub")
    p.add_argument("source", help="a run directory (model.safetensors + config.json) or a clzoo name with weights")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", help="a write token (default: $HF_TOKEN or the one `hf auth login` stored)")
    p.add_argument("--endpoint", help="the Hub's URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--overwrite-card", action="store_true", help="replace the repo's README.md (kept by default)")
    p.add_argument("--license", help="licence of a run's weights, e.g. apache-2.0 (default: its init_from entry's, else none)")
    p.add_argument("--file", help="an entry's official file, converted instead of downloading it")
    p.set_defaults(fn=_cmd_push)

    from clzoo.cards import CARDS_DIR
    p = sub.add_parser("cards", help="model cards of every entry with weights: check or regenerate model_cards/")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail when a card is missing, stale or orphaned")
    mode.add_argument("--write", action="store_true", help="regenerate the cards from the registry")
    p.add_argument("--dir", default=str(CARDS_DIR), help=f"card folder (default: {CARDS_DIR})")
    p.set_defaults(fn=_cmd_cards)

    p = sub.add_parser("extract", help="pooled embeddings of a folder of images, to a safetensors file")
    add_encoder_args(p)
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="output .safetensors (features, names; resumable)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loading processes")
    p.add_argument("--device", help="e.g. cuda, cuda:1 (default: cpu)")
    p.add_argument("--chunk-size", type=int, default=10_000, help="images per saved chunk (resume granularity)")
    p.set_defaults(fn=_cmd_extract)

    p = sub.add_parser("attention", help="a ViT's last-block [CLS] attention per head, as a PNG grid")
    add_encoder_args(p)
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--mass", type=float, default=0.6, help="fraction of the attention the mask keeps (DINO: 0.6)")
    p.add_argument("--image-size", type=int,
                   help="resize the whole image to this square size (no crop), as DINO's visualisation does; "
                        "default: the model's own preprocessing")
    p.add_argument("--rollout", action="store_true", help="add an attention-rollout panel")
    p.set_defaults(fn=_cmd_attention)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from clzoo import (CheckpointMismatchError, ConversionError, DownloadError, NoPretrainedWeightsError,
                       UnknownModelError, UnsafeCheckpointError)
    try:
        return args.fn(args)
    except (UnknownModelError, NoPretrainedWeightsError, CheckpointMismatchError, ConversionError,
            UnsafeCheckpointError, DownloadError, FileNotFoundError) as e:
        print(f"clzoo {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
