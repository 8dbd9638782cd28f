"""Data: the batch container, graphs, readers, the on-disk cache and splits."""

from denoise3d.data.batch import Batch, Molecule, collate
from denoise3d.data.dataset import BatchLoader, MolecularDataset, load_qm9
from denoise3d.data.qm9 import TARGETS, atomref
from denoise3d.data.splits import qm9_split

__all__ = ["Batch", "Molecule", "collate", "BatchLoader", "MolecularDataset", "load_qm9",
           "TARGETS", "atomref", "qm9_split"]
