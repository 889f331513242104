"""Published hashes and durable writes: downloads are checked against the hashes the authors publish, and
every file clzoo writes is fsync'ed before it takes its name (offline: a mirror on 127.0.0.1)."""
import dataclasses
import hashlib
import io
import json
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

import clzoo
from clzoo import HashMismatchError, get_pretrained_cfg
from clzoo._io import atomic_write
from clzoo._registry import HASH_FIELDS, _weights, list_entries, register_cfgs
from tests.test_pretrained import moco_checkpoint, outputs

# facebookresearch/moco README (checkpoints.md §5): the md5 prefix printed beside each file
MOCO_README_MD5 = {
    "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar": "b251726a",
    "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar": "59fd9945",
    "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar": "a04e12f8",
}
ENTRY = "mocov1_resnet50.200ep"  # published md5 prefix b251726a
URL = get_pretrained_cfg(ENTRY).url


@pytest.fixture(scope="module")
def moco_file():
    """(source model, bytes of a MoCo checkpoint in the official layout)."""
    source, ckpt = moco_checkpoint(seed=3)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return source, buf.getvalue()


def with_md5(monkeypatch, entry, md5_prefix):
    monkeypatch.setitem(_weights, entry, dataclasses.replace(_weights[entry], md5_prefix=md5_prefix))


def cache_files(home):
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# ---------------------------------------------------------------------------------------------
# the registry


def test_registry_hashes_are_hex_and_moco_prefixes_are_registered():
    for name, info in _weights.items():
        for fld, longest in HASH_FIELDS.items():
            value = getattr(info, fld)
            assert value is None or re.fullmatch(f"[0-9a-f]{{8,{longest}}}", value), (name, fld, value)
    by_url = {get_pretrained_cfg(n).url: _weights[n] for n in list_entries() if n in _weights}
    for url, md5 in MOCO_README_MD5.items():
        assert by_url[url].md5_prefix == md5, url
    # torch.hub's check_hash convention: a file named `name-<sha256 prefix>.ext` carries its own hash
    for name in list_entries():
        url = get_pretrained_cfg(name).url
        m = re.search(r"-([0-9a-f]{8,})\.", Path(urlsplit(url).path).name) if url else None
        if m:
            assert (_weights[name].sha256 or "").startswith(m.group(1)), (name, url)


def test_malformed_hash_is_refused_at_registration():
    with pytest.raises(ValueError, match="md5_prefix='B251726A' is not a lower-case hex"):
        register_cfgs({"mocov1_resnet50.badhash": dict(method="mocov1", md5_prefix="B251726A")})
    assert "mocov1_resnet50.badhash" not in _weights


def test_info_says_which_files_are_checked_against_a_published_hash(capsys):
    published = {n for n in list_entries() if n in _weights and clzoo.model_info(n)["weights"]["hash_published"]}
    assert published == {"mocov1_resnet50.200ep", "mocov2_resnet50.200ep", "mocov2_resnet50.800ep"}
    assert clzoo.model_info("mocov2_resnet50.800ep")["weights"]["hash"] == "published md5 prefix a04e12f8"
    assert clzoo.model_info("dino_vits16")["weights"]["hash"] == "recorded on first download"
    from clzoo.cli import main
    assert main(["info", "mocov1_resnet50"]) == 0
    assert "hash:      published md5 prefix b251726a" in capsys.readouterr().out
    assert main(["info", "swav_resnet50"]) == 0
    assert "hash:      recorded on first download" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# downloads


def test_file_matching_the_published_md5_prefix_loads(mirror, moco_file, clzoo_home, monkeypatch):
    source, data = moco_file
    md5 = hashlib.md5(data).hexdigest()
    with_md5(monkeypatch, ENTRY, md5[:8])  # no generated file has MoCo's real prefix; the check is the same
    mirror.add(URL, data=data)
    model = clzoo.create_model(ENTRY, pretrained=True)
    assert torch.equal(outputs(model), outputs(source))
    raw = clzoo_home / "downloads" / "dl.fbaipublicfiles.com" / URL.split("/", 3)[3]
    meta = json.loads(raw.with_name(raw.name + ".json").read_text())
    assert meta["md5"] == md5 and meta["published_hash"] == f"md5:{md5[:8]}"


