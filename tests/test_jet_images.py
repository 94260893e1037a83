"""The jet-image chain: top and QCD samples, the calorimeter stage, images and their
preprocessing, the study's split files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.io.hdf5 import RaggedReader
from pipeline.run_config import resolve_config
from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry
from pipeline.simulation.calorimeter_stage import simulate_calorimeter
from pipeline.simulation.formats import CALORIMETER_CELLS, PARTICLE_JETS
from pipeline.simulation.generation import generate_shard
from pipeline.studies.jet_images.formats import jet_images_schema
from pipeline.studies.jet_images.preparation import (
    build_jet_images,
    image_coordinates,
    jet_images,
    pixelate,
    plot_jet_images,
    split_jet_images,
)

STEPS = {"centre": True, "rotate": True, "flip": True}
BOOSTED = {"sqrt_s": 14000.0, "pthat_min": 500.0, "pthat_max": 700.0, "events_per_shard": 60, "shards": 2,
           "batch_size": 60, "jets": {"radius": 0.8, "min_pt": 550.0, "max_pt": 650.0, "max_abs_eta": 2.0},
           "particles": {"store": True}}


def image_config(**changes) -> dict:
    config = {"seed": 11, "samples": {
        "top": {"process": "ttbar", "pythia_settings": ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"], **BOOSTED},
        "qcd": {"process": "qcd_dijet", **BOOSTED},
    }}
    config.update(changes)
    return resolve_config(config, source="test")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Generated, calorimeter and image files of two shards of top and QCD."""
    directory = tmp_path_factory.mktemp("jet_images")
    config = image_config()
    files = {}
    for sample in ("top", "qcd"):
        for shard in range(2):
            stem = directory / f"{sample}_{shard}"
            generate_shard(config, sample, shard, f"{stem}_gen.h5", progress=False)
            simulate_calorimeter(config, f"{stem}_gen.h5", f"{stem}_cells.h5", progress=False)
            build_jet_images(config, f"{stem}_gen.h5", f"{stem}_cells.h5", f"{stem}_images.h5", progress=False)
            files[sample, shard] = {kind: f"{stem}_{kind}.h5" for kind in ("gen", "cells", "images")}
    return config, files


def test_top_jets_contain_a_hadronic_top_and_qcd_jets_none(image_files):
    _, files = image_files
    jets = {}
    for sample in ("top", "qcd"):
        with RaggedReader(files[sample, 0]["gen"], PARTICLE_JETS) as reader:
            jets[sample] = reader.read("jets")
            assert np.all((jets[sample]["pt"] >= 550) & (jets[sample]["pt"] < 650))
            assert np.all(np.abs(jets[sample]["eta"]) < 2.0)
    contained = jets["top"]["top_contained"] == 1
    assert not jets["qcd"]["top_contained"].any()
    # Most boosted top jets hold the whole decay, and they carry the top mass.
    assert contained.sum() >= 8
    assert 150 < np.median(jets["top"]["mass"][contained]) < 200
    assert np.median(jets["qcd"]["mass"]) < 120


def test_calorimeter_stage_is_reproducible_and_conserves_the_truth(image_files, tmp_path):
    config, files = image_files
    again = tmp_path / "again.h5"
    simulate_calorimeter(config, files["top", 0]["gen"], again, progress=False)
    with RaggedReader(files["top", 0]["cells"], CALORIMETER_CELLS) as a, RaggedReader(again, CALORIMETER_CELLS) as b:
        first, second = a.read("cells"), b.read("cells")
        assert all(np.array_equal(first[k], second[k]) for k in first)
        assert a.n_rows("events") == 60
    with RaggedReader(files["top", 0]["gen"], PARTICLE_JETS) as reader:
        energy = reader.read("particles", ["energy"])["energy"].sum()
    truth = first["energy_charged"].sum() + first["energy_neutral"].sum()
    # Visible truth is at most what came in (leakage, muons, non-compensation, zero suppression).
    assert 0.5 * energy < truth < energy
    # Measured and true energy agree up to the hadronic response and noise.
    assert first["energy"].sum() == pytest.approx(truth, rel=0.15)


