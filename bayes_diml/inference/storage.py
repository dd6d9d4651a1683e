"""Run folders: plain, inspectable files, written atomically (docs/design.md §9).

    RUN/posterior.nc      the ArviZ DataTree (netCDF)
    RUN/fit.json          method, settings, seed, timings
    RUN/spec.toml         the model (and any .npz it names)
    RUN/data.csv          the observed data, long format

Never pickle: opening someone else's run folder must not execute code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np

from .._io import _umask, atomic_write, file_mode, write_text_atomic
from .._json import dumps
from ..errors import DataError
from .results import Fit

__all__ = [
    "save_fit",
    "load_fit",
    "atomic_folder",
    "write_text_atomic",
    "atomic_write",
    "interrupts_deferred",
    "check_output_file",
    "check_output_folder_files",
    "check_run_folder",
    "RUN_FOLDER_FILES",
    "file_mode",
]

RUN_FOLDER_MARKERS = ("fit.json", "posterior.nc")
"""Files every run folder holds (``Fit.save``, ``bayes-diml fit`` / ``demo``): with both, a
folder is recognised as one this package wrote."""

RUN_FOLDER_FILES = frozenset({
    "fit.json", "posterior.nc", "spec.toml", "data.csv", "summary.csv", "diagnostics.json",
    "identifiability.csv", "payoff_differences.csv", "provenance.json", "rank_trace.png",
    "payoff_differences.png", "posterior_predictive.png", "report.html", "features.npz", "truth.npz",
})
"""Every file name this package writes at the top of a run folder (add new ones here).

``--overwrite`` replaces a run folder only when everything in it is one of these, or a
sub-folder of ``RUN_FOLDER_SUBFOLDERS``: a file a user put there is never deleted."""

RUN_FOLDER_SUBFOLDERS = {"counterfactuals": (".csv", ".png", ".json")}
"""Sub-folders of a run folder this package writes, and the suffixes of their files."""


def _what(path: Path) -> str:
    if path.is_symlink():
        return "a symbolic link"
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    return "neither a file nor a folder"


def check_output_file(path, overwrite: bool) -> None:
    """Refuse to write the single output file ``path`` unless it is new, or an existing
    ordinary file and ``overwrite`` (a folder, a link or a device is never replaced).

    Raises:
        DataError: one line naming the path and what is there.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        if path.parent != Path("") and not path.parent.is_dir():
            raise DataError(f"{path}: the folder {path.parent} does not exist")
        return
    if path.is_symlink() or not path.is_file():
        raise DataError(
            f"{path} is {_what(path)}, not a file; this output is one file, and --overwrite replaces only a file "
            "(nothing was changed)"
        )
    if not overwrite:
        raise DataError(f"{path} exists; pass --overwrite to replace it")


