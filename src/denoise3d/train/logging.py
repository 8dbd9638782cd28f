"""CSV and TensorBoard logs, learning-curve plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable


class CSVLog:
    """Append rows (dicts) to a CSV file; the columns are the keys of the first row.

    ``keep``: when resuming, a predicate on the rows already in the file; those kept stay
    (the rows written after the resume checkpoint are dropped and will be written again).
    """

    def __init__(self, path: str | Path, keep: Callable[[dict], bool] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = None
        self._file = None
        if keep is not None and self.path.is_file():
            with open(self.path) as f:
                reader = csv.DictReader(f)
                fields, rows = reader.fieldnames, [r for r in reader if keep(r)]
            if fields:
                self._file = open(self.path, "w", newline="")
                self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
                self._writer.writeheader()
                self._writer.writerows(rows)
                self._file.flush()

    def write(self, row: dict) -> None:
        if self._writer is None:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


UNIT_SUFFIXES = {"_meV_A": "meV/Å", "_kcal_mol_A": "kcal/mol/Å", "_meV": "meV",
                 "_kcal_mol": "kcal/mol", "_D": "D"}


def metric_unit(key: str) -> str:
    """The unit a metric's name carries (``force_mae_meV_A`` -> meV/Å); "" = unitless."""
    for suffix, unit in UNIT_SUFFIXES.items():
        if key.endswith(suffix):
            return unit
    tail = key.rsplit("_mae_", 1)
    return tail[1] if len(tail) == 2 else ""


def plot_learning_curve(out_dir: str | Path, png_name: str = "learning_curve.png") -> Path | None:
    """Training loss (log.csv) and validation metrics (valid.csv) against step, to a PNG.

    One panel for the losses (unitless) and one per unit of the validation metrics; a metric
    reported in two units (kcal/mol and meV) is drawn once, in meV. Every curve has markers, so
    a single validation point is visible; legends sit below the panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    train, valid = _read(out_dir / "log.csv"), _read(out_dir / "valid.csv")
    if not train:
        return None
    keys = [k for k in (valid[0] if valid else {}) if k not in ("step", "epoch")]
    keys = [k for k in keys if "kcal_mol" not in k or k.replace("kcal_mol", "meV") not in keys]
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault("loss" if k == "loss" else metric_unit(k), []).append(k)
    panels = ["loss"] + [u for u in groups if u != "loss"][:3]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, unit in zip(axes[0], panels):
        if unit == "loss":
            ax.plot([float(r["step"]) for r in train], [float(r["loss"]) for r in train],
                    marker=".", markersize=3, linewidth=1, label="train loss")
        for key in groups.get(unit, []):
            ax.plot([float(r["step"]) for r in valid], [float(r[key]) for r in valid],
                    marker="o", markersize=4, label=f"valid {key}")
        values = [line.get_ydata() for line in ax.get_lines()]
        flat = [float(v) for ys in values for v in ys if v == v]
        if flat and min(flat) > 0 and max(flat) / min(flat) > 10:
            ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss (unitless)" if unit == "loss" else f"error ({unit or 'unitless'})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    path = out_dir / png_name
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


class TensorBoardLog:
    """Scalars to TensorBoard event files under ``out/tb`` (no-op without ``tensorboard``).

    ``purge_step``: when resuming, TensorBoard hides events logged after this step by the
    interrupted run.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra: pip install denoise3d[tensorboard]
            self.writer = None
            return
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def write(self, prefix: str, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
