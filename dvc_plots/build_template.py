"""Rebuild dvc_plots/offline.html: DVC's plots page with vega, vega-lite and vega-embed inlined.

    python dvc_plots/build_template.py            # fetches the three packages with `npm pack`
    python dvc_plots/build_template.py --from DIR # or uses DIR/<name>-<version>.tgz

The versions are the ones DVC's own page loads from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS);
the sha256 of each minified build is pinned, so a rebuild gives the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name, version, file inside the npm package, sha256 of that file
PACKAGES = [
    ("vega", "5.20.2", "package/build/vega.min.js",
     "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be"),
    ("vega-lite", "5.2.0", "package/build/vega-lite.min.js",
     "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb"),
    ("vega-embed", "6.18.2", "package/build/vega-embed.min.js",
     "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e"),
]

LICENSE = """\
vega, vega-lite and vega-embed are distributed under the BSD 3-Clause License:

Copyright (c) 2015-2018, University of Washington Interactive Data Lab (vega)
Copyright (c) 2015, University of Washington Interactive Data Lab. (vega-lite)
Copyright (c) 2015, University of Washington Interactive Data Lab (vega-embed)
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its contributors
   may be used to endorse or promote products derived from this software
   without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

The minified builds also bundle some of their npm dependencies (MIT, ISC,
BSD-3-Clause, 0BSD and CC0-1.0 licensed); see dvc_plots/README.md."""

# DVC fills {refresh_tag} and {plot_divs} (plain str.replace, so braces in the JavaScript are
# safe). There is deliberately no {scripts}: that is where DVC would put its CDN <script> tags.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>audioflow: DVC plots</title>
<!-- Offline DVC plots page, written by dvc_plots/build_template.py.
     {versions} inlined below.

{license}
-->
{scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(dest: Path) -> None:
    specs = [f"{name}@{version}" for name, version, _, _ in PACKAGES]
    subprocess.run(["npm", "pack", "--silent", *specs], cwd=dest, check=True, stdout=subprocess.DEVNULL)


def build(tarballs: Path, out: Path) -> None:
    scripts = []
    for name, version, member, sha in PACKAGES:
        with tarfile.open(tarballs / f"{name}-{version}.tgz") as tar:
            data = tar.extractfile(member).read()
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise SystemExit(f"{name}@{version} {member}: sha256 {got}, expected {sha}")
        js = data.decode("utf-8")
        for bad in ("</script", "{scripts}", "{plot_divs}", "{refresh_tag}"):
            if bad in js:
                raise SystemExit(f"{name}: contains {bad!r}, cannot be inlined as is")
        scripts.append(f"<script>/* {name} {version} ({member.removeprefix('package/')}) */\n{js.strip()}\n</script>")
    versions = ", ".join(f"{n} {v}" for n, v, _, _ in PACKAGES)
    out.write_text(PAGE.format(versions=versions, license=LICENSE, scripts="\n".join(scripts)), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", type=Path, help="folder with the npm tarballs (default: npm pack)")
    ap.add_argument("--out", type=Path, default=HERE / "offline.html")
    args = ap.parse_args()
    if args.src:
        build(args.src, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fetch(Path(tmp))
        build(Path(tmp), args.out)


if __name__ == "__main__":
    main()
