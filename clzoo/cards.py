"""Model cards (the Hub's README.md) generated from clzoo's registry metadata, and from training runs.

* `render_card(name)`: the card of a registry entry (`model_cards/<name>.md`): method and paper with its
  BibTeX, architecture, training recipe, reported numbers with the protocol behind each, preprocessing,
  licence, usage (clzoo, timm `hf-hub:`, torch.hub) and limitations, under YAML front matter that the Hub
  reads (`library_name: timm`, `pipeline_tag: image-feature-extraction`, `license`, `tags`, `datasets`).
* `render_run_card(run)`: the card of weights trained with `training/` (a run directory read by
  `read_run_dir`): the run's effective configuration and its evaluation results.
* `write_cards()` / `check_cards()`: `model_cards/` holds one card per `clzoo.list_pretrained()` entry, byte
  for byte what `render_card` gives (`clzoo cards --write` / `clzoo cards --check`).

Cards depend only on the registry and this file, never on the clock, the machine or the install, so
`--write` is idempotent and `--check` can compare bytes.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from ._io import atomic_write

__all__ = ["CARDS_DIR", "BIBTEX", "bibtex", "hub_license", "render_card", "render_run_card", "RunDir",
           "read_run_dir", "write_cards", "check_cards"]

CARDS_DIR = Path(__file__).resolve().parents[1] / "model_cards"
PIPELINE_TAG = "image-feature-extraction"
_NO_LICENSE = "no-license-published"  # the Hub's `license_name` for weights released without a licence

# BibTeX of each paper, keyed by arXiv id (SwAV, DeepCluster-v2 and SeLa-v2 share one paper). A method added
# to the registry without an entry here gets one generated from its MethodInfo (see `bibtex`).
BIBTEX = {
    "1805.01978": """@inproceedings{wu2018unsupervised,
  title = {Unsupervised Feature Learning via Non-Parametric Instance Discrimination},
  author = {Wu, Zhirong and Xiong, Yuanjun and Yu, Stella X. and Lin, Dahua},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2018}
}""",
    "1904.03436": """@inproceedings{ye2019unsupervised,
  title = {Unsupervised Embedding Learning via Invariant and Spreading Instance Feature},
  author = {Ye, Mang and Zhang, Xu and Yuen, Pong C. and Chang, Shih-Fu},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2019}
}""",
    "1807.03748": """@article{oord2018representation,
  title = {Representation Learning with Contrastive Predictive Coding},
  author = {van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol},
  journal = {arXiv preprint arXiv:1807.03748},
  year = {2018}
}""",
    "1905.09272": """@inproceedings{henaff2020data,
  title = {Data-Efficient Image Recognition with Contrastive Predictive Coding},
  author = {H{\\'e}naff, Olivier J. and Srinivas, Aravind and De Fauw, Jeffrey and Razavi, Ali and Doersch, Carl and Eslami, S. M. Ali and van den Oord, Aaron},
  booktitle = {International Conference on Machine Learning (ICML)},
  year = {2020}
}""",
    "1906.05849": """@inproceedings{tian2020contrastive,
  title = {Contrastive Multiview Coding},
  author = {Tian, Yonglong and Krishnan, Dilip and Isola, Phillip},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2020}
}""",
    "1911.05722": """@inproceedings{he2020momentum,
  title = {Momentum Contrast for Unsupervised Visual Representation Learning},
  author = {He, Kaiming and Fan, Haoqi and Wu, Yuxin and Xie, Saining and Girshick, Ross},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2020}
}""",
    "2003.04297": """@article{chen2020improved,
  title = {Improved Baselines with Momentum Contrastive Learning},
  author = {Chen, Xinlei and Fan, Haoqi and Girshick, Ross and He, Kaiming},
  journal = {arXiv preprint arXiv:2003.04297},
  year = {2020}
}""",
    "2104.02057": """@inproceedings{chen2021empirical,
  title = {An Empirical Study of Training Self-Supervised Vision Transformers},
  author = {Chen, Xinlei and Xie, Saining and He, Kaiming},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year = {2021}
}""",
    "2002.05709": """@inproceedings{chen2020simple,
  title = {A Simple Framework for Contrastive Learning of Visual Representations},
  author = {Chen, Ting and Kornblith, Simon and Norouzi, Mohammad and Hinton, Geoffrey},
  booktitle = {International Conference on Machine Learning (ICML)},
  year = {2020}
}""",
    "2006.10029": """@inproceedings{chen2020big,
  title = {Big Self-Supervised Models are Strong Semi-Supervised Learners},
  author = {Chen, Ting and Kornblith, Simon and Swersky, Kevin and Norouzi, Mohammad and Hinton, Geoffrey},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2020}
}""",
    "2006.09882": """@inproceedings{caron2020unsupervised,
  title = {Unsupervised Learning of Visual Features by Contrasting Cluster Assignments},
  author = {Caron, Mathilde and Misra, Ishan and Mairal, Julien and Goyal, Priya and Bojanowski, Piotr and Joulin, Armand},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2020}
}""",
    "2005.10243": """@inproceedings{tian2020makes,
  title = {What Makes for Good Views for Contrastive Learning?},
  author = {Tian, Yonglong and Sun, Chen and Poole, Ben and Krishnan, Dilip and Schmid, Cordelia and Isola, Phillip},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2020}
}""",
    "1912.01991": """@inproceedings{misra2020self,
  title = {Self-Supervised Learning of Pretext-Invariant Representations},
  author = {Misra, Ishan and van der Maaten, Laurens},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2020}
}""",
    "2006.07733": """@inproceedings{grill2020bootstrap,
  title = {Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning},
  author = {Grill, Jean-Bastien and Strub, Florian and Altch{\\'e}, Florent and Tallec, Corentin and Richemond, Pierre H. and Buchatskaya, Elena and Doersch, Carl and Avila Pires, Bernardo and Guo, Zhaohan Daniel and Gheshlaghi Azar, Mohammad and Piot, Bilal and Kavukcuoglu, Koray and Munos, R{\\'e}mi and Valko, Michal},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2020}
}""",
    "2011.10566": """@inproceedings{chen2021exploring,
  title = {Exploring Simple Siamese Representation Learning},
  author = {Chen, Xinlei and He, Kaiming},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2021}
}""",
    "2103.03230": """@inproceedings{zbontar2021barlow,
  title = {Barlow Twins: Self-Supervised Learning via Redundancy Reduction},
  author = {Zbontar, Jure and Jing, Li and Misra, Ishan and LeCun, Yann and Deny, St{\\'e}phane},
  booktitle = {International Conference on Machine Learning (ICML)},
  year = {2021}
}""",
    "2104.14294": """@inproceedings{caron2021emerging,
  title = {Emerging Properties in Self-Supervised Vision Transformers},
  author = {Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J{\\'e}gou, Herv{\\'e} and Mairal, Julien and Bojanowski, Piotr and Joulin, Armand},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year = {2021}
}""",
}

_LICENSE_TEXT = {
    "cc-by-nc-4.0": ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/",
                     "attribution required, **non-commercial use only**"),
    "apache-2.0": ("Apache 2.0", "https://www.apache.org/licenses/LICENSE-2.0", ""),
    "mit": ("MIT", "https://opensource.org/licenses/MIT", ""),
    "bsd-3-clause": ("BSD 3-Clause", "https://opensource.org/licenses/BSD-3-Clause", ""),
}


def bibtex(method: str) -> str:
    """The BibTeX of a registered method's paper (generated from its MethodInfo when not in BIBTEX)."""
    from ._registry import get_method_info
    info = get_method_info(method)
    if info.arxiv in BIBTEX:
        return BIBTEX[info.arxiv]
    year = (re.findall(r"\d{4}", info.venue) or [""])[-1]
    key = info.bibtex_key or f"{info.authors.split(',')[0].split()[-1].lower()}{year}{method}"
    authors = " and ".join(a.strip() for a in info.authors.split(","))
    return (f"@article{{{key},\n  title = {{{info.paper}}},\n  author = {{{authors}}},\n"
            f"  journal = {{arXiv preprint arXiv:{info.arxiv}}},\n  year = {{{year}}}\n}}")


def hub_license(license: Optional[str]) -> Dict[str, str]:
    """Front-matter licence fields: the registry's SPDX-like id, or `other` + `license_name` where none is known."""
    if not license or license in ("unknown", "other"):
        return {"license": "other", "license_name": _NO_LICENSE}
    return {"license": license}


# ---------------------------------------------------------------------------------------------
# sections shared by entry cards and run cards


def _front_matter(license: Optional[str], method: Optional[str], datasets: Sequence[str]) -> str:
    meta: Dict[str, Any] = {"library_name": "timm", "pipeline_tag": PIPELINE_TAG, **hub_license(license)}
    meta["tags"] = [PIPELINE_TAG, "timm", "clzoo", "self-supervised"] + ([method] if method else [])
    if datasets:
        meta["datasets"] = list(datasets)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def _bullets(rows: Sequence[Tuple[str, Any]]) -> str:
    return "\n".join(f"- **{k}:** {v}" for k, v in rows if v not in (None, ""))


@functools.lru_cache(maxsize=None)
def _model_stats(architecture: str, model_args: str = "{}") -> Tuple[float, int]:
    """(parameters in millions, embedding dim), counted on the meta device (no memory, no weights)."""
    import timm
    import torch
    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, **json.loads(model_args))
    return sum(p.numel() for p in model.parameters()) / 1e6, int(model.num_features)


def _preprocessing(cfg: Dict[str, Any]) -> str:
    _, h, w = cfg["input_size"]
    crop_pct = cfg.get("crop_pct") or 1.0
    resize = int(h / crop_pct)  # timm: floor(img_size / crop_pct)
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if mean == (0.0, 0.0, 0.0) and std == (1.0, 1.0, 1.0):
        norm = "no mean/std normalisation: the model takes RGB in [0, 1]"
    else:
        norm = f"normalise with mean {mean} and std {std}"
    return (f"Evaluation transform of these weights: resize the shorter side to {resize} ({cfg['interpolation']}), "
            f"center-crop {h} x {w} (crop_pct {crop_pct}), {norm}. timm builds it from the model's config:\n\n"
            "```python\n"
            "data_config = timm.data.resolve_model_data_config(model)\n"
            "transform = timm.data.create_transform(**data_config, is_training=False)\n"
            "```")


def _import_line(architecture: str) -> str:
    """What a fresh interpreter must import before timm can build `architecture` (timm's own need nothing)."""
    import timm.models._registry as timm_registry
    module = timm_registry._model_entrypoints[architecture].__module__.split(".")[0]
    if module == "timm":
        return ""
    return f"import {module}  # registers `{architecture}` in timm\n"


def _usage(create_name: str, dim: int, hub_name: str, architecture: str, hub_note: str = "",
           torch_hub: str = "") -> str:
    import_line = _import_line(architecture)
    text = ("With clzoo:\n\n```python\nimport clzoo, timm, torch\nfrom PIL import Image\n\n"
            f"model = clzoo.create_model({create_name!r}, pretrained=True).eval()\n"
            "transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))\n"
            "with torch.no_grad():\n"
            f"    features = model(transform(Image.open('image.jpg').convert('RGB')).unsqueeze(0))  # (1, {dim})\n"
            "```\n\n"
            f"With timm, from the Hugging Face Hub{hub_note}:\n\n```python\n{import_line}import timm\n\n"
            f"model = timm.create_model('hf-hub:{hub_name}', pretrained=True)\n```\n")
    if torch_hub:
        text += f"\nWith torch.hub:\n\n```python\nimport torch\n\nmodel = {torch_hub}\n```\n"
    text += ("\n`num_classes=0`: the model returns its pooled embedding; `num_classes=N` adds a fresh linear head, "
             "`features_only=True` gives feature maps.")
    return text


def _license_section(license: Optional[str], who: str, contact: str) -> str:
    if not license or license in ("unknown", "other"):
        return (f"{who} published no licence for these weights, so the metadata says `license: other` "
                f"(`license_name: {_NO_LICENSE}`). Without a licence no right to redistribute or use them is "
                f"granted; ask {contact} before redistributing them or using them commercially.")
    name, url, terms = _LICENSE_TEXT.get(license, (license, "", ""))
    link = f"[{name}]({url})" if url else f"`{name}`"
    return f"{who} released these weights under {link}" + (f": {terms}." if terms else ".")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


_METRIC_LABELS = {"imagenet_linear_top1": "ImageNet-1k linear top-1 (%)",
                  "imagenet_knn_top1": "ImageNet-1k kNN top-1 (%)"}
_DATASET_NAMES = {"imagenet-1k": "ImageNet-1k"}


def _join(title: str, summary: str, sections: Sequence[Tuple[str, str]], front: str) -> str:
    body = [front, f"# Model card for {title}", summary]
    body += [f"## {heading}\n\n{text.strip()}" for heading, text in sections if text]
    return "\n\n".join(s.strip("\n") for s in body) + "\n"


# ---------------------------------------------------------------------------------------------
# registry entries


def render_card(name: str, repo_id: Optional[str] = None) -> str:
    """The model card of a registry entry; `repo_id` (ORG/NAME) is the Hub repo its `hf-hub:` usage names."""
    import clzoo
    from ._registry import get_weights_info

    info = clzoo.model_info(name)
    name, arch, method = info["name"], info["architecture"], info["method"]
    cfg = clzoo.get_pretrained_cfg(name).to_dict()
    winfo = get_weights_info(name)
    paper, train, weights = info["paper"], info["training"], info["weights"]
    params, dim = _model_stats(arch)
    dataset = _DATASET_NAMES.get(train["dataset"], train["dataset"])
    epochs = f" for {train['epochs']} epochs" if train["epochs"] else ""

    summary = (f"{info['method_name']} {info['backbone']} encoder pretrained without labels on {dataset}{epochs}, "
               f"as released by the authors and converted to timm's layout by clzoo. It returns a {dim}-d "
               "embedding per image.")

    source = weights["url"] or ("a file from the authors (no public URL is known): "
                                "`pretrained_cfg_overlay=dict(file=...)`")
    checks = [f"sha256 `{weights['sha256']}`" if weights["sha256"] else "",
              f"md5 prefix `{weights['md5_prefix']}`" if weights["md5_prefix"] else ""]
    fmt = f" (`{weights['format']}` format{''.join(', ' + c for c in checks if c)})" if weights["format"] else ""
    others = [f"`{arch}.{t}`" for t in info["available_tags"] if f"{arch}.{t}" != name]
    details = _bullets([
        ("Model type", "image encoder (feature backbone), self-supervised"),
        ("Method", f"{info['method_name']}: *{paper['title']}* ({paper['authors']}, {paper['venue']}), "
                   f"[arXiv:{paper['arxiv']}]({paper['url']})"),
        ("Official code", paper["code"]),
        ("Architecture", f"{info['backbone']}; timm architecture `{arch}`"),
        ("Params (M)", f"{params:.1f}"),
        ("Embedding dim", dim),
        ("Image size", f"{cfg['input_size'][1]} x {cfg['input_size'][2]}"),
        ("Pretraining data", f"{dataset} (images only, no labels)"),
        ("Official weights", source + fmt),
        ("Hub copy used by clzoo", f"`{weights['hf_hub_id']}`" if weights["hf_hub_id"] else ""),
        ("Other releases", ", ".join(others)),
        ("Also known as", ", ".join(f"`{a}`" for a in info["aliases"])),
        ("Notes", info["notes"]),
    ])

    recipe = _bullets([
        ("Epochs", train["epochs"] or "not recorded"),
        ("Batch size", train["batch_size"] or "not recorded"),
        ("Optimizer, schedule and method hyper-parameters", train["recipe"] or "not recorded"),
    ]) + f"\n\nFrom the authors' release; see the paper and [the official code]({paper['code']}) for the full recipe."

    if info["metrics"]:
        rows = [(_METRIC_LABELS.get(m["name"], m["name"]), m["value"], m["protocol"], m["source"])
                for m in info["metrics"]]
        measured_here = any(m["source"] == "clzoo" for m in info["metrics"])
        results = (_table(("metric", "value", "protocol", "source"), rows) + "\n\n"
                   + ("Numbers with source `clzoo` were measured by clzoo; the others are the authors'. "
                      if measured_here else "The authors' numbers, not re-measured by clzoo after conversion. ")
                   + "Numbers measured under different protocols are not comparable.")
    else:
        results = "No number is reported for this release."

    hub_arch = arch
    if repo_id:
        hub_name, hub_note = repo_id, ""
    elif weights["hf_hub_id"]:
        hub_name, hub_note = weights["hf_hub_id"], " (the Hub copy clzoo loads these weights from)"
        if hub_name.startswith("timm/"):  # timm's repos are named after timm's own architecture
            hub_arch = hub_name.split("/")[1].split(".")[0]
    else:
        hub_name, hub_note = f"ORG/{name}", f", after `clzoo push {name} --repo-id ORG/{name}`"
    tag = info["tag"]
    torch_hub = (f"torch.hub.load('<owner>/clzoo', {arch!r}" + (f", tag={tag!r}" if tag else "")
                 + ")  # pretrained=True")
    usage = _usage(name, dim, hub_name, hub_arch, hub_note, torch_hub)

    limitations = [
        "A feature extractor: the projection/prediction heads used in pretraining and the linear classifiers "
        "behind the reported numbers are not part of this model; classification needs a linear probe or "
        "fine-tuning.",
        f"Pretrained on {dataset} only: the features reflect its content and biases (mostly object-centric "
        "photographs); transfer to other domains (medical, satellite, documents, ...) is not guaranteed.",
        f"Converted from the official file by clzoo (`{weights['format'] or 'state_dict'}` format); loading "
        "verifies that every key and shape fits the architecture.",
    ]
    if cfg.get("fixed_input_size"):
        limitations.append(f"A ViT trained at {cfg['input_size'][1]} px: `img_size=...` resamples the position "
                           "embedding, which changes the features.")
    if tuple(cfg["mean"]) == (0.0, 0.0, 0.0):
        limitations.append("Inputs are RGB in [0, 1] without mean/std normalisation; ImageNet normalisation "
                           "silently degrades the features.")
    licence = _license_section(info["license"], "The authors", f"them ({paper['code']})" if paper["code"] else "them")

    sections = [("Model details", details), ("Training recipe", recipe), ("Reported results", results),
                ("Preprocessing", _preprocessing(cfg)), ("Usage", usage), ("Licence", licence),
                ("Limitations", "\n".join(f"- {s}" for s in limitations)),
                ("Citation", f"```bibtex\n{bibtex(method)}\n```")]
    front = _front_matter(info["license"], method, [winfo.dataset] if winfo.dataset else [])
    return _join(f"`{name}`", summary, sections, front)


# ---------------------------------------------------------------------------------------------
# training runs (training/ exports a timm folder: model.safetensors + config.json, plus its config and results)

_RUN_CONFIG_NAMES = ("run_config.yaml", "run_config.yml", "run_config.json", "training_config.yaml",
                     "train_config.yaml", "config.yaml", "args.json")


@dataclass
class RunDir:
    path: Path
    config: Dict[str, Any]  # timm config.json
    training_config_file: Optional[str] = None  # file name inside the run dir
    training_config: Dict[str, Any] = field(default_factory=dict)
    results: Dict[str, Any] = field(default_factory=dict)  # results.json

    @property
    def method(self) -> Optional[str]:
        return self.results.get("method") or self.training_config.get("method")

    @property
    def initialised_from(self) -> Optional[str]:
        """The clzoo entry the run started from (the trainer's `init_from`), whose licence its weights inherit."""
        from ._registry import _full_name, is_clzoo_model
        source = self.training_config.get("init_from")
        return _full_name(source) if isinstance(source, str) and is_clzoo_model(source) else None


def read_run_dir(path: Union[str, Path]) -> RunDir:
    """A training run directory: timm `config.json`, and where present the training config and `results.json`."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a run directory: it has no config.json (timm's save_for_hf layout, "
                                "as training/ exports it)")
    config = json.loads(cfg_file.read_text())
    if "architecture" not in config or "pretrained_cfg" not in config:
        raise ValueError(f"{cfg_file} has no 'architecture' and 'pretrained_cfg': not the config.json of timm's "
                         "save_for_hf")
    run = RunDir(path, config)
    found = [n for n in _RUN_CONFIG_NAMES if (path / n).is_file()]
    found += sorted(p.name for p in path.glob("*.y*ml") if p.name not in found)
    if found:
        run.training_config_file = found[0]
        loaded = yaml.safe_load((path / found[0]).read_text())
        run.training_config = loaded if isinstance(loaded, dict) else {}
    if (path / "results.json").is_file():
        loaded = json.loads((path / "results.json").read_text())
        run.results = loaded if isinstance(loaded, dict) else {"results": loaded}
    return run


def _flatten(d: Dict[str, Any], prefix: str = "") -> List[Tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        elif v is None or isinstance(v, (int, float, str, bool)):
            out.append((f"{prefix}{k}", v))
        else:
            out.append((f"{prefix}{k}", json.dumps(v)))
    return out


def render_run_card(run: RunDir, repo_id: Optional[str] = None, license: Optional[str] = None) -> str:
    """The model card of weights trained with clzoo's `training/` (the run's config and evaluation results),
    or of a timm model folder without a training record."""
    from ._registry import get_pretrained_cfg, list_methods

    arch, cfg = run.config["architecture"], run.config["pretrained_cfg"]
    params, dim = _model_stats(arch, json.dumps(run.config.get("model_args", {}), sort_keys=True))
    method = run.method
    method_info = list_methods().get(method)
    tc = run.training_config
    data = str(tc.get("data") or run.results.get("data") or "")
    epochs = run.results.get("epochs", tc.get("epochs"))
    title = repo_id.split("/")[-1] if repo_id else run.path.name
    trained = bool(run.training_config_file or run.results)
    if trained:
        summary = (f"{method_info.name if method_info else (method or 'Self-supervised')} encoder (timm architecture "
                   f"`{arch}`) trained with clzoo's trainer (`training/`)" + (f" on `{data}`" if data else "")
                   + (f" for {epochs:g} epochs" if isinstance(epochs, (int, float)) else "") + ".")
    else:
        summary = f"Encoder with timm architecture `{arch}`, pushed with clzoo; no training record came with it."
    summary += f" It returns a {dim}-d embedding per image."
    paper = (f"{method_info.name}: *{method_info.paper}* ({method_info.authors}, {method_info.venue}), "
             f"[arXiv:{method_info.arxiv}](https://arxiv.org/abs/{method_info.arxiv})" if method_info else method)
    details = _bullets([
        ("Model type", "image encoder (feature backbone)" + (", self-supervised" if trained else "")),
        ("Method", paper),
        ("Architecture", f"timm architecture `{arch}`"),
        ("Params (M)", f"{params:.1f}"),
        ("Embedding dim", dim),
        ("Image size", f"{cfg['input_size'][1]} x {cfg['input_size'][2]}"),
        ("Training data", f"`{data}`" if data else ""),
        ("Initialised from", f"clzoo entry `{run.initialised_from}`" if run.initialised_from else ""),
    ])

    training = ""
    if run.training_config_file:
        text = (run.path / run.training_config_file).read_text().rstrip("\n")
        lang = "json" if run.training_config_file.endswith(".json") else "yaml"
        training = (f"The run's effective configuration (`{run.training_config_file}`, uploaded next to the "
                    f"weights):\n\n```{lang}\n{text}\n```")
    evaluation = ""
    if run.results:
        if "knn_top1" in run.results:
            knn = run.results.get("knn") if isinstance(run.results.get("knn"), dict) else {}
            setting = f" (k={knn.get('k')}, T={knn.get('temperature')})" if knn else ""
            evaluation = (f"`knn_top1`: weighted k-NN classification{setting} of the run's test split against its "
                          "training features, measured by the trainer at the end of training; `knn_top1_init`, where "
                          "present, is the same for the random initialisation. These are not ImageNet-1k numbers and "
                          "not comparable to the linear-probe numbers of the official releases.\n\n")
        evaluation += _table(("result", "value"), _flatten(run.results)) + "\n\n(from the run's `results.json`)"

    licence = _license_section(license, "The owner of this repository", "the owner")
    if run.initialised_from:
        base = get_pretrained_cfg(run.initialised_from).license
        licence += (f" The run started from `{run.initialised_from}` (licence `{base}`): weights derived from it keep "
                    "its terms.")
    elif not license:
        licence += " Set one with `clzoo push --license ID`."
    repo = repo_id or f"ORG/{title}"
    limitations = ["A feature extractor: the projection heads of pretraining are not part of it."]
    if trained:
        limitations.append("Trained and evaluated on the data named above only; the results say nothing about "
                           "other data.")
    sections = [("Model details", details), ("Training configuration", training), ("Evaluation results", evaluation),
                ("Preprocessing", _preprocessing(cfg)), ("Usage", _usage(f"hf-hub:{repo}", dim, repo, arch)),
                ("Licence", licence),
                ("Limitations", "\n".join(f"- {s}" for s in limitations)),
                ("Citation", f"```bibtex\n{bibtex(method)}\n```" if method_info else "")]
    datasets = [data[3:]] if data.startswith("hf:") else []  # a Hub dataset id
    return _join(f"`{title}`", summary, sections, _front_matter(license, method, datasets))


# ---------------------------------------------------------------------------------------------
# model_cards/


def _expected() -> Dict[str, str]:
    from ._registry import list_pretrained
    return {f"{n}.md": render_card(n) for n in list_pretrained()}


def write_cards(out_dir: Union[str, Path] = CARDS_DIR) -> List[str]:
    """Regenerate `model_cards/`: write what changed, delete cards of entries that no longer exist.
    Returns the files written or deleted."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = _expected()
    changed = []
    for fname, text in expected.items():
        path = out_dir / fname
        data = text.encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            atomic_write(path, lambda f, data=data: f.write(data))
            changed.append(fname)
    for path in sorted(out_dir.glob("*.md")):
        if path.name not in expected:
            path.unlink()
            changed.append(path.name)
    return changed


def check_cards(out_dir: Union[str, Path] = CARDS_DIR) -> List[str]:
    """Problems with `model_cards/` (missing, stale, orphaned cards); empty when it is current."""
    out_dir = Path(out_dir)
    expected = _expected()
    problems = []
    for fname, text in expected.items():
        path = out_dir / fname
        if not path.is_file():
            problems.append(f"missing: {path}")
        elif path.read_bytes() != text.encode("utf-8"):
            problems.append(f"stale: {path}")
    if out_dir.is_dir():
        problems += [f"orphaned (no such entry with weights): {p}" for p in sorted(out_dir.glob("*.md"))
                     if p.name not in expected]
    return problems
