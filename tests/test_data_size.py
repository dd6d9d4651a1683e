"""The data-size study (``experiments.data_size``, ``bayes-diml reproduce --data-sizes``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bayes_diml as bd
from bayes_diml.cli import main
from experiments import data_size

MODELS = Path(__file__).resolve().parents[1] / "models"
QUICK_EPISODES, QUICK_ROUNDS, QUICK_TRAIN = 10, 20, 8  # Settings.for_mode(quick=True), 80/20 split
DATA_SEED = 2000  # the reproduction's data seed of truth draw 0 (DATA_SEED_BASE + seed)


def _digest(actions: np.ndarray, mask: np.ndarray) -> str:
    return hashlib.sha256(actions.astype(np.int32).tobytes() + mask.astype(bool).tobytes()).hexdigest()


def _png_pixels(path: Path) -> np.ndarray:
    """RGB pixels of a PNG read by Pillow (which checks the file's structure and CRCs)."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int32)


def test_quick_data_size_cli_end_to_end(tmp_path, capsys):
    names = ["structured MAP", "static inverse", "structured NUTS"]
    sizes = [3, 8]  # two sizes: each costs one MAP compilation (~8 s on 2 cores without the XLA cache)
    argv = ["reproduce", "E2", "--seeds", "1", "--quick", "--data-sizes", ",".join(map(str, sizes)), "--out", str(tmp_path)]
    for name in names:
        argv += ["--estimator", name]
    assert main(argv) == 0
    assert "data_size_E2_quick.png" in capsys.readouterr().out
    document = json.loads((tmp_path / "data_size_E2_quick.json").read_text())
    rows = document["rows"]
    # one row per (estimator, size), none missing, none twice
    assert sorted((r["estimator"], r["train_episodes"]) for r in rows) == sorted((n, m) for n in names for m in sizes)
    for row in rows:
        if row["estimator"] == "structured NUTS":  # outside the quick subset: kept with the reason
            assert row["status"] == "skipped" and row["reason"] == "not in --quick"
            continue
        assert row["status"] == "ok", row
        assert np.isfinite(row["rel_error"]) and np.isfinite(row["diff_mse"]) and row["wall_seconds"] > 0
        assert row["coverage90"] is None  # point estimates have no interval
    # the data each fit used, against an independent simulation sliced with NumPy
    model, truth = bd.read_spec(MODELS / "e2_congestion.toml")
    data = bd.simulate(model, truth, num_episodes=QUICK_EPISODES, num_rounds=QUICK_ROUNDS, seed=DATA_SEED)
    actions, mask = np.asarray(data.actions), np.asarray(data.mask)
    test_digest = _digest(actions[QUICK_TRAIN:], mask[QUICK_TRAIN:])
    for row in rows:
        m = row["train_episodes"]
        assert row["train_digest"] == _digest(actions[:m], mask[:m]), (row["estimator"], m)
        assert row["test_digest"] == test_digest and row["test_episodes"] == QUICK_EPISODES - QUICK_TRAIN
    assert len({r["train_digest"] for r in rows}) == len(sizes)
    # the Markdown's leading table shows each fit's relative error
    table = (tmp_path / "data_size_E2_quick.md").read_text()
    lines = table.splitlines()
    assert lines[lines.index("## Relative payoff-difference error (mean ± sd over seeds)") + 2] == "| training episodes | " + " | ".join(names) + " |"
    for m in sizes:
        cells = next(line for line in lines if line.startswith(f"| {m} |")).strip("| ").split(" | ")
        for name, cell in zip(names, cells[1:]):
            row = next(r for r in rows if r["estimator"] == name and r["train_episodes"] == m)
            assert cell == ("skipped" if row["status"] == "skipped" else f"{row['rel_error']:.4g}")
    # a real, non-blank figure: a good share of its pixels are neither white nor grey
    pixels = _png_pixels(tmp_path / "data_size_E2_quick.png")[..., :3]
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 60  # the estimators' lines (C0, C1)
    assert coloured.mean() > 1e-3


def test_plot_and_table_average_over_seeds():
    rows = []
    values = {("MAP", 3): [0.4, 0.2], ("MAP", 6): [0.1, 0.3], ("NUTS", 3): [0.5, 0.1], ("NUTS", 6): [0.05, 0.15]}
    for (name, m), pair in values.items():
        for seed, value in enumerate(pair):
            rows.append({"estimator": name, "train_episodes": m, "seed": seed, "status": "ok", "rel_error": value,
                         "coverage90": 0.9 if name == "NUTS" else None})
    rows.append({"estimator": "MAP", "train_episodes": 6, "seed": 2, "status": "failed", "reason": "FloatingPointError: nan"})
    document = {"setting": "E2", "variant": "paper", "seeds": [0, 1, 2], "sizes": [3, 6], "estimators": ["MAP", "NUTS"],
                "quick": True, "machine": {"platform": "test", "cpu_count": 2}, "notes": "", "rows": rows, "wall_seconds": 1.0}
    fig = data_size.plot_data_size(document)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["MAP"].get_ydata(), [0.3, 0.2])  # means over the ok seeds
    np.testing.assert_allclose(lines["NUTS"].get_ydata(), [0.3, 0.1])
    band = ax.collections[0].get_paths()[0].vertices  # min-max band of MAP
    assert band[:, 1].min() == pytest.approx(0.1) and band[:, 1].max() == pytest.approx(0.4)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    table = data_size.data_size_table(document)
    assert f"| 3 | 0.3 ± {np.std([0.4, 0.2], ddof=1):.2g} | 0.3 ± {np.std([0.5, 0.1], ddof=1):.2g} |" in table
    assert "MAP (1 seed(s) failed: FloatingPointError: nan) | 6 | 2 |" in table


def test_data_size_refuses_bad_requests(tmp_path, capsys):
    with pytest.raises(bd.DataError, match=r"sizes \[2, 9\] must lie in 1..8"):
        data_size.data_size_study("E2", quick=True, sizes=(2, 9), out=tmp_path, cache_dir=None)
    with pytest.raises(bd.DataError, match="unknown estimator"):
        data_size.data_size_study("E3", quick=True, estimators=("tabular NUTS",), out=tmp_path, cache_dir=None)
    with pytest.raises(bd.DataError, match="several settings"):
        data_size.data_size_study("E7", out=tmp_path, cache_dir=None)
    with pytest.raises(bd.DataError, match="variant"):
        data_size.data_size_study("E2", variant="tiny", out=tmp_path, cache_dir=None)
    assert main(["reproduce", "E2", "--data-sizes", "3,60", "--out", str(tmp_path)]) == 2
    assert "1..48" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses a size that is not a positive integer
        main(["reproduce", "E2", "--data-sizes", "0,3"])
    assert not list(tmp_path.iterdir())  # nothing written before the checks
