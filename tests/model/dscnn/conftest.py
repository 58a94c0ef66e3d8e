"""Shared fixtures of the dscnn tests: the vectors' random model, built once per session."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.model.dscnn import vectors
from tinyfed.model.dscnn.extractor import Extractor


@pytest.fixture(scope="session")
def model() -> tuple[Extractor, dict[str, npt.NDArray[np.float64]], npt.NDArray[np.int8]]:
    """(extractor, float params, calibration inputs) of the shared vectors."""
    return vectors.make_model()


@pytest.fixture(scope="session")
def extractor(
    model: tuple[Extractor, dict[str, npt.NDArray[np.float64]], npt.NDArray[np.int8]],
) -> Extractor:
    """The vectors' random int8 extractor."""
    return model[0]
