"""Re-make the Kafka jars from their extracted trees (carried as one .tar.xz: xz packs the class files far
tighter than each jar's own deflate), stored uncompressed."""

import os
import sys
import zipfile
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for tree in sorted(p for p in src.iterdir() if p.is_dir()):
    with zipfile.ZipFile(dst / tree.name, "w", zipfile.ZIP_STORED) as jar:
        manifest = tree / "META-INF" / "MANIFEST.MF"
        if manifest.exists():  # first, as java.util.jar expects
            jar.write(manifest, "META-INF/MANIFEST.MF")
        for root, dirs, files in os.walk(tree):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                arc = path.relative_to(tree).as_posix()
                if arc != "META-INF/MANIFEST.MF":
                    jar.write(path, arc)
(dst / ".complete").touch()
print(len(list(dst.glob("*.jar"))), "jars in", dst)
