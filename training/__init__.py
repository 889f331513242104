"""clzoo trainer: `python training/pretrain.py --method M ...` (see README "Training").

Layout: `pretrain.py` (CLI + the training loop), `config.py` (recipes and overrides), `data/` (datasets and
batched, seeded augmentations), `modules/` (pieces shared by methods), `methods/` (one file per method).
"""
