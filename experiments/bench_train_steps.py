"""Aggregate training steps per second of claim (i)'s arms with several processes on one device.

Process i trains arm ``ARMS[i % 4]`` of ``claim1_parity.py`` (its real training step: batch 16, lambda 10,
lr 5e-4, on 300 CIFAR-10 train images); every process builds its trainer and runs a few warm-up steps, then
all start the timed steps together (a barrier). The aggregate rate is all timed steps over the time from the
first start to the last end. ``experiments/gpu_claim1.sh`` runs it on the GPU and on the CPU cores to pick
the device and the number of training processes.

Usage: ``python experiments/bench_train_steps.py --device cuda --procs 12 [--steps 40] [--warmup 5]
[--cifar-root DIR] [--json FILE]``; prints one JSON line {device, procs, steps, steps_per_s, per_arm_ms, ...}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _worker(i: int, args: dict[str, Any], barrier: Any, queue: Any) -> None:
    try:
        import torch

        torch.set_num_threads(1)
        import claim1_parity as c1

        from vcm_plugin.training.task_codec import TaskCodecTrainConfig, TaskCodecTrainer

        arm = list(c1.ARMS)[i % len(c1.ARMS)]
        ns = SimpleNamespace(cifar_root=args["cifar_root"], quick=False, scale=1.0, seed=i, threads=1,
                             device=args["device"])
        conf = c1.train_config(arm, 10.0, args["steps"] + args["warmup"], 5e-4, dict(c1.FULL), ns)
        conf["data"]["max_train_images"] = 300
        conf["output"] = str(Path(args["tmp"]) / f"p{i}")
        trainer = TaskCodecTrainer(TaskCodecTrainConfig(**conf))
        cuda = trainer.device.type == "cuda"
        for _ in range(args["warmup"]):
            trainer.run_step()
            trainer.step += 1
        if cuda:
            torch.cuda.synchronize()
        barrier.wait(timeout=args["barrier_s"])
        t0 = time.time()
        for _ in range(args["steps"]):
            trainer.run_step()
            trainer.step += 1
        if cuda:
            torch.cuda.synchronize()
        queue.put({"i": i, "arm": arm, "t0": t0, "t1": time.time(), "device": str(trainer.device)})
    except Exception as exc:  # reported, not raised: the parent must not wait on the barrier forever
        queue.put({"i": i, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
        try:
            barrier.abort()
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cifar-root", default=str(C.CIFAR_ROOT_DEFAULT))
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--barrier-s", type=float, default=180.0, help="seconds to wait for every process's set-up")
    args = parser.parse_args(argv)
    import tempfile

    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(args.procs), ctx.Queue()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"device": args.device, "steps": args.steps, "warmup": args.warmup, "cifar_root": args.cifar_root,
                "tmp": tmp, "barrier_s": args.barrier_s}
        procs = [ctx.Process(target=_worker, args=(i, spec, barrier, queue)) for i in range(args.procs)]
        for p in procs:
            p.start()
        got = []
        for _ in procs:
            try:
                got.append(queue.get(timeout=args.barrier_s + 120))
            except Exception:
                break
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    ok = [g for g in got if "error" not in g]
    errors = sorted({g["error"] for g in got if "error" in g})
    result: dict[str, Any] = {"device": args.device, "procs": args.procs, "steps": args.steps, "ok": len(ok),
                              "errors": errors, "wall_s": round(time.time() - start, 1)}
    if ok and len(ok) == args.procs:
        span = max(g["t1"] for g in ok) - min(g["t0"] for g in ok)
        result["steps_per_s"] = round(args.procs * args.steps / span, 1)
        per_arm: dict[str, list[float]] = {}
        for g in ok:
            per_arm.setdefault(g["arm"], []).append(1000 * (g["t1"] - g["t0"]) / args.steps)
        result["per_arm_ms"] = {a: round(sum(v) / len(v), 1) for a, v in per_arm.items()}
        result["devices"] = sorted({g["device"] for g in ok})
    else:
        result["steps_per_s"] = 0.0
    line = json.dumps(result)
    print(line, flush=True)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0 if result["steps_per_s"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
