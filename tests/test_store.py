"""The SQLite results store: keys, round trips, resumability primitives."""

from __future__ import annotations

from pathlib import Path

from vcm_plugin.results.store import ResultsStore, UnitRow, unit_key


def test_key_changes_with_any_field() -> None:
    base = {"codec": "vvc", "params": {"preset": "medium"}, "quality": 32, "image": "1"}
    k = unit_key(base)
    assert k == unit_key(dict(reversed(list(base.items()))))  # order-independent
    assert k != unit_key({**base, "params": {"preset": "faster"}})
    assert k != unit_key({**base, "quality": 37})
    assert k != unit_key({**base, "image": "2"})


def test_round_trip_and_finished_keys(tmp_path: Path) -> None:
    preds = {"kind": "detections", "boxes": [[1.0, 2.0, 3.0, 4.0]], "scores": [0.5], "labels": [1]}
    ok = UnitRow(key="a", codec="vvc", quality=32, scale=1.0, task="det", image_id="7", status="ok", bits=800,
                 pixels=100, metrics={"psnr_y": 40.0, "psnr_rgb": 38.0}, encode_s=0.1, decode_s=0.01, inference_s=0.2,
                 predictions=preds)
    bad = UnitRow(key="b", codec="vvc", quality=32, scale=1.0, task="det", image_id="8", status="failed",
                  error="codec 'vvc' ... image id 8")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.put(ok)
        store.put(bad)
    with ResultsStore(tmp_path / "r.sqlite") as store:  # reopened: committed rows survive
        assert store.finished_keys() == {"a"}
        assert store.get("a") == ok
        assert store.get("b").error.endswith("image id 8")
        assert store.count() == 2
        assert [r.key for r in store.rows({"b"})] == ["b"]
