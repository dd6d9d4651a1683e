"""Run folders: plain, inspectable files, written atomically (DESIGN §9).

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

from ..errors import DataError

__all__ = ["save_fit", "load_fit", "atomic_folder", "write_text_atomic", "interrupts_deferred"]


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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

    An existing ``directory`` is refused unless ``overwrite``; an interrupted
    block (including Ctrl-C) leaves the old folder, or none, never half of one,
    and no temporary folder beside it. The swap itself (two renames, then
    removing the old copy) runs with Ctrl-C held back; a Ctrl-C that arrives
    during it is raised afterwards, as ``KeyboardInterrupt("DIR was written")``.
    """
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise DataError(f"{directory} exists; pass --overwrite (overwrite=True) to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with interrupts_deferred():
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        yield tmp
    except BaseException:
        with interrupts_deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        with interrupts_deferred():
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
    from .results import _jsonable

    table, files = model_to_table(fit.model)
    (folder / "spec.toml").write_text(dumps_toml(table), encoding="utf-8")
    for name, arrays in files.items():
        np.savez(folder / name, **arrays)
    fit.data.to_csv(folder / "data.csv")
    meta = {"method": fit.method, "info": _jsonable(fit.info)}
    (folder / "fit.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
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
    from .results import Fit

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
