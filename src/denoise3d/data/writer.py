"""Streaming writer of the on-disk cache (:mod:`denoise3d.data.storage` layout), bounded memory.

Molecules are appended chunk by chunk; each chunk's bond-hop matrices are computed right away
(:func:`~denoise3d.data.storage.compute_hops`) and every array is appended to a raw file behind a
reserved, fixed-size ``.npy`` header (``HEADER_BYTES``). :meth:`CacheWriter.close` rewrites the
headers with the final shapes, writes ``manifest.json`` last (with ``"complete": true``) and
renames the temporary directory into place. Nothing grows with the dataset in memory except the
string columns' lengths (one int each), so building 3.4 M molecules needs the memory of one chunk.

A killed build leaves only a hidden temporary sibling (never opened; removed by the next
:func:`~denoise3d.data.storage.load_or_build` on this host): the target path either holds the old
complete cache or nothing.

Usage::

    with CacheWriter(path, source={...}, meta={"target_names": []}) as w:
        for z, pos in molecules:
            w.add(z, pos)          # buffered; flushed every ``chunk_atoms`` atoms
    arrays, manifest = open_cache(path)
"""

from __future__ import annotations

import json
import sys
import os
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from denoise3d.data.elements import MAX_Z, SYMBOLS
from denoise3d.data.storage import (FORMAT_VERSION, MANIFEST, CacheInvalid, _build_lock, _install,
                                    _remove_leftovers, _sibling, compute_hops, open_cache)

HEADER_BYTES = 256  # reserved for every .npy header (a 1.0 header of any shape fits)
STRING_COLUMNS = ("names", "smiles")  # optional per-molecule strings, stored as 'S' (UTF-8 bytes)


