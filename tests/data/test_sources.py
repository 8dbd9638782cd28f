"""The dataset registry (data/sources): keys each source reads, labels with units, load_data."""

import dataclasses

import numpy as np
import pytest

from denoise3d.config import ConfigError, DataConfig, explicit_keys, load_config
from denoise3d.data.sources import DATASETS, check_keys, load_data
from denoise3d.data.sources.base import COMMON_KEYS
from denoise3d.units import HARTREE_EV


def test_every_key_a_source_reads_is_a_data_key():
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    assert set(DATASETS) == {"qm9", "md17", "files", "structures", "geom"}
    for name, source in DATASETS.items():
        assert source.name == name and source.keys <= fields and COMMON_KEYS <= fields
    used = COMMON_KEYS.union(*(s.keys for s in DATASETS.values()))
    assert used == fields, "a data.* key no source reads"


@pytest.mark.parametrize("overrides, words", [
    (["data.top_k=3"], "data.top_k does not apply to data.dataset=qm9 (it is read by geom"),
    (["data.dataset=md17", "data.xyz_dir=x"], "data.xyz_dir does not apply to data.dataset=md17"),
    (["data.dataset=geom", "data.add_hydrogens=true"], "read by structures"),
    (["data.dataset=nope"], "unknown data.dataset 'nope' (known: qm9, md17, files, structures, geom)"),
])
def test_keys_that_do_not_apply_are_refused(overrides, words):
    cfg = load_config(None, overrides)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_keys(cfg.data, explicit_keys(cfg, "data"))


def test_keys_that_apply_and_defaults_pass():
    cfg = load_config(None, ["data.dataset=md17", "data.path=x.npz", "data.split=rmd17-1",
                             "data.train_frames=10", "data.max_test=5", "data.batch_size=2"])
    check_keys(cfg.data, explicit_keys(cfg, "data"))
    check_keys(DataConfig(dataset="geom", top_k=3), ())  # only explicitly set keys count
    saved = load_config(None, [], base=dataclasses.asdict(cfg))  # a checkpoint's config
    assert explicit_keys(saved, "data") == set()


def test_qm9_declares_its_labels_units_and_references(qm9_cache):
    ds, split = load_data(DataConfig(cache_dir=str(qm9_cache), max_train=10))
    assert len(split["train"]) == 10 and len(split["test"]) == 13_083
    homo, mu, u0 = ds.labels["homo"], ds.labels["mu"], ds.labels["u0"]
    assert (homo.per, homo.unit, homo.report_unit, homo.report_factor) == ("structure", "eV", "meV", 1000.0)
    assert (mu.unit, mu.report_unit) == ("D", "D") and not mu.reference.any()
    assert u0.reference[6] == pytest.approx(-37.846772 * HARTREE_EV)  # QM9's atom energy of C
    assert set(ds.labels) == set(ds.target_names)


def test_md17_declares_energy_and_forces(tmp_path):
    n, atoms = 30, 3
    rng = np.random.default_rng(0)
    pos = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]) + 0.01 * rng.normal(size=(n, atoms, 3))
    np.savez(tmp_path / "w.npz", z=np.array([8, 1, 1]), R=pos, E=rng.normal(size=(n, 1)),
             F=rng.normal(size=(n, atoms, 3)))
    ds, split = load_data(DataConfig(dataset="md17", path=str(tmp_path / "w.npz"), split="random",
                                     train_frames=10, valid_frames=5))
    assert (len(split["train"]), len(split["valid"]), len(split["test"])) == (10, 5, 15)
    assert ds.labels["energy"].per == "structure" and ds.labels["forces"].per == "atom"
    assert ds.labels["forces"].report_unit == "kcal/mol/Å"
