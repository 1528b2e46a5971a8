"""Vendored Vega scripts for ``dvc plots show``, so the plots page works without internet.

DVC's default page loads vega, vega-lite and vega-embed from a CDN (blank offline). ``.dvc/config`` sets
``plots.html_template`` to ``plots/template.html``, a page with the three minified scripts *inlined* (so
the written ``dvc_plots/index.html`` works wherever it is opened or copied); the scripts, their licenses
and versions lie in ``plots/vendor/``.

    python plots/vendor.py template   # write plots/template.html from plots/vendor/ (no network)
    python plots/vendor.py check      # exit 1 when plots/template.html differs from what `template` writes
    python plots/vendor.py update     # fetch VERSIONS from the npm registry (npm install in a temp dir),
                                      # replace plots/vendor/*, then rewrite the template
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
TEMPLATE = HERE / "template.html"
VERSIONS = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
"""The newest releases of the majors DVC's renderer writes specs for (its CDN page pins vega 5,
vega-lite 5, vega-embed 6)."""
SCRIPTS = {
    "vega": "build/vega.min.js",
    "vega-lite": "build/vega-lite.min.js",
    "vega-embed": "build/vega-embed.min.js",
}
MONOREPO_LICENSE = VENDOR / "LICENSE-vega"
"""github.com/vega/vega's LICENSE: most vega-* npm packages ship none."""
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")
"""What DVC replaces in a template (``str.replace``); ``{scripts}`` (the CDN tags) is left out on purpose."""

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>hpmcore: DVC plots</title>
    <!-- {names}: inlined from plots/vendor/ (BSD-3-Clause, see plots/vendor/THIRD_PARTY_LICENSES.txt),
         so this page needs no network. Written by plots/vendor.py; do not edit. -->
{scripts_html}
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build_template() -> str:
    """The template page: :data:`PAGE` with the vendored scripts inlined.

    Raises:
        ValueError: a script contains ``</script`` or one of DVC's placeholders (it would break the page).
    """
    parts = []
    for name in VERSIONS:
        text = (VENDOR / Path(SCRIPTS[name]).name).read_text(encoding="utf-8")
        bad = [s for s in ("</script", *PLACEHOLDERS) if s in text]
        if bad:
            raise ValueError(f"{name}: contains {bad}; cannot be inlined as it is")
        parts.append(f"    <script>/* {name} {VERSIONS[name]} */\n{text.rstrip()}\n    </script>")
    names = ", ".join(f"{n} {v}" for n, v in VERSIONS.items())
    # the scripts go in last, so no later replacement can touch their text
    return PAGE.replace("{names}", names).replace("{scripts_html}", "\n".join(parts))


def _package_license(folder: Path) -> str | None:
    for candidate in sorted(folder.iterdir()):
        if candidate.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            return candidate.read_text(encoding="utf-8", errors="replace")
    return None


def update() -> None:
    """npm install :data:`VERSIONS` in a temp dir; copy the minified scripts, each production
    dependency's license (THIRD_PARTY_LICENSES.txt) and the versions/integrity (versions.json)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "package.json").write_text('{"private": true}')
        specs = [f"{n}@{v}" for n, v in VERSIONS.items()]
        npm = ["npm", "install", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", *specs]
        subprocess.run(npm, cwd=work, check=True)
        lock = json.loads((work / "package-lock.json").read_text())["packages"]
        for name, script in SCRIPTS.items():
            shutil.copy2(work / "node_modules" / name / script, VENDOR / Path(script).name)
        notices = ["Licenses of the npm packages vendored in plots/vendor/ and of their production"]
        notices += ["dependencies (the minified bundles include a subset of them).", ""]
        monorepo = MONOREPO_LICENSE.read_text()
        for key in sorted(k for k in lock if k.startswith("node_modules/")):
            folder = work / key
            meta = json.loads((folder / "package.json").read_text())
            text = _package_license(folder)
            if text is None and meta.get("name", "").startswith("vega"):
                text = f"(no license file in the npm package; the vega monorepo's LICENSE)\n{monorepo}"
            notices += ["=" * 78, f"{meta['name']} {meta['version']}: {meta.get('license')}", ""]
            notices += [text.strip() if text else "(no license file in the npm package)", ""]
        (VENDOR / "THIRD_PARTY_LICENSES.txt").write_text("\n".join(notices))
        versions = {
            name: {
                "version": VERSIONS[name],
                "integrity": lock[f"node_modules/{name}"]["integrity"],
                "file": Path(SCRIPTS[name]).name,
            }
            for name in VERSIONS
        }
        (VENDOR / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    TEMPLATE.write_text(build_template(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["template", "check", "update"])
    args = parser.parse_args(argv)
    if args.command == "update":
        update()
    elif args.command == "template":
        TEMPLATE.write_text(build_template(), encoding="utf-8")
    elif TEMPLATE.read_text(encoding="utf-8") != build_template():
        print(f"{TEMPLATE}: out of date; run `python plots/vendor.py template`", file=sys.stderr)
        return 1
    print(
        f"{TEMPLATE}: {TEMPLATE.stat().st_size} bytes, {', '.join(f'{n} {v}' for n, v in VERSIONS.items())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
