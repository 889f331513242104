"""Shared test helpers: a loopback file server, official key lists, random BN statistics."""
from __future__ import annotations

import http.server
import io
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

KEYS_DIR = Path(__file__).parent / "data" / "official_keys"


class FileServer:
    """Serves `files[path] = bytes` on 127.0.0.1. `truncate[path] = n` sends only n bytes of the body
    while announcing the full Content-Length (a connection that breaks off)."""

    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.truncate: Dict[str, int] = {}
        self.requests: Counter = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.requests[path] += 1
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                n = server.truncate.get(path, len(body))
                self.wfile.write(body[:n])
                if n < len(body):
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path: str, obj=None, data: Optional[bytes] = None) -> str:
        """Serve `obj` (torch.save'd) or raw `data` at `path` (an official URL or its path)."""
        path = "/" + re.sub(r"^https?://[^/]+/", "", path).lstrip("/")
        if data is None:
            buf = io.BytesIO()
            torch.save(obj, buf)
            data = buf.getvalue()
        self.files[path] = data
        return path

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


def read_official_keys(name: str) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """{key: (shape, dtype)} from a reference key list (../shared/reference/keys/, copied here)."""
    out = {}
    for line in (KEYS_DIR / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        shape = tuple(int(s) for s in re.findall(r"\d+", shape))
        out[key] = (shape, dtype)
    return out


def randomize_bn_stats(model: torch.nn.Module, generator: Optional[torch.Generator] = None) -> torch.nn.Module:
    """Random affine parameters and running statistics, so loading them wrongly changes outputs."""
    g = generator or torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def save_with_nce_average(obj_fn, path) -> None:
    """torch.save `obj_fn(nce_average)` where `nce_average` is a module of the class lemniscate.pytorch
    pickles (`lib.NCEAverage.NCEAverage`, the memory bank); the class exists only while saving."""
    import sys
    import types

    class NCEAverage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("memory", torch.randn(10, 128))
            self.register_buffer("params", torch.tensor([4096, 0.07, -1, 0.5]))

    NCEAverage.__module__, NCEAverage.__qualname__ = "lib.NCEAverage", "NCEAverage"
    nce_mod = types.ModuleType("lib.NCEAverage")
    nce_mod.NCEAverage = NCEAverage
    sys.modules.update({"lib": types.ModuleType("lib"), "lib.NCEAverage": nce_mod})
    try:
        torch.save(obj_fn(NCEAverage()), path)
    finally:
        for name in ("lib", "lib.NCEAverage"):
            sys.modules.pop(name)


# ---------------------------------------------------------------------------------------------
# Independent reference forwards, written from the official code (not from clzoo's converters).

def resnet_reference(sd: Dict[str, torch.Tensor], x: torch.Tensor, layers=(3, 4, 6, 3), prefix: str = "",
                     stem: str = "torch") -> torch.Tensor:
    """Functional torchvision-layout bottleneck ResNet (stride on the 3x3 conv), eval-mode BN, any width.

    `stem="torch"`: symmetric padding (torchvision, SwAV, VISSL, ...). The widths are read from the
    weights, so SSL wide ResNets (every stage and the stem widened) need nothing else.
    """
    import torch.nn.functional as F

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-5)

    p = prefix
    y = F.relu(bn(F.conv2d(x, sd[p + "conv1.weight"], stride=2, padding=3), p + "bn1"))
    y = F.max_pool2d(y, 3, 2, 1)
    for stage, n in enumerate(layers, 1):
        for b in range(n):
            q = f"{p}layer{stage}.{b}."
            stride = 2 if (b == 0 and stage > 1) else 1
            out = F.relu(bn(F.conv2d(y, sd[q + "conv1.weight"]), q + "bn1"))
            out = F.relu(bn(F.conv2d(out, sd[q + "conv2.weight"], stride=stride, padding=1), q + "bn2"))
            out = bn(F.conv2d(out, sd[q + "conv3.weight"]), q + "bn3")
            short = bn(F.conv2d(y, sd[q + "downsample.0.weight"], stride=stride), q + "downsample.1") \
                if q + "downsample.0.weight" in sd else y
            y = F.relu(out + short)
    return y.mean((2, 3))


