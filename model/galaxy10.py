"""Galaxy10 DECaLS facts shared by every stage: the file schema, its checksum and the class names."""

from __future__ import annotations

import numpy as np

#: Official file name, size on disk and SHA256 (SPEC D1).
FILE_NAME = "Galaxy10_DECals.h5"
FILE_URL = "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5"
FILE_SHA256 = "19aefc477c41bb7f77ff07599a6b82a038dc042f889a111b0d4d98bb755c1571"

#: Class names 0-9 as the article gives them (astroNN 1.1.0 mislabels class 3).
CLASS_NAMES: tuple[str, ...] = (
    "disturbed",
    "merging",
    "round smooth",
    "in-between round smooth",
    "cigar shaped smooth",
    "barred spiral",
    "unbarred tight spiral",
    "unbarred loose spiral",
    "edge-on without bulge",
    "edge-on with bulge",
)
NUM_CLASSES = len(CLASS_NAMES)

#: Image count per class in the real Galaxy10 DECaLS (17,736 in all); the synthetic set keeps these proportions.
CLASS_COUNTS: tuple[int, ...] = (1081, 1853, 2645, 2027, 334, 2043, 1829, 2628, 1423, 1873)
CLASS_FRACTIONS = np.asarray(CLASS_COUNTS, dtype=np.float64) / sum(CLASS_COUNTS)

#: Keys of the HDF5 file: name -> (dtype kind, shape after the first axis). None means "any size".
IMAGE_KEY = "images"
LABEL_KEY = "ans"
SCALAR_KEYS = ("ra", "dec", "redshift", "pxscale")