def npy_header(dtype: np.dtype, shape: tuple, total: int = HEADER_BYTES) -> bytes:
    """A version-1.0 ``.npy`` header padded to exactly ``total`` bytes."""
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
         "shape": tuple(int(s) for s in shape)}
    text = repr(d).encode("latin1")
    pad = total - 10 - len(text) - 1
    if pad < 0:
        raise ValueError(f"npy header of shape {shape} does not fit in {total} bytes")
    body = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class CacheWriter:
    """Append molecules to a new cache at ``path``; see the module docstring.

    ``n_targets`` per-molecule float64 labels (0 for unlabelled pretraining sets);
    ``forces``: store per-atom (n, 3) float32 arrays too; ``cells``: store each structure's
    ``cell`` (3, 3) float64 Å and ``pbc`` (3,) bool (a periodic structure gets no hop block: its
    bonded pairs depend on the images and are perceived at batch time); ``strings``: which of
    :data:`STRING_COLUMNS` to store. ``chunk_atoms``: atoms buffered before a flush.
    """

    def __init__(self, path: str | Path, source: dict, meta: dict | None = None,
                 n_targets: int = 0, strings: Sequence[str] = (), forces: bool = False,
                 chunk_atoms: int = 1 << 20, cells: bool = False):
        self.path, self.source, self.meta = Path(path), source, dict(meta or {})
        self.meta.setdefault("target_names", [])
        self.n_targets, self.forces, self.chunk_atoms = int(n_targets), forces, int(chunk_atoms)
        self.cells = bool(cells)
        if len(self.meta["target_names"]) != self.n_targets:
            raise ValueError(f"cache {path}: meta target_names {self.meta['target_names']} do not "
                             f"match n_targets={n_targets}")
        bad = [s for s in strings if s not in STRING_COLUMNS]
        if bad:
            raise ValueError(f"unknown string columns {bad} (known: {STRING_COLUMNS})")
        self.strings = tuple(strings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(self.path)  # temporary folders of killed builds of this cache
        self.tmp = _sibling(self.path, "tmp")
        self.tmp.mkdir()
        self.dtypes = {"z": np.int8, "pos": np.float32, "atom_offset": np.int64, "hops": np.int8,
                       "hop_offset": np.int64, "targets": np.float64,
                       **({"forces": np.float32} if forces else {}),
                       **({"cell": np.float64, "pbc": np.bool_} if cells else {})}
        self.files: dict[str, BinaryIO] = {}
        for k in self.dtypes:
            f = open(self.tmp / f"{k}.npy", "wb")
            f.write(b"\0" * HEADER_BYTES)
            self.files[k] = f
        self.text = {k: open(self.tmp / f"{k}.txt", "wb") for k in self.strings}
        self.max_len = dict.fromkeys(self.strings, 1)
        self.n = self.n_atoms = self.n_hops = 0
        self.files["atom_offset"].write(np.zeros(1, np.int64).tobytes())
        self.files["hop_offset"].write(np.zeros(1, np.int64).tobytes())
        self.element_counts = np.zeros(MAX_Z + 1, dtype=np.int64)
        self.natoms_min, self.natoms_max = 1 << 62, 0
        self._buf: list[tuple] = []
        self._buf_atoms = 0
        self.closed = False

    # ----------------------------------------------------------------------------- append
    def add(self, z, pos, targets=None, forces=None, cell=None, pbc=None, **strings) -> None:
        """One molecule: ``z`` (n,) atomic numbers, ``pos`` (n, 3) Å, ``targets``
        (n_targets,) internal units, ``forces`` (n, 3) eV/Å, ``cell`` (3, 3) Å and ``pbc`` (3,)
        bool (a writer with ``cells``; None: not periodic), strings e.g. ``smiles="CCO"``."""
        z = np.asarray(z, dtype=np.int64).reshape(-1)
        pos = np.asarray(pos, dtype=np.float32).reshape(len(z), 3)
        t = np.zeros(0) if targets is None else np.asarray(targets, np.float64).reshape(-1)
        if len(t) != self.n_targets:
            raise ValueError(f"molecule {self.n + len(self._buf)}: {len(t)} targets, expected "
                             f"{self.n_targets}")
        if self.forces:
            forces = np.asarray(forces, dtype=np.float32).reshape(len(z), 3)
        if (cell is not None or pbc is not None) and not self.cells:
            raise ValueError(f"molecule {self.n + len(self._buf)}: a cell, but the cache was "
                             f"opened without cells")
        box = (np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64).reshape(3, 3),
               np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool).reshape(3))
        self._buf.append((z, pos, t, forces, strings, box))
        self._buf_atoms += len(z)
        if self._buf_atoms >= self.chunk_atoms:
            self.flush()

    def flush(self) -> None:
        """Write the buffered molecules (hop matrices computed here)."""
        if not self._buf:
            return
        z = np.concatenate([b[0] for b in self._buf])
        pos = np.concatenate([b[1] for b in self._buf])
        natoms = np.array([len(b[0]) for b in self._buf], dtype=np.int64)
        offset = np.concatenate([[0], np.cumsum(natoms)])
        periodic = np.array([b[5][1].any() for b in self._buf])
        if periodic.any():  # no hop block for a periodic structure (bonded at batch time)
            mols = np.flatnonzero(~periodic)
            sub = np.concatenate([[0], np.cumsum(natoms[mols])])
            atoms = np.concatenate([np.arange(offset[m], offset[m + 1]) for m in mols]) if len(mols) \
                else np.zeros(0, np.int64)
            hops, _ = compute_hops(z[atoms], pos[atoms], sub)
            sizes = np.where(periodic, 0, natoms * natoms)
            hop_offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        else:
            hops, hop_offset = compute_hops(z, pos, offset)
        f = self.files
        f["z"].write(z.astype(np.int8).tobytes())
        f["pos"].write(pos.tobytes())
        f["atom_offset"].write((offset[1:] + self.n_atoms).tobytes())
        f["hops"].write(hops.tobytes())
        f["hop_offset"].write((hop_offset[1:] + self.n_hops).tobytes())
        f["targets"].write(np.stack([b[2] for b in self._buf]).astype(np.float64).tobytes())
        if self.forces:
            f["forces"].write(np.concatenate([b[3] for b in self._buf]).tobytes())
        if self.cells:
            f["cell"].write(np.stack([b[5][0] for b in self._buf]).tobytes())
            f["pbc"].write(np.stack([b[5][1] for b in self._buf]).tobytes())
        for k in self.strings:
            for b in self._buf:
                s = str(b[4].get(k, "")).encode()
                if b"\n" in s:
                    raise ValueError(f"molecule {self.n}: {k} contains a newline")
                self.max_len[k] = max(self.max_len[k], len(s))
                self.text[k].write(s + b"\n")
        self.element_counts += np.bincount(z, minlength=MAX_Z + 1)
        self.natoms_min = min(self.natoms_min, int(natoms.min()))
        self.natoms_max = max(self.natoms_max, int(natoms.max()))
        self.n += len(self._buf)
        self.n_atoms += int(offset[-1])
        self.n_hops += int(hop_offset[-1])
        self._buf, self._buf_atoms = [], 0

    # ----------------------------------------------------------------------------- finish
    def _shapes(self) -> dict[str, tuple]:
        return {"z": (self.n_atoms,), "pos": (self.n_atoms, 3), "atom_offset": (self.n + 1,),
                "hops": (self.n_hops,), "hop_offset": (self.n + 1,),
                "targets": (self.n, self.n_targets),
                **({"forces": (self.n_atoms, 3)} if self.forces else {}),
                **({"cell": (self.n, 3, 3), "pbc": (self.n, 3)} if self.cells else {})}

    def _write_strings(self, k: str) -> None:
        """``<k>.txt`` (one per line) → ``<k>.npy`` of dtype S<max_len>, 64k rows at a time."""
        self.text[k].close()
        dtype = np.dtype(f"S{self.max_len[k]}")
        with open(self.tmp / f"{k}.txt", "rb") as src, open(self.tmp / f"{k}.npy", "wb") as dst:
            dst.write(npy_header(dtype, (self.n,)))
            rows: list[bytes] = []
            for line in src:
                rows.append(line[:-1])
                if len(rows) == 65536:
                    dst.write(np.array(rows, dtype=dtype).tobytes())
                    rows = []
            dst.write(np.array(rows, dtype=dtype).tobytes())
        os.remove(self.tmp / f"{k}.txt")

    def close(self) -> dict:
        """Finish: headers, string columns, manifest (last), atomic rename. Returns the manifest."""
        self.flush()
        shapes = self._shapes()
        arrays = {}
        for k, f in self.files.items():
            f.seek(0)
            f.write(npy_header(self.dtypes[k], shapes[k]))
            f.close()
            arrays[k] = {"shape": list(shapes[k]), "dtype": np.dtype(self.dtypes[k]).str}
        for k in self.strings:
            self._write_strings(k)
            arrays[k] = {"shape": [self.n], "dtype": np.dtype(f"S{self.max_len[k]}").str}
        manifest = {
            "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": json.loads(json.dumps(self.source)), "meta": self.meta, "arrays": arrays,
            "counts": {"molecules": self.n, "atoms": self.n_atoms, "hop_entries": self.n_hops},
            "complete": True,
        }
        with open(self.tmp / MANIFEST, "w") as f:  # written last, then synced before the rename
            f.write(json.dumps(manifest, indent=1))
            f.flush()
            os.fsync(f.fileno())
        _install(self.tmp, self.path)
        self.closed = True
        return manifest

    def statistics(self) -> str:
        """Same summary as :func:`denoise3d.data.storage.statistics`, from running counts."""
        if not self.n:
            return "  0 structures"
        elements = ", ".join(f"{SYMBOLS[z]} {c:,}" for z, c in enumerate(self.element_counts) if c)
        return (f"  structures {self.n:,}   atoms {self.n_atoms:,}\n"
                f"  elements  {elements}\n"
                f"  atoms per structure  min {self.natoms_min}  mean {self.n_atoms / self.n:.2f}  "
                f"max {self.natoms_max}")

    def abort(self) -> None:
        for f in [*self.files.values(), *self.text.values()]:
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.closed = True

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()



def stream_or_open(path: str | Path, source: dict, fill, verbose: bool = True,
                   **writer_kwargs) -> tuple[dict[str, np.ndarray], dict]:
    """Open the cache at ``path`` if valid for ``source``, else build it with ``fill(writer)``.

    The streaming twin of :func:`denoise3d.data.storage.load_or_build` (same lock, same clean-up
    of leftovers of killed builds, same messages): ``fill`` calls ``writer.add(...)`` per
    molecule. Prints why a cache is (re)built, the build time and the dataset statistics.
    """
    path = Path(path)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    try:
        return open_cache(path, source)
    except CacheInvalid as why:
        reason = str(why)
    with _build_lock(path):
        try:
            return open_cache(path, source)
        except CacheInvalid:
            pass
        _remove_leftovers(path)
        say(f"denoise3d: building cache {path} ({reason})")
        t0 = time.perf_counter()
        with CacheWriter(path, source, **writer_kwargs) as w:
            fill(w)
        say(f"denoise3d: built in {time.perf_counter() - t0:.1f} s\n{w.statistics()}")
        return open_cache(path, source)
