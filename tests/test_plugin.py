"""A third-party codec package, built and pip-installed from tests/plugin_pkg, is found by entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """Build the wheel of the plugin package and install it into a private target folder."""
    target = tmp_path_factory.mktemp("plugin_site")
    build = tmp_path_factory.mktemp("plugin_build")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(PLUGIN_SRC)],
        capture_output=True, text=True, timeout=300, cwd=build,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(target.glob("vcm_test_plugin-*.dist-info"))
    return target


def run_with_plugin(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "vcm_plugin", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_plugin_listed_and_working(plugin_site: Path, tmp_path: Path, shared: Path) -> None:
    listing = run_with_plugin(plugin_site, "codecs")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("posterize-zlib"))
    assert "yes" in row and "bits 1..8" in row

    source = shared / "data" / "kodak" / "kodim23.png"
    coded, decoded = tmp_path / "k.vcmb", tmp_path / "k.png"
    enc = run_with_plugin(plugin_site, "encode", "--codec", "posterize-zlib", "-q", "3", str(source), str(coded))
    assert enc.returncode == 0, enc.stderr
    dec = run_with_plugin(plugin_site, "decode", "--reference", str(source), str(coded), str(decoded))
    assert dec.returncode == 0, dec.stderr
    psnr = float(dec.stdout.split("PSNR-RGB ")[1].split()[0])
    assert 26 < psnr < 32  # 3 of 8 bits kept: step 32, uniform error ~ 28.9 dB


def test_plugin_absent_without_install() -> None:
    from vcm_plugin import available_codecs

    assert "posterize-zlib" not in {c.name for c in available_codecs()}


def test_third_party_task_model_and_cut_points_by_entry_point(plugin_site: Path) -> None:
    script = (
        "import numpy as np, torch\n"
        "from vcm_plugin.tasks.registry import get_task_model\n"
        "from vcm_plugin.splitting.adapter import split_adapter\n"
        "m = get_task_model('tiny-convnet')\n"
        "a = split_adapter(m, 'conv1')\n"
        "img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)\n"
        "y1 = a.front(a.input_tensor(img))\n"
        "print(tuple(y1.shape), tuple(a.mid(y1, 'conv2')[0].shape), tuple(a.mid(y1, 'output')[0].shape))\n"
        "print(np.allclose(m.run_from('conv1', y1).probs, m.predict(img).probs, atol=1e-6))\n"
        "try:\n    split_adapter(m, 'conv9')\nexcept Exception as e:\n    print('ERR', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "(1, 8, 16, 16) (1, 8, 8, 8) (1, 4)"
    assert lines[1] == "True"
    assert lines[2].startswith("ERR") and "conv9" in lines[2]
