#!/usr/bin/env python3
"""Add one small layer of files to a single-image OCI archive made by oci_image.py.

The sandbox images' debootstrapped roots are slow to build and change rarely;
icee's own files in them (the runner) change often. They go into a layer of
their own, so a change to the runner repacks only that layer. The layer is
written with fixed timestamps and owners, so the same inputs give the same
digest.

Usage: oci_add_layer.py BASE.tar OUT.tar SRC:DEST:MODE...
  e.g. oci_add_layer.py py.tar py-runner.tar build/icee-runner:/usr/local/bin/icee-runner:0755
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

EPOCH = 0
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"


def _layer(files: list[tuple[Path, str, int]]) -> bytes:
    """A tar of the files at their destinations, parents included (root-owned, 0755)."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for src, dest, mode in sorted(files, key=lambda f: f[1]):
            parts = dest.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
                    tar.addfile(info)
            data = src.read_bytes()
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _json_blob(tar: tarfile.TarFile, doc: object) -> tuple[str, int]:
    data = json.dumps(doc, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data)
    return digest, len(data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), EPOCH
    tar.addfile(info, io.BytesIO(data))


def add_layer(base: Path, out: Path, files: list[tuple[Path, str, int]]) -> str:
    """Write OUT: BASE with one more layer holding files; return the manifest digest."""
    with tarfile.open(base) as src:

        def read(name: str) -> bytes:
            f = src.extractfile(name)
            if f is None:
                raise SystemExit(f"{base}: no {name}")
            return f.read()

        index = json.loads(read("index.json"))
        if len(index["manifests"]) != 1:
            raise SystemExit(f"{base}: expected one image, found {len(index['manifests'])}")
        entry = index["manifests"][0]
        old_manifest_name = f"blobs/sha256/{entry['digest'].split(':', 1)[1]}"
        manifest = json.loads(read(old_manifest_name))
        old_config_name = f"blobs/sha256/{manifest['config']['digest'].split(':', 1)[1]}"
        config = json.loads(read(old_config_name))

        layer = _layer(files)
        layer_digest = hashlib.sha256(layer).hexdigest()
        config["rootfs"]["diff_ids"].append(f"sha256:{layer_digest}")
        config["history"].append(
            {"created": "1970-01-01T00:00:00Z", "created_by": "icee cluster/oci_add_layer.py"}
        )
        manifest["layers"].append(
            {"mediaType": LAYER_MEDIA_TYPE, "digest": f"sha256:{layer_digest}", "size": len(layer)}
        )

        tmp = out.with_suffix(".tmp")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as dst:
            for member in src.getmembers():
                if member.name in ("index.json", old_manifest_name, old_config_name):
                    continue
                f = src.extractfile(member) if member.isfile() else None
                if f is None:
                    dst.addfile(member)
                else:
                    with f:
                        dst.addfile(member, f)
            _add(dst, f"blobs/sha256/{layer_digest}", layer)
            cfg_digest, cfg_size = _json_blob(dst, config)
            manifest["config"].update(digest=f"sha256:{cfg_digest}", size=cfg_size)
            man_digest, man_size = _json_blob(dst, manifest)
            entry.update(digest=f"sha256:{man_digest}", size=man_size)
            _add(dst, "index.json", json.dumps(index, sort_keys=True).encode())
    shutil.move(tmp, out)
    return f"sha256:{man_digest}"


def _file_spec(spec: str) -> tuple[Path, str, int]:
    src, dest, mode = spec.rsplit(":", 2)
    if not dest.startswith("/"):
        raise argparse.ArgumentTypeError(f"{spec}: DEST must be absolute")
    return Path(src), dest, int(mode, 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("files", nargs="+", type=_file_spec, metavar="SRC:DEST:MODE")
    a = ap.parse_args()
    print(add_layer(a.base, a.out, a.files))


if __name__ == "__main__":
    main()
