"""Model families (tinyfed.model.families) and the scaled initialisation of the paper's network."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyfed import model
from tinyfed.data import dataset
from tinyfed.data.synth import SynthConfig, synthesize
from tinyfed.errors import ModelError
from tinyfed.features import pipelines
from tinyfed.link import spec
from tinyfed.model import families
from tinyfed.model.dscnn import ARCH_ID as DSCNN_ARCH, head


def test_the_two_families_of_docs_learning() -> None:
    paper, dscnn = families.by_name("paper"), families.by_name("dscnn")
    assert (paper.arch_id, paper.arch, paper.n_params, paper.model_bytes) == (
        spec.ArchId.FC650_16_3,
        "fc650-16-3-sigmoid-v1",
        10_467,
        41_868,
    )
    assert (dscnn.arch_id, dscnn.arch, dscnn.n_params, dscnn.model_bytes) == (
        spec.ArchId.DSCNN_HEAD,
        "dscnn64-head-v1",
        195,
        780,
    )
    assert set(paper.pipelines) == {"paper", "centroid"}
    assert paper.pipeline == "centroid"
    assert dscnn.pipelines == ("logmel40",)
    assert dscnn.pipeline == "logmel40"
    assert int(spec.PipelineId.LOGMEL40) == 3
    assert dscnn.arch == DSCNN_ARCH  # the reference's model file agrees
    assert dscnn.n_params == head.n_params(3)
    assert paper.lr == model.DEFAULT_LR
    assert dscnn.lr == head.DEFAULT_LR
    assert list(families.FAMILIES) == ["paper", "dscnn"]


def test_lookups_by_name_arch_id_arch_string_and_size() -> None:
    for f in families.FAMILIES.values():
        assert families.by_name(f.name) is f
        assert families.by_arch_id(f.arch_id) is f
        assert families.by_arch(f.arch) is f
        assert families.by_size(f.model_bytes) is f


@pytest.mark.parametrize(
    ("lookup", "value", "named"),
    [
        (families.by_name, "resnet", "'resnet'"),
        (families.by_arch_id, 7, "7"),
        (families.by_arch, "fc650-16-3-relu-v9", "'fc650-16-3-relu-v9'"),
    ],
)
def test_unknown_values_are_named_with_the_known_ones(
    lookup: Callable[[Any], families.Family], value: object, named: str
) -> None:
    with pytest.raises(ModelError) as err:
        lookup(value)
    text = str(err.value)
    assert named in text
    assert "paper (arch 1, fc650-16-3-sigmoid-v1)" in text
    assert "dscnn (arch 2, dscnn64-head-v1)" in text


def test_by_size_names_the_size_and_the_families() -> None:
    with pytest.raises(ModelError, match=r"1,000 bytes.*paper 41,868 bytes, dscnn 780 bytes"):
        families.by_size(1000)


def test_check_params_shape_dtype_finite() -> None:
    dscnn = families.DSCNN
    ok = np.ones(195, np.float32)
    assert families.check_params(dscnn, ok) is not None
    with pytest.raises(ModelError, match=r"shape \(10467,\), expected \(195,\).*dscnn family"):
        families.check_params(dscnn, model.init_params())
    with pytest.raises(ModelError, match="dtype float64"):
        families.check_params(dscnn, np.ones(195))
    bad = ok.copy()
    bad[7] = np.nan
    with pytest.raises(ModelError, match="first at index 7"):
        families.check_params(dscnn, bad)
    with pytest.raises(ModelError, match=r"expected \(10467,\).*paper family"):
        families.check_params(families.PAPER, ok)


def test_bytes_round_trip_and_sizes(tmp_path: Path) -> None:
    params = (np.arange(195) / 7).astype(np.float32)
    data = families.DSCNN.to_bytes(params)
    assert len(data) == 780
    np.testing.assert_array_equal(families.DSCNN.from_bytes(data), params)
    with pytest.raises(ModelError, match="780 bytes, expected 41868"):
        families.PAPER.from_bytes(data)
    model.save(params, tmp_path / "head.bin", None)
    np.testing.assert_array_equal(families.DSCNN.load(tmp_path / "head.bin"), params)
    with pytest.raises(ModelError, match=r"head\.bin"):
        families.PAPER.load(tmp_path / "head.bin")
    # checksums serve every family
    assert model.sha256(params) == hashlib.sha256(data).hexdigest()


def test_first_global_models() -> None:
    np.testing.assert_array_equal(families.DSCNN.init(), np.zeros(195, np.float32))
    assert families.PAPER.default_scheme == "scaled"
    np.testing.assert_array_equal(families.PAPER.init(5), model.init_params(5, "scaled"))
    np.testing.assert_array_equal(families.PAPER.init(5, "paper"), model.init_params(5))
    with pytest.raises(ModelError, match="family 'dscnn' has no init scheme 'paper'"):
        families.DSCNN.init(scheme="paper")


def test_scaled_init_bounds_biases_and_stream() -> None:
    paper, scaled = model.init_params(12345), model.init_params(12345, "scaled")
    assert model.init_params().dtype == np.float32  # the default is still the paper's
    np.testing.assert_array_equal(model.init_params(), paper)
    hidden = scaled[: model.N_HIDDEN_PARAMS].reshape(651, 16)
    output = scaled[model.N_HIDDEN_PARAMS :].reshape(17, 3)
    assert np.abs(hidden[:650]).max() <= np.sqrt(3 / 650) + 1e-7
    assert np.abs(output[:16]).max() <= np.sqrt(3 / 16) + 1e-7
    assert not hidden[650].any()
    assert not output[16].any()
    # the same stream: each weight is the paper's value scaled by its layer's factor
    ph = paper[: model.N_HIDDEN_PARAMS].reshape(651, 16)
    np.testing.assert_allclose(hidden[:650], ph[:650] * 2 * np.sqrt(3 / 650), rtol=1e-6)
    with pytest.raises(ModelError, match="init scheme 'glorot'"):
        model.init_params(1, "glorot")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_scaled_init_keeps_hidden_units_out_of_saturation_on_real_features(
    tmp_path: Path,
) -> None:
    """docs/learning.md: on synthesized words the paper's init gives hidden pre-activations of
    sd ~7.5 (half the units saturated), the scaled init ~1."""
    out = tmp_path / "corpus"
    synthesize(
        SynthConfig(words=("vermell", "verd", "blau"), out=out, per_word=8, seed=1, jobs=1),
        progress=False,
    )
    ds = dataset.load(out, jobs=1, progress=False)
    x = pipelines.get_pipeline("centroid").compute_batch(ds.audio).astype(np.float64)
    sds = {}
    for scheme in model.INIT_SCHEMES:
        p = model.init_params(12345, scheme)
        h = p[: model.N_HIDDEN_PARAMS].reshape(651, 16).astype(np.float64)
        sds[scheme] = float((x @ h[:650] + h[650]).std())
    assert sds["paper"] > 5.0
    assert 0.5 < sds["scaled"] < 1.6
    assert sds["paper"] / sds["scaled"] > 4