def test_file_not_matching_the_published_md5_is_refused_and_not_kept(mirror, moco_file, clzoo_home):
    _, data = moco_file
    actual = hashlib.md5(data).hexdigest()
    assert not actual.startswith("b251726a")
    path = mirror.add(URL, data=data)  # the registry's real prefix: this file is not the release
    with pytest.raises(HashMismatchError) as e:
        clzoo.create_model(ENTRY, pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg
    for part in (URL, mirror.url.rstrip("/") + path, "md5 prefix b251726a", f"md5 {actual}", "Download it again",
                 "CLZOO_MIRROR", "pretrained_cfg_overlay=dict(file=PATH)"):
        assert part in msg, part
    assert mirror.requests[path] == 1  # a wrong file is not fetched three times
    assert cache_files(clzoo_home) == []


def test_cached_file_that_contradicts_a_newly_published_hash_is_fetched_again(mirror, moco_file, clzoo_home,
                                                                              monkeypatch):
    """A download (and its conversion) from before the hash was registered is checked, not trusted."""
    _, data = moco_file
    path = mirror.add(URL, data=data)
    with_md5(monkeypatch, ENTRY, None)
    clzoo.create_model(ENTRY, pretrained=True)
    assert mirror.requests[path] == 1 and len(cache_files(clzoo_home)) == 4  # download, conversion, 2 sidecars
    with_md5(monkeypatch, ENTRY, "b251726a")
    with pytest.raises(HashMismatchError):
        clzoo.create_model(ENTRY, pretrained=True)
    assert mirror.requests[path] == 2
    assert not [f for f in cache_files(clzoo_home) if f.startswith("downloads")]


def test_download_takes_a_sha256_prefix(file_server, clzoo_home):
    data = b"official bytes" * 1000
    url = file_server.url + "ckpt/model-" + hashlib.sha256(data).hexdigest()[:8] + ".pth"
    file_server.add("ckpt/" + url.rsplit("/", 1)[1], data=data)
    assert clzoo.download(url, sha256=hashlib.sha256(data).hexdigest()[:8], progress=False).read_bytes() == data
    with pytest.raises(HashMismatchError, match="sha256 prefix 00000000"):
        clzoo.download(url + "?v=2", sha256="00000000", progress=False, cache_dir=clzoo_home / "other")


# ---------------------------------------------------------------------------------------------
# durable writes


@pytest.fixture
def fsyncs(monkeypatch):
    """Records, in order, ('fsync', inode, is_dir) and ('replace', inode of the source, destination)."""
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", st.st_ino, stat.S_ISDIR(st.st_mode)))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.stat(src).st_ino, str(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def assert_durable(events, path):
    """`path` took its name by a rename of a file fsync'ed before it, and its folder was fsync'ed after."""
    path = Path(path)
    renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(path)]
    assert renames, f"{path} was not written through a rename"
    i = renames[-1]
    ino = events[i][1]
    assert ("fsync", ino, False) in events[:i], f"{path} was renamed before it was fsync'ed"
    assert ("fsync", path.parent.stat().st_ino, True) in events[i:], f"{path.parent} not fsync'ed after the rename"


def test_atomic_write_fsyncs_before_the_rename_and_leaves_nothing_on_failure(tmp_path, fsyncs):
    target = tmp_path / "sub" / "f.bin"
    assert atomic_write(target, lambda f: f.write(b"one")) == target
    assert target.read_bytes() == b"one"
    assert_durable(fsyncs, target)
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and not tmp.exists()
        tmp.write_bytes(b"two")
    assert target.read_bytes() == b"two"
    assert_durable(fsyncs, target)

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"two" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_every_file_clzoo_writes_is_fsynced_before_its_rename(mirror, moco_file, clzoo_home, tmp_path, fsyncs):
    _, data = moco_file
    mirror.add(URL, data=data)
    with pytest.MonkeyPatch.context() as mp:
        with_md5(mp, ENTRY, hashlib.md5(data).hexdigest()[:8])
        clzoo.create_model(ENTRY, pretrained=True)
    written = [clzoo_home / f for f in cache_files(clzoo_home)]
    assert len(written) == 4  # download + sidecar, conversion + sidecar
    for path in written:
        assert_durable(fsyncs, path)

    emb = clzoo.Embeddings(torch.randn(3, 4), torch.arange(3), ["a", "b", "c"]).save(tmp_path / "emb.safetensors")
    assert_durable(fsyncs, emb)

    from clzoo.hub import save_for_hub
    model = clzoo.create_model("dino_vits16", depth=1, img_size=32)
    folder = save_for_hub(model, tmp_path / "repo")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for name in ("README.md", "config.json", "model.safetensors"):
        assert_durable(fsyncs, folder / name)