def check_output_folder_files(folder, names, overwrite: bool) -> None:
    """``check_output_file`` for each of ``names`` inside the output folder ``folder``
    (which may not exist yet, but must not be a file)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is {_what(folder)}, not a folder; --out names a folder of results (nothing was changed)")
    if folder.is_dir():
        for name in names:
            check_output_file(folder / name, overwrite)


def check_run_folder(directory, overwrite: bool) -> None:
    """Refuse to write the run folder ``directory`` unless it is new, or a run folder this
    package wrote (``RUN_FOLDER_MARKERS``, and nothing in it but ``RUN_FOLDER_FILES`` and
    ``RUN_FOLDER_SUBFOLDERS``) and ``overwrite``.

    Raises:
        DataError: one line naming the path, what is there and what to do.
    """
    directory = Path(directory)
    if not directory.exists() and not directory.is_symlink():
        return
    if directory.is_symlink() or not directory.is_dir():
        raise DataError(
            f"{directory} is {_what(directory)}, not a run folder; choose another --out (nothing was changed)"
        )
    missing = [name for name in RUN_FOLDER_MARKERS if not (directory / name).is_file()]
    if missing:
        raise DataError(
            f"{directory} is a folder that bayes-diml did not write (no {' or '.join(missing)}); --overwrite replaces "
            "only a run folder: choose a new --out (nothing was changed)"
        )
    foreign = _foreign_entries(directory)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(
            f"{directory} holds {shown}, which bayes-diml did not write; move it out of the run folder or choose "
            "another --out (nothing was changed)"
        )
    if not overwrite:
        raise DataError(f"{directory} exists; pass --overwrite to replace it")


def _foreign_entries(directory: Path) -> list[str]:
    """Entries of a run folder that this package does not write (sorted, relative names)."""
    foreign = []
    for entry in sorted(directory.iterdir()):
        if entry.name in RUN_FOLDER_SUBFOLDERS and entry.is_dir() and not entry.is_symlink():
            suffixes = RUN_FOLDER_SUBFOLDERS[entry.name]
            foreign += [
                f"{entry.name}/{inner.name}"
                for inner in sorted(entry.iterdir())
                if inner.is_symlink() or not inner.is_file() or inner.suffix not in suffixes
            ]
        elif entry.name not in RUN_FOLDER_FILES or entry.is_symlink() or not entry.is_file():
            foreign.append(entry.name)
    return foreign


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) back until the block is done, then raise ``KeyboardInterrupt``.

    For the few file-system steps that must not be cut in half (swapping a run
    folder into place, removing a temporary folder). Outside the main thread
    (where no signal handler can be set) the block simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_folder(directory, overwrite: bool = False):
    """Yield a temporary folder that replaces ``directory`` only if the block succeeds.

    An existing ``directory`` is refused unless it is a run folder this package wrote
    and ``overwrite`` (``check_run_folder``: a folder holding anything else, or a file,
    is never replaced); the new folder gets the mode of an ordinary new folder
    (``0o777`` less the umask, not ``mkdtemp``'s ``0o700``). An interrupted
    block (including Ctrl-C) leaves the old folder, or none, never half of one,
    and no temporary folder beside it. The swap itself (two renames, then
    removing the old copy) runs with Ctrl-C held back; a Ctrl-C that arrives
    during it is raised afterwards, as ``KeyboardInterrupt("DIR was written")``.
    """
    directory = Path(directory)
    check_run_folder(directory, overwrite)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with interrupts_deferred():
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        with interrupts_deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        with interrupts_deferred():
            check_run_folder(directory, overwrite)  # what is there may have changed during the block
            _swap_into_place(tmp, directory)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{directory} was written") from None


def _swap_into_place(tmp: Path, directory: Path) -> None:
    """Rename ``tmp`` to ``directory``; an old ``directory`` is moved aside first and
    removed after, or moved back if the rename fails."""
    if not directory.exists():
        try:
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
    moved = False
    try:
        os.replace(directory, aside / directory.name)
        moved = True
        os.replace(tmp, directory)
    except BaseException:
        if moved and not directory.exists():
            os.replace(aside / directory.name, directory)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def write_run_files(fit, folder: Path) -> None:
    """Write the core files of a run into ``folder`` (which must exist)."""
    from ..spec import dumps_toml, model_to_table

    table, files = model_to_table(fit.model)
    (folder / "spec.toml").write_text(dumps_toml(table), encoding="utf-8")
    for name, arrays in files.items():
        np.savez(folder / name, **arrays)
    fit.data.to_csv(folder / "data.csv")
    (folder / "fit.json").write_text(dumps({"method": fit.method, "info": fit.info}), encoding="utf-8")
    fit.to_arviz().to_netcdf(folder / "posterior.nc", engine="h5netcdf")


def save_fit(fit, directory, overwrite: bool = False) -> Path:
    """Write ``fit`` to ``directory`` atomically (see module docstring)."""
    with atomic_folder(directory, overwrite) as tmp:
        write_run_files(fit, tmp)
    return Path(directory)


def load_fit(directory):
    """Read a run folder back into a ``Fit``."""
    import xarray as xr

    from ..loading import load_data
    from ..spec import read_spec

    directory = Path(directory)
    for name in ("spec.toml", "data.csv", "fit.json", "posterior.nc"):
        if not (directory / name).exists():
            raise DataError(f"{directory}: not a run folder (missing {name})")
    model, _ = read_spec(directory / "spec.toml")
    data = load_data(directory / "data.csv", model)
    try:
        meta = json.loads((directory / "fit.json").read_text(encoding="utf-8"))
        method, info = meta["method"], meta["info"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{directory / 'fit.json'}: not a valid run description ({err})") from None
    try:
        tree = xr.open_datatree(directory / "posterior.nc", engine="h5netcdf").load()
    except (OSError, ValueError) as err:
        raise DataError(f"{directory / 'posterior.nc'}: cannot read the posterior ({err})") from None

    def group(name):
        if name not in tree.children:
            return None
        return {k: np.asarray(v.values) for k, v in tree[name].data_vars.items()}

    posterior = group("posterior")
    log_lik = group("log_likelihood")
    pp = None
    if "posterior_predictive" in tree.children:
        node = tree["posterior_predictive"]
        pp = {"action_frequency": np.asarray(node["action_frequency"].values), "draw": np.asarray(node["draw"].values)}
    return Fit(
        model=model,
        data=data,
        method=method,
        posterior=posterior,
        sample_stats=group("sample_stats"),
        info=info,
        log_likelihood=None if log_lik is None else log_lik["actions"],
        posterior_predictive=pp,
    )
