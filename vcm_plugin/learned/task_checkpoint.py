"""The exported file of a trained task codec, and loading it safely.

``model.pt`` (written by ``vcm train direct|feature``) is a weights-only
``torch.save`` dict: ``format``, ``net`` (the :class:`~vcm_plugin.learned.task_nets.TaskNetConfig`),
``binding`` (task model name, its weights' SHA-256, the cut point), ``distill``,
``distortion``, ``lmbda`` and ``state_dict`` (after ``update(force=True)``). It is read
with ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and plain
containers. A file bound to another task model, weights file or cut point is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vcm_plugin.errors import TaskModelError
from vcm_plugin.hashing import file_sha256
from vcm_plugin.learned.models import with_default_bounds
from vcm_plugin.learned.task_nets import TaskNetConfig, build_task_net

FORMAT = "vcm-task-codec/1"


class TaskCodecCheckpointError(TaskModelError):
    """A task codec checkpoint is missing, corrupt, or made for another model / cut point."""


def read_task_codec(path: str | Path) -> dict[str, Any]:
    """The export dict of ``path`` (weights-only load); errors name the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TaskCodecCheckpointError(f"task codec checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, BadZipFile, EOFError, or KeyError/IndexError from garbage bytes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskCodecCheckpointError(f"task codec checkpoint {str(path)!r} is corrupt, truncated or not a "
                                       f"weights-only file: {first}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise TaskCodecCheckpointError(f"{str(path)!r} is not a task codec export (format {found!r}, expected "
                                       f"{FORMAT!r}); export one with `vcm train direct|feature`")
    return data


def load_task_codec(path: str | Path, binding: dict[str, Any] | None = None,
                    adapter: Any = None) -> tuple[Any, dict[str, Any]]:
    """(network ready for real coding, export dict); ``binding`` (task model, weights, cut) must match;
    ``adapter`` (the task model cut) builds the front copy of ``decoder: front`` / ``encoder: front`` networks."""
    data = read_task_codec(path)
    if binding is not None:
        theirs = data.get("binding", {})
        diff = [f"{key}: file {theirs.get(key)!r}, codec {binding.get(key)!r}"
                for key in ("task_model", "cut", "weights") if theirs.get(key) != binding.get(key)]
        if diff:
            raise TaskCodecCheckpointError(f"task codec checkpoint {str(path)!r} was trained for another task "
                                           f"model or cut point ({'; '.join(diff)})")
    try:
        config = TaskNetConfig(**data["net"])
        front = adapter.front_module() if "front" in (config.decoder, config.encoder) and adapter is not None \
            else None
        net = build_task_net(config, front)
        state = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}  # fp16 exports
        net.load_state_dict(with_default_bounds(state, net))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TaskCodecCheckpointError(f"task codec checkpoint {str(path)!r} does not fit its own architecture: "
                                       f"{str(exc).splitlines()[0]}") from exc
    net.eval()
    net.update(force=True)
    return net, data


def file_tag(path: str | Path) -> bytes:
    """4-byte tag of a checkpoint file (SHA-256 prefix): streams from other weights are refused."""
    return bytes.fromhex(file_sha256(path)[:8])
