#!/usr/bin/env python3
"""Build a small OCI image layout from a static busybox binary, offline.

Used by hack/env-up.sh to create the test images that the local registry serves.
Python 3 standard library only. The output is deterministic: the same busybox
binary and the same arguments always give the same blobs and the same manifest
digest (fixed mtimes, uid/gid 0, sorted tar entries, gzip header without name
or time, canonical JSON).

Layout of the image:
  layer 1 (base): /bin/busybox + one symlink per applet (`busybox --list`) in /bin,
                  /etc/passwd (root, nobody), /etc/group, empty /etc/hostname,
                  /tmp (1777), /root, /home, /dev, /proc, /sys, /usr, /var
  layer 2 (only with --file): the given extra files

Example:
  build-image.py --out /tmp/img --ref 1 --entrypoint '["/bin/echo","entry"]' \
      --cmd '["default-arg"]' --workdir /tmp --env IMAGE_ENV=from-image [--user 1000]

Prints the manifest digest (sha256:...) on stdout.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_INDEX = "application/vnd.oci.image.index.v1+json"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\n"


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def go_arch():
    m = platform.machine().lower()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(m, m)


class LayerBuilder:
    """Collects entries and writes a deterministic tar (USTAR, sorted)."""

    def __init__(self, mtime):
        self.mtime = mtime
        self.entries = {}  # path -> (kind, mode, payload)

    def add_dir(self, path, mode=0o755):
        self.entries[path] = ("dir", mode, None)

    def add_file(self, path, data, mode=0o644):
        self._parents(path)
        self.entries[path] = ("file", mode, data)

    def add_symlink(self, path, target):
        self._parents(path)
        self.entries[path] = ("symlink", 0o777, target)

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in self.entries:
                self.entries[p] = ("dir", 0o755, None)

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for path in sorted(self.entries):
                kind, mode, payload = self.entries[path]
                ti = tarfile.TarInfo(path)
                ti.mtime = self.mtime
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = "root"
                ti.mode = mode
                if kind == "dir":
                    ti.type = tarfile.DIRTYPE
                    tf.addfile(ti)
                elif kind == "symlink":
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = payload
                    tf.addfile(ti)
                else:
                    ti.type = tarfile.REGTYPE
                    ti.size = len(payload)
                    tf.addfile(ti, io.BytesIO(payload))
        return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of varying fields
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def put(self, data):
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.root, "blobs", "sha256", digest)
        with open(path, "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)


def busybox_applets(busybox):
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    names = sorted({n.strip() for n in out.split() if n.strip()})
    bad = [n for n in names if "/" in n or n in (".", "..")]
    if bad:
        raise SystemExit("unexpected applet names from busybox --list: %r" % bad)
    return [n for n in names if n != "busybox"]


def base_layer(busybox, mtime):
    lb = LayerBuilder(mtime)
    for d in ("bin", "dev", "etc", "home", "proc", "sys", "usr", "var"):
        lb.add_dir(d)
    lb.add_dir("root", 0o700)
    lb.add_dir("tmp", 0o1777)
    with open(busybox, "rb") as f:
        lb.add_file("bin/busybox", f.read(), 0o755)
    for name in busybox_applets(busybox):
        lb.add_symlink("bin/" + name, "busybox")
    lb.add_file("etc/passwd", PASSWD.encode())
    lb.add_file("etc/group", GROUP.encode())
    lb.add_file("etc/hostname", b"")
    return lb.tar_bytes()


def extra_layer(files, mtime):
    lb = LayerBuilder(mtime)
    for spec in files:
        if "=" not in spec:
            raise SystemExit("--file wants PATH=CONTENT, got %r" % spec)
        path, content = spec.split("=", 1)
        path = path.strip("/")
        if not path or ".." in path.split("/"):
            raise SystemExit("bad --file path %r" % spec)
        lb.add_file(path, content.encode())
    return lb.tar_bytes()


def parse_json_list(s, what):
    if s is None:
        return None
    v = json.loads(s)
    if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        raise SystemExit("%s must be a JSON list of strings, got %r" % (what, s))
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="OCI layout directory to (re)create")
    ap.add_argument("--ref", required=True, help="org.opencontainers.image.ref.name (the tag)")
    ap.add_argument("--busybox", default=os.environ.get("BUSYBOX", "/bin/busybox"))
    ap.add_argument("--entrypoint", help='JSON list, e.g. \'["/bin/sleep","inf"]\'')
    ap.add_argument("--cmd", help="JSON list")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--user", default=None, help='config User, e.g. "1000" or "nobody"')
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE (repeatable)")
    ap.add_argument("--file", action="append", default=[], help="PATH=CONTENT in an extra layer (repeatable)")
    ap.add_argument(
        "--mtime",
        type=int,
        default=int(os.environ.get("SOURCE_DATE_EPOCH", "1704067200")),  # 2024-01-01T00:00:00Z
        help="timestamp used for every file and the config (default: $SOURCE_DATE_EPOCH or 2024-01-01)",
    )
    a = ap.parse_args()

    entrypoint = parse_json_list(a.entrypoint, "--entrypoint")
    cmd = parse_json_list(a.cmd, "--cmd")
    for e in a.env:
        if "=" not in e:
            raise SystemExit("--env wants KEY=VALUE, got %r" % e)

    out = os.path.abspath(a.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".build-", dir=parent)
    os.chmod(tmp, 0o755)
    try:
        layout = Layout(tmp)
        tars = [base_layer(a.busybox, a.mtime)]
        if a.file:
            tars.append(extra_layer(a.file, a.mtime))

        layers, diff_ids = [], []
        for t in tars:
            diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
            digest, size = layout.put(gzip_bytes(t))
            layers.append({"mediaType": MT_LAYER, "digest": digest, "size": size})

        created = datetime.datetime.fromtimestamp(a.mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        cfg = {"Env": [DEFAULT_PATH] + a.env}
        if entrypoint is not None:
            cfg["Entrypoint"] = entrypoint
        if cmd is not None:
            cfg["Cmd"] = cmd
        if a.workdir:
            cfg["WorkingDir"] = a.workdir
        if a.user:
            cfg["User"] = a.user
        config = {
            "created": created,
            "architecture": go_arch(),
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created": created, "created_by": "kubelet-rs hack/build-image.py (busybox base)"}
            ]
            + (
                [{"created": created, "created_by": "kubelet-rs hack/build-image.py (extra files)"}]
                if a.file
                else []
            ),
        }
        cdigest, csize = layout.put(canonical_json(config))

        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
            "layers": layers,
        }
        mdigest, msize = layout.put(canonical_json(manifest))

        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [
                {
                    "mediaType": MT_MANIFEST,
                    "digest": mdigest,
                    "size": msize,
                    "annotations": {"org.opencontainers.image.ref.name": a.ref},
                    "platform": {"architecture": go_arch(), "os": "linux"},
                }
            ],
        }
        with open(os.path.join(tmp, "index.json"), "wb") as f:
            f.write(canonical_json(index))
        with open(os.path.join(tmp, "oci-layout"), "wb") as f:
            f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))

        if os.path.isdir(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
        tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(mdigest)


if __name__ == "__main__":
    sys.exit(main())
