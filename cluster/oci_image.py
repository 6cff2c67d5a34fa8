#!/usr/bin/env python3
"""Pack a root filesystem directory into a single-layer OCI image archive.

No registry can be reached here, so images are assembled from a directory and
imported into containerd with `ctr images import`. The layer is written in a
fixed order with fixed timestamps, so the same tree gives the same digest.

Usage: oci_image.py ROOTFS NAME OUT.tar [--entrypoint PATH] [--user UID:GID] [--env K=V]...
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

EPOCH = 0
# Kernel-provided or per-run trees: the runtime mounts these, they are not content.
SKIP_CONTENT = {"proc", "sys", "dev", "run", "tmp"}


def _entries(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts and rel.parts[0] in SKIP_CONTENT:
            dirnames[:] = []
            continue
        dirnames.sort()
        out.extend(Path(dirpath) / n for n in dirnames)
        out.extend(Path(dirpath) / n for n in sorted(filenames))
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def write_layer(root: Path, dest: io.BufferedWriter) -> tuple[str, int]:
    """Write the layer tar to dest; return (sha256 hex, size)."""
    hasher = hashlib.sha256()

    class _Tee(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b):  # type: ignore[no-untyped-def, override]
            hasher.update(b)
            return dest.write(b)

    tee = _Tee()
    start = dest.tell()
    with tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        hardlinks: dict[tuple[int, int], str] = {}
        for path in _entries(root):
            arc = path.relative_to(root).as_posix()
            info = tar.gettarinfo(str(path), arcname=arc)
            info.mtime = EPOCH
            info.uname = info.gname = ""
            st = path.lstat()
            if info.isreg() and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in hardlinks:
                    info.type = tarfile.LNKTYPE
                    info.linkname = hardlinks[key]
                    info.size = 0
                    tar.addfile(info)
                    continue
                hardlinks[key] = arc
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return hasher.hexdigest(), dest.tell() - start


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime = len(data), EPOCH
    tar.addfile(info, io.BytesIO(data))
    return digest, len(data)


def _normalize(name: str) -> str:
    """The fully qualified name the kubelet asks containerd for."""
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def pack(root: Path, name: str, out: Path, entrypoint: list[str], user: str, env: list[str]) -> str:
    layer_path = out.with_suffix(".layer.tmp")
    with layer_path.open("wb") as f:
        layer_digest, layer_size = write_layer(root, f)  # type: ignore[arg-type]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": entrypoint or None,
            "User": user,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *env],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "icee cluster/oci_image.py"}],
    }
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        info = tarfile.TarInfo("oci-layout")
        info.size, info.mtime = len(layout), EPOCH
        tar.addfile(info, io.BytesIO(layout))
        info = tarfile.TarInfo(f"blobs/sha256/{layer_digest}")
        info.size, info.mtime = layer_size, EPOCH
        with layer_path.open("rb") as f:
            tar.addfile(info, f)
        cfg_digest, cfg_size = _blob(tar, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{cfg_digest}",
                "size": cfg_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{layer_digest}",
                    "size": layer_size,
                }
            ],
        }
        man_digest, man_size = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
        full = _normalize(name)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{man_digest}",
                    "size": man_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": full,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        data = json.dumps(index, sort_keys=True).encode()
        info = tarfile.TarInfo("index.json")
        info.size, info.mtime = len(data), EPOCH
        tar.addfile(info, io.BytesIO(data))
    layer_path.unlink()
    tmp.rename(out)
    return f"sha256:{man_digest}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rootfs", type=Path)
    ap.add_argument("name")
    ap.add_argument("out", type=Path)
    ap.add_argument("--entrypoint", action="append", default=[])
    ap.add_argument("--user", default="65532:65532")
    ap.add_argument("--env", action="append", default=[])
    a = ap.parse_args()
    print(pack(a.rootfs, a.name, a.out, a.entrypoint, a.user, a.env))


if __name__ == "__main__":
    main()
