"""The jet-image study's HDF5 format (``jet_images``), its classes and its models. Bump
the version whenever its fields or their meaning change."""

from __future__ import annotations

from pipeline.io.hdf5 import Collection, Field, FileSchema, fields

#: Pixels per side of a jet image (the landscape paper's CNN: 40 x 40).
IMAGE_PIXELS = 40

#: Jet-image classes: label 1 is the signal (hadronic top), 0 the background (QCD).
IMAGE_CLASSES = ("qcd", "top")


def jet_images_schema(pixels: int = IMAGE_PIXELS) -> FileSchema:
    """The jet_images schema with ``pixels`` x ``pixels`` images (readers accept any size:
    the file's ``pixels`` attribute says which)."""
    return FileSchema(
        "jet_images",
        1,
        (
            Collection("jets", None, fields(
                ("pt", "f4", "GeV", "particle-level jet transverse momentum"),
                ("eta", "f4", "", "jet pseudorapidity"),
                ("phi", "f4", "rad", "jet azimuth"),
                ("mass", "f4", "GeV", "particle-level jet mass"),
                ("label", "i1", "", "1 = top jet (a hadronic top and its decay partons inside the jet), 0 = QCD jet"),
                ("event", "i8", "", "event number within its shard"),
                ("shard", "i4", "", "shard of its sample"),
            ) + (
                Field("image", "f4", "GeV", "transverse energy per pixel, summed over the calorimeter layers, in "
                      "(delta eta, delta phi) around the jet axis after the file's preprocessing (the `preprocessing` "
                      "attribute); axis 0 is delta eta, axis 1 delta phi", (pixels, pixels),
                      # Stored uncompressed: gzip decompression would make the loader, not the
                      # network, the limit (an order of magnitude: docs/benchmarks.md).
                      compressed=False),
            ), "one row per jet"),
        ),
        "calorimeter jet images with their class label, the input of the image taggers and autoencoders",
    )


JET_IMAGES = jet_images_schema()

#: This study's file schemas, by name.
SCHEMAS = {JET_IMAGES.name: JET_IMAGES}
