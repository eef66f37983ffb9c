#!/usr/bin/env python3
"""Copies the app's static folder (APP_STATIC) out of the app image, for nginx to serve.

    static-folder.py APP_STATIC DEST CONF

Run in the app image while nginx's image is built (shared/nginx/Dockerfile). APP_STATIC is a
folder of the project (`flaskr/static`, relative to /app), or `pkg:static` inside an installed
package (found through Python's imports, as the servers find it), or empty: the app serves
/static/ itself. CONF (nginx's /etc/nginx/static-files.conf) then includes
snippets/static-files.conf, or nothing. A missing folder stops the build, naming those found.
"""

import importlib.util
import os
import shutil
import sys
from pathlib import Path


def candidates(package_dir: Path | None) -> list[str]:
    """Folders the user may have meant: the package's static folders (else its folders), or
    the project's static folders."""
    if package_dir is None:
        app = Path.cwd()
        return [str(p.relative_to(app)) for p in sorted(app.glob("**/static")) if p.is_dir()][:10]
    found = [p for p in sorted(package_dir.glob("**/static")) if p.is_dir()]
    found = found or [p for p in sorted(package_dir.iterdir()) if p.is_dir()]
    return [f"{package_dir.name}:{p.relative_to(package_dir)}" for p in found
            if p.name != "__pycache__"][:10]  # fmt: skip


def resolve(setting: str) -> Path:
    """APP_STATIC's folder in this image; SystemExit with what to fix when there is none."""
    package_dir = None
    if ":" in setting:
        module, _, inside = setting.partition(":")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            sys.exit(
                f"static-folder: APP_STATIC={setting!r}: {module!r} is not an installed package "
                "(its requirements.txt or pyproject.toml must install it), or use a folder of "
                "the project, e.g. APP_STATIC=static"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        folder = package_dir / inside
    else:
        folder = Path.cwd() / setting
    if not folder.is_dir():
        found = candidates(package_dir)
        sys.exit(
            f"static-folder: APP_STATIC={setting!r}: no folder {folder} in the app image. "
            "Set APP_STATIC to a folder of the project (relative to it) or to 'package:folder'"
            f" for one inside an installed package.{' Found: ' + ', '.join(found) if found else ''}"
        )
    return folder


def main(setting: str, dest: str, conf: str) -> None:
    sys.path.insert(0, os.getcwd())  # the app's folder, as the servers see it (release.py too)
    target = Path(dest)
    if not setting.strip():
        target.mkdir(parents=True, exist_ok=True)
        Path(conf).write_text("# APP_STATIC is empty: the app serves /static/ (static-folder.py)\n")
        print("static-folder: APP_STATIC is empty: nginx passes /static/ to the app")
        return
    folder = resolve(setting.strip())
    shutil.copytree(folder, target, dirs_exist_ok=True)
    # fixed text: APP_STATIC itself never reaches nginx's config
    Path(conf).write_text("# APP_STATIC's folder\ninclude snippets/static-files.conf;\n")
    files = sum(1 for p in target.rglob("*") if p.is_file())
    print(f"static-folder: APP_STATIC={setting!r}: {files} files from {folder}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
