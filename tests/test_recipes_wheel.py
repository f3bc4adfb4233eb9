"""The shipped recipes end up inside the built wheel, and an installed copy finds them.

Builds the wheel with hatchling's PEP 517 hook (the backend pip calls; under a second),
unpacks it into a temporary directory and loads the catalog from there in a fresh
interpreter that cannot see the source checkout.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_recipes_and_loads_them(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    wheel = out / build.stdout.strip().splitlines()[-1]
    shipped = sorted((ROOT / "recipes").glob("*.yaml"))
    assert shipped
    with zipfile.ZipFile(wheel) as zf:
        for path in shipped:
            assert zf.read(f"toolkit/_recipes/{path.name}") == path.read_bytes(), path.name
        zf.extractall(tmp_path / "site")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from toolkit.catalog.loader import load_catalog, shipped_recipes_dir\n"
        "print(shipped_recipes_dir())\n"
        "print(len(load_catalog(()).models))\n"
    )
    res = subprocess.run(
        [sys.executable, "-I", "-c", code, str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    where, count = res.stdout.split()
    assert Path(where) == tmp_path / "site" / "toolkit" / "_recipes"
    assert int(count) >= 40