def test_particle_level_images_hold_the_constituents_and_match_the_reference_imaging(image_files, tmp_path):
    """jet_images.objects: particles images the same jets from their generator-level
    constituents, without the calorimeter file, exactly as the reference data set's
    constituents are imaged (constituent_images on the same four-momenta, padded)."""
    from pipeline.studies.jet_images.reference import constituent_images

    config, files = image_files
    particle_config = {**config, "jet_images": {**config["jet_images"], "objects": "particles"}}
    output = tmp_path / "particles.h5"
    build_jet_images(particle_config, files["top", 0]["gen"], None, output, progress=False)
    with RaggedReader(output, jet_images_schema()) as reader, \
            RaggedReader(files["top", 0]["images"], jet_images_schema()) as calorimeter:
        assert reader.attrs["objects"] == "particles" and calorimeter.attrs["objects"] == "calorimeter"
        jets, cells = reader.read("jets"), calorimeter.read("jets")
    # The same jets in the same order as the calorimeter's images.
    assert np.array_equal(jets["event"], cells["event"]) and np.array_equal(jets["pt"], cells["pt"])
    # Every constituent lands in the 1.6-wide image of an R = 0.8 jet: the image holds the
    # scalar pT sum, a little above the jet's (vector) pT.
    ratio = jets["image"].sum(axis=(1, 2)) / jets["pt"]
    assert np.all(ratio > 0.999) and np.median(ratio) < 1.1
    # The reference imaging of the same constituents, padded to (n, 200, 4), gives the same images.
    with RaggedReader(files["top", 0]["gen"], PARTICLE_JETS) as reader:
        events = reader.read("events", ["event"])["event"]
        all_jets, jet_offsets = reader.read_children("jets", 0, len(events))
        particles, offsets = reader.read_children("constituents", 0, len(all_jets["pt"]))
    kept = np.flatnonzero(all_jets["top_contained"] == 1)
    p4 = np.zeros((len(kept), 200, 4))
    for row, jet in enumerate(kept):
        part = slice(offsets[jet], offsets[jet + 1])
        p4[row, : part.stop - part.start] = np.stack([particles[k][part] for k in ("energy", "px", "py", "pz")], axis=1)
    reference = constituent_images(p4, config["jet_images"])
    assert np.allclose(reference["pt"], jets["pt"], rtol=1e-4)
    assert np.allclose(reference["image"], jets["image"], atol=1e-3 * jets["pt"].max())
    # The calorimeter's images need their cells.
    with pytest.raises(ValueError, match=r"jet_images.objects is calorimeter, so the calorimeter_cells file"):
        build_jet_images(config, files["top", 0]["gen"], None, tmp_path / "no_cells.h5", progress=False)
    assert not (tmp_path / "no_cells.h5").exists()


def test_calorimeter_needs_the_stored_particles(tmp_path):
    from pipeline.tiny import tiny_config

    config = tiny_config(events_per_shard=5, shards=1)
    generate_shard(config, "tiny", 0, tmp_path / "gen.h5", progress=False)
    with pytest.raises(ValueError, match=r"sample 'tiny' was generated without its particles; set "
                                         r"samples.tiny.particles.store: true"):
        simulate_calorimeter(config, tmp_path / "gen.h5", tmp_path / "cells.h5", progress=False)
    assert not (tmp_path / "cells.h5").exists()


def test_image_samples_need_their_particles_and_bad_calorimeter_keys_are_named():
    with pytest.raises(ConfigError, match=r"samples.top.particles.store: the jet-image study's signal sample"):
        image_config(samples={"top": {"process": "ttbar"}, "qcd": {"process": "qcd_dijet"}})
    with pytest.raises(ConfigError, match=r"calorimeter: Additional properties are not allowed \('radius_mm' was unexpected\)"):
        image_config(calorimeter={"radius_mm": 1500.0})
    assert image_config()["calorimeter"]["layers"][0]["name"] == "em1"
    # The vertexing study defaults to the first sample outside the image study.
    config = image_config()
    samples = {**config["samples"], "ttbar": {"process": "ttbar"}}
    assert image_config(samples=samples)["vertexing"]["sample"] == "ttbar"


def test_preprocessing_rotates_a_known_line_and_flips_the_bright_end_up():
    # Three deposits on a line at 30 degrees through (0.1, -0.05): 3 and 4 GeV up the line
    # from its E_T centroid, 2 GeV down it.
    angle = math.radians(30)
    direction = np.array([math.cos(angle), math.sin(angle)])
    points = np.array([0.1, -0.05]) + np.outer([0.3, 0.1, -0.25], direction)
    et = np.array([3.0, 4.0, 2.0])
    jet = np.zeros(3, np.int64)
    x, y = image_coordinates(points[:, 0], points[:, 1], et, jet, 1, STEPS)
    centroid = (et @ points) / et.sum()
    expected_y = (points - centroid) @ direction
    np.testing.assert_allclose(x, 0.0, atol=1e-12)
    np.testing.assert_allclose(y, expected_y, atol=1e-12)
    assert y[0] > y[1] > 0 > y[2]  # the brighter half is up
    # Each step can be switched off.
    x, y = image_coordinates(points[:, 0], points[:, 1], et, jet, 1, dict(STEPS, rotate=False, flip=False))
    np.testing.assert_allclose(np.c_[x, y], points - centroid, atol=1e-12)
    x, y = image_coordinates(points[:, 0], points[:, 1], et, jet, 1, dict(STEPS, centre=False, rotate=False))
    np.testing.assert_allclose(np.c_[x, y], points, atol=1e-12)  # already brighter on the + side
    # A mirrored jet is flipped back: more E_T at negative x becomes positive x.
    x, _ = image_coordinates(np.array([-0.3, 0.1]), np.zeros(2), np.array([4.0, 1.0]), np.zeros(2, np.int64), 1,
                             dict(STEPS, centre=False, rotate=False))
    np.testing.assert_allclose(x, [0.3, -0.1])