def vit_reference(sd: Dict[str, torch.Tensor], x: torch.Tensor, num_heads: int, prefix: str = "") -> torch.Tensor:
    """The DINO / MoCo v3 ViT forward (pre-norm blocks, LayerNorm eps 1e-6, exact GELU), CLS after the norm."""
    import torch.nn.functional as F

    p = prefix
    w = sd[p + "patch_embed.proj.weight"]
    t = F.conv2d(x, w, sd[p + "patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    t = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), t], 1) + sd[p + "pos_embed"]
    dim = t.shape[-1]
    depth = 1 + max(int(k[len(p):].split(".")[1]) for k in sd if k.startswith(p + "blocks."))
    for i in range(depth):
        q = f"{p}blocks.{i}."
        h = F.layer_norm(t, (dim,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], 1e-6)
        B, N, _ = h.shape
        qkv = (h @ sd[q + "attn.qkv.weight"].T + sd[q + "attn.qkv.bias"]).reshape(B, N, 3, num_heads, -1)
        qh, kh, vh = qkv.permute(2, 0, 3, 1, 4)
        a = ((qh @ kh.transpose(-2, -1)) * (dim // num_heads) ** -0.5).softmax(-1)
        h = (a @ vh).transpose(1, 2).reshape(B, N, dim)
        t = t + h @ sd[q + "attn.proj.weight"].T + sd[q + "attn.proj.bias"]
        h = F.layer_norm(t, (dim,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], 1e-6)
        h = F.gelu(h @ sd[q + "mlp.fc1.weight"].T + sd[q + "mlp.fc1.bias"])
        t = t + h @ sd[q + "mlp.fc2.weight"].T + sd[q + "mlp.fc2.bias"]
    t = F.layer_norm(t, (dim,), sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
    return t[:, 0]


def random_resnet_state_dict(layers=(3, 4, 6, 3), width: int = 1, seed: int = 0, prefix: str = "",
                             in_chans: int = 3, stem: int = None, base: int = None) -> Dict[str, torch.Tensor]:
    """A torchvision-layout ResNet state dict with random weights *and* random BN statistics.

    Built from the layer shapes alone (He-scaled convs, BN gamma in [0.2, 0.6] to keep deep nets at
    O(1)), so it does not depend on timm or clzoo; `num_batches_tracked` included as torch writes it.
    """
    g = torch.Generator().manual_seed(seed)
    sd: Dict[str, torch.Tensor] = {}

    def conv(name, o, i, k):
        sd[prefix + name + ".weight"] = torch.randn(o, i, k, k, generator=g) * (2.0 / (i * k * k)) ** 0.5

    def bn(name, c):
        sd[prefix + name + ".weight"] = torch.rand(c, generator=g) * 0.4 + 0.2
        sd[prefix + name + ".bias"] = torch.randn(c, generator=g) * 0.1
        sd[prefix + name + ".running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[prefix + name + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[prefix + name + ".num_batches_tracked"] = torch.tensor(1000)

    stem = stem or 64 * width
    base = base or 64 * width
    conv("conv1", stem, in_chans, 7)
    bn("bn1", stem)
    inplanes = stem
    for stage, n in enumerate(layers, 1):
        planes = base * 2 ** (stage - 1)
        for b in range(n):
            q = f"layer{stage}.{b}."
            conv(q + "conv1", planes, inplanes, 1)
            bn(q + "bn1", planes)
            conv(q + "conv2", planes, planes, 3)
            bn(q + "bn2", planes)
            conv(q + "conv3", planes * 4, planes, 1)
            bn(q + "bn3", planes * 4)
            if b == 0:
                conv(q + "downsample.0", planes * 4, inplanes, 1)
                bn(q + "downsample.1", planes * 4)
            inplanes = planes * 4
    return sd


# ---------------------------------------------------------------------------------------------
# Writers of the non-PyTorch official containers (for tests only).

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field: int, value, wire: int = 0) -> bytes:
    key = _varint((field << 3) | wire)
    if wire == 0:
        return key + _varint(value)
    if wire == 2:
        return key + _varint(len(value)) + value
    if wire == 5:
        import struct
        return key + struct.pack("<I", value)
    raise ValueError(wire)


_TF_DTYPES = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int64": 9, "bool": 10, "float16": 19}


def write_tf_checkpoint(prefix, tensors, block_size: int = 262144) -> None:
    """Write `{name: np.ndarray}` as a TF tensor bundle (PREFIX.index + PREFIX.data-00000-of-00001).

    Follows tensor_bundle.proto and the LevelDB table format (restart interval 16, uncompressed
    blocks with masked crc32c trailers). Checked once against TensorFlow 2.15's own reader
    (`tf.train.load_checkpoint`), see tests/data/golden/make_golden.py's notes.
    """
    import struct

    import numpy as np

    from clzoo.convert.tf_checkpoint import masked_crc32c

    prefix = str(prefix)
    data = bytearray()
    table = {b"": _pb(1, 1) + _pb(3, _pb(1, 1), wire=2)}  # header: num_shards=1, version.producer=1
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        arr = np.ascontiguousarray(arr) if arr.ndim else arr  # ascontiguousarray would make scalars 1-d
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_pb(2, _pb(1, int(d)), wire=2) for d in arr.shape)
        entry = _pb(1, _TF_DTYPES[arr.dtype.name]) + _pb(2, shape, wire=2)
        entry += (_pb(4, len(data)) if data else b"") + (_pb(5, len(raw)) if raw else b"")
        entry += _pb(6, masked_crc32c(raw) if len(raw) < 4096 else 0, wire=5)
        table[name.encode()] = entry
        data += raw
    with open(prefix + ".data-00000-of-00001", "wb") as fh:
        fh.write(bytes(data))

    def block(items):
        buf, restarts, prev = bytearray(), [], b""
        for i, (k, v) in enumerate(items):
            shared = 0
            if i % 16 == 0:
                restarts.append(len(buf))
            else:
                while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                    shared += 1
            buf += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
            prev = k
        for r in restarts or [0]:
            buf += struct.pack("<I", r)
        buf += struct.pack("<I", len(restarts or [0]))
        return bytes(buf)

    out, index = bytearray(), []

    def emit(contents):
        offset = len(out)
        out.extend(contents + b"\x00" + struct.pack("<I", masked_crc32c(contents + b"\x00")))
        return _varint(offset) + _varint(len(contents))

    items = sorted(table.items())
    chunk, size = [], 0
    for k, v in items:
        chunk.append((k, v))
        size += len(k) + len(v) + 8
        if size >= block_size:
            index.append((chunk[-1][0], emit(block(chunk))))
            chunk, size = [], 0
    if chunk:
        index.append((chunk[-1][0], emit(block(chunk))))
    meta = emit(block([]))
    idx = emit(block(index))
    footer = (meta + idx).ljust(40, b"\x00") + struct.pack("<II", 0x8B80FB57, 0xDB477524)
    with open(prefix + ".index", "wb") as fh:
        fh.write(bytes(out) + footer)


def byol_pickle(path, online_params, online_state, target_params=None, target_state=None, step: int = 1000):
    """Write a checkpoint the way deepmind-research/byol's checkpointing.py does with dill 0.3 / Haiku 0.0.2.

    `dill.dump(dict(experiment_state=_ByolExperimentState(...), step=..., rng=...), protocol=2)`, where
    dill records the NamedTuple class as `dill._dill._create_namedtuple(name, fields, module)` and
    Haiku's FlatMapping pickles as `FlatMapping(dict)` (tests/data/golden/byol_dill_tiny.pkl is the
    same structure written by dill itself). The stand-in modules exist only while pickling.
    """
    import pickle
    import sys
    import types

    import numpy as np

    from tests.byol_standins import byol_standin_types

    dill_mod = types.ModuleType("dill._dill")
    hk_mod, _, FlatMapping, _ByolExperimentState = byol_standin_types()

    def _create_namedtuple(name, fieldnames, modulename):
        raise AssertionError("only used by reference while pickling")

    _create_namedtuple.__module__, _create_namedtuple.__qualname__ = dill_mod.__name__, "_create_namedtuple"
    dill_mod._create_namedtuple = _create_namedtuple

    class DillLikePickler(pickle.Pickler):
        def reducer_override(self, obj):
            if obj is _ByolExperimentState:
                return _create_namedtuple, (obj.__qualname__, obj._fields, obj.__module__)
            return NotImplemented

    def tree(d):
        return FlatMapping({m: FlatMapping(leaves) for m, leaves in d.items()}) if d is not None else None

    state = _ByolExperimentState(tree(online_params), tree(target_params or online_params), tree(online_state),
                                 tree(target_state or online_state), ({"momentum": np.zeros(3)},))
    fake = {"dill": types.ModuleType("dill"), "dill._dill": dill_mod, "haiku": types.ModuleType("haiku"),
            "haiku._src": types.ModuleType("haiku._src"), "haiku._src.data_structures": hk_mod}
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)
    try:
        with open(path, "wb") as fh:
            DillLikePickler(fh, protocol=2).dump(dict(experiment_state=state, step=step,
                                                      rng=np.array([0, 42], dtype=np.uint32)))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class MeanLinear(torch.nn.Module):
    """A tiny encoder whose output the tests compute by hand: the per-channel mean of the image through one
    Linear (features = mean_hw(x) W^T + b)."""

    def __init__(self, out_dim: int = 6):
        super().__init__()
        self.num_features = out_dim
        self.fc = torch.nn.Linear(3, out_dim)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
