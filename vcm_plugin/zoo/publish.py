"""Add a trained codec to the project zoo (``vcm zoo publish RUN_DIR --name ...``).

Copies ``RUN_DIR/model.pt`` (the weights-only export of ``vcm train codec``) to
``vcm_plugin/zoo/weights/<name>.pt`` and writes the model card ``<name>.yaml`` with its
SHA-256, architecture, the exact training command, steps, wall time and validation
figures from ``RUN_DIR/result.json``. Refuses files over :data:`MAX_BYTES`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from vcm_plugin.hashing import file_sha256
from vcm_plugin.zoo import WEIGHTS_DIR, ZOO_DIR, ZooError

MAX_BYTES = 4_000_000  # each shipped model at most 4 MB


def publish_codec(run_dir: Path, name: str, group: str, quality: int, command: str) -> Path:
    """Copy the export of ``run_dir`` into the zoo as ``name`` and write its card; returns the card path."""
    export, result_file = run_dir / "model.pt", run_dir / "result.json"
    if not export.is_file() or not result_file.is_file():
        raise ZooError(f"{run_dir} has no model.pt/result.json: not a finished `vcm train codec` run")
    if export.stat().st_size > MAX_BYTES:
        raise ZooError(f"{export} is {export.stat().st_size} bytes, over the zoo's {MAX_BYTES}-byte limit")
    result = json.loads(result_file.read_text())
    config = result["config"]
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    target = WEIGHTS_DIR / f"{name}.pt"
    shutil.copyfile(export, target)
    card = {
        "name": name, "kind": "codec", "architecture": config["architecture"],
        "arch_params": config["arch_params"], "file": target.name, "sha256": file_sha256(target),
        "group": group, "quality": quality, "metric": config["distortion"], "trained_here": True,
        "training": {
            "command": command, "lmbda": config["lmbda"], "steps": result["steps"], "best_step": result["best_step"],
            "wall_s": result["wall_s"], "threads": result["threads"], "machine": result["machine"],
            "data": f"{result['train_images']} images of {config['data']['train']} (random {config['data']['crop']} "
                    f"px crops, batch {config['data']['batch_size']}); validation: "
                    f"{len(result['val_images'])} held-out images of the same folder",
            "init_from": config.get("init_from"), "seed": config["seed"], "export_dtype": config["export_dtype"],
        },
        "results": {"val_bpp": round(result["val"]["bpp"], 5), "val_psnr_rgb": round(result["val"]["psnr_rgb"], 3)},
    }
    path = ZOO_DIR / f"{name}.yaml"
    header = ("# Trained by this project (vcm-plugin) on ../shared images; NOT an official CompressAI model.\n"
              "# Written by `vcm zoo publish`.\n")
    path.write_text(header + yaml.safe_dump(card, sort_keys=False))
    return path