def test_preprocessing_treats_each_jet_on_its_own():
    x = np.array([0.2, -0.2, 0.0, 0.0])
    y = np.array([0.0, 0.0, 0.3, -0.3])
    et = np.array([3.0, 1.0, 3.0, 1.0])
    jet = np.array([0, 0, 1, 1])
    rx, ry = image_coordinates(x, y, et, jet, 2, dict(STEPS, centre=False))
    # Jet 0 lies along x: it is turned to y; jet 1 already lies along y.
    np.testing.assert_allclose(np.abs(rx), 0.0, atol=1e-12)
    np.testing.assert_allclose(ry, [0.2, -0.2, 0.3, -0.3], atol=1e-12)


def test_pixelate_by_hand():
    x = np.array([0.0, 0.05, -0.79, 0.81, 0.0])
    y = np.array([0.0, -0.05, 0.79, 0.0, 0.0])
    et = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    jet = np.array([0, 0, 0, 0, 1])
    images = pixelate(x, y, et, jet, 2, pixels=40, pixel_size=0.04)
    assert images.shape == (2, 40, 40)
    assert images[0, 20, 20] == 1.0 and images[0, 21, 18] == 2.0 and images[0, 0, 39] == 3.0
    assert images[0].sum() == 6.0  # the deposit at x = 0.81 is outside
    assert images[1, 20, 20] == 5.0 and images[1].sum() == 5.0


def test_cells_spread_over_the_pixels_they_cover():
    geometry = CalorimeterGeometry.from_settings({})
    had = geometry.layer_index("had1")  # 0.1 x 0.098 cells on 0.04 pixels
    ieta, iphi = geometry.cell_index(had, [0.05], [0.05])
    eta, phi = geometry.cell_centres(had, ieta, iphi)
    cells = {"layer": np.array([had], np.int8), "ieta": ieta.astype(np.int16), "iphi": iphi.astype(np.int16),
             "energy": np.array([10.0 * np.cosh(eta[0])], np.float32)}
    settings = {"pixels": 40, "pixel_size": 0.04, "preprocessing": dict.fromkeys(STEPS, False)}
    # The jet axis 0.01 above the cell centre in eta and phi: the cell spans [-0.06, 0.04]
    # in delta eta, i.e. 0.02, 0.04 and 0.04 of pixels 18, 19 and 20.
    axis = {"eta": eta + 0.01, "phi": phi + 0.01}
    image = jet_images(geometry, cells, np.array([0, 1]), axis, np.array([0]), settings)[0]
    assert image.sum() == pytest.approx(10.0, rel=1e-6)
    np.testing.assert_allclose(image.sum(axis=1)[17:22], [0, 2, 4, 4, 0], atol=1e-5)
    # In phi the cell spans [-0.059, 0.039]: 19%, 41% and 40% by overlap.
    np.testing.assert_allclose(image.sum(axis=0)[18:21], [1.95, 4.07, 3.98], atol=0.25)


def test_images_hold_the_jet_energy_and_the_split_keeps_events_whole(image_files, tmp_path):
    config, files = image_files
    with RaggedReader(files["top", 0]["images"], jet_images_schema()) as reader:
        top = reader.read("jets")
        assert reader.attrs["label"] == 1
    assert top["image"].shape[1:] == (40, 40) and np.all(top["label"] == 1)
    import h5py

    with h5py.File(files["top", 0]["images"], "r") as f:
        # Images are stored raw for the loader's speed, the small fields compressed.
        assert f["jets"]["image"].compression is None and f["jets"]["pt"].compression == "gzip"
    # The image's E_T is the jet's pT up to calorimeter response, leakage and the frame.
    ratio = top["image"].sum(axis=(1, 2)) / top["pt"]
    assert 0.6 < np.median(ratio) < 1.05
    # Preprocessing put the brightest quadrant upper right on average.
    half = 20
    assert top["image"][:, half:, half:].sum() > top["image"][:, :half, :half].sum()

    inputs = [files[key]["images"] for key in sorted(files)]
    outputs = {name: tmp_path / f"{name}.h5" for name in ("train", "val", "test")}
    counts = split_jet_images(config, inputs, outputs)
    read = {}
    for name, path in outputs.items():
        with RaggedReader(path, jet_images_schema()) as reader:
            read[name] = reader.read("jets", ["label", "event", "shard", "pt"])
        assert len(read[name]["label"]) == counts[name]
    total = 0
    for path in inputs:
        with RaggedReader(path, jet_images_schema()) as reader:
            total += reader.n_rows("jets")
    assert sum(counts.values()) == total
    assert set(np.unique(read["train"]["label"])) == {0, 1}

    def events(name):
        return {(int(label), int(shard), int(event))
                for label, shard, event in zip(read[name]["label"], read[name]["shard"], read[name]["event"])}

    assert not events("train") & events("test") and not events("train") & events("val")
    # Reruns give the same files.
    again = {name: tmp_path / f"again_{name}.h5" for name in outputs}
    split_jet_images(config, inputs, again)
    with RaggedReader(again["train"], jet_images_schema()) as reader:
        assert np.array_equal(reader.read("jets", ["pt"])["pt"], read["train"]["pt"])

    plot_jet_images(outputs["train"], tmp_path / "plots")
    assert (tmp_path / "plots" / "average_images.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "single_jets.pdf").exists()
