"""The reference network against the paper's own C++ (vectors/nn/, see vectors/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyfed import model
from tinyfed.errors import ModelError
from tinyfed.testbed import vectors

STEPS = 40


def _initial() -> np.ndarray:
    hidden = vectors.load("nn/init_hidden_weights.f32")
    output = vectors.load("nn/init_output_weights.f32")
    return np.concatenate([hidden, output]).astype(np.float32)


def test_init_params_reproduce_the_papers_seeded_model() -> None:
    np.testing.assert_array_equal(model.init_params(12345), _initial())


def test_model_file_is_exactly_the_boards_bytes(tmp_path: Path) -> None:
    params = model.init_params()
    path = tmp_path / "m.bin"
    model.save(params, path)
    assert path.stat().st_size == model.MODEL_BYTES == 41_868
    np.testing.assert_array_equal(model.load(path), params)
    assert path.read_bytes()[:4] == np.float32(params[0]).astype("<f4").tobytes()


@pytest.mark.parametrize("scenario", ["A", "B"])
def test_forward_matches_reference(scenario: str) -> None:
    x = vectors.load(f"nn/{scenario}_inputs.f32", shape=(STEPS, 650)).astype(np.float32)
    expected = vectors.load(f"nn/{scenario}_forward_init_outputs.f32", shape=(STEPS, 3)).astype(
        np.float32
    )
    np.testing.assert_allclose(model.forward(_initial(), x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scenario", ["A", "B"])
def test_training_steps_match_reference(scenario: str) -> None:
    # Prepare
    x = vectors.load(f"nn/{scenario}_inputs.f32", shape=(STEPS, 650))
    labels = vectors.load(f"nn/{scenario}_labels.i32", dtype="<i4")
    errors = vectors.load(f"nn/{scenario}_step_error.f32")
    seen = vectors.load(f"nn/{scenario}_step_outputs_in_backward.f32", shape=(STEPS, 3))
    after = vectors.load(f"nn/{scenario}_step_outputs_forward_after.f32", shape=(STEPS, 3))
    trainer = model.Trainer(_initial())
    # Execute
    for i in range(STEPS):
        result = trainer.step(x[i], int(labels[i]))
        # Assert
        assert result.loss == pytest.approx(float(errors[i]), rel=3e-6, abs=1e-5)
        np.testing.assert_allclose(result.outputs, seen[i], atol=1e-5, rtol=0)
        np.testing.assert_allclose(model.forward(trainer.params, x[i]), after[i], atol=1e-5)
        if i == 0:
            step1 = np.concatenate(
                [
                    vectors.load(f"nn/{scenario}_step1_hidden_weights.f32"),
                    vectors.load(f"nn/{scenario}_step1_output_weights.f32"),
                ]
            )
            np.testing.assert_allclose(trainer.params, step1, atol=1e-5, rtol=0)
    final = np.concatenate(
        [
            vectors.load(f"nn/{scenario}_final_hidden_weights.f32"),
            vectors.load(f"nn/{scenario}_final_output_weights.f32"),
        ]
    )
    np.testing.assert_allclose(trainer.params, final, atol=1e-5, rtol=0)


def test_error_constant_is_0_33333_not_one_third() -> None:
    errors = vectors.load("nn/A_step_error.f32")
    x = vectors.load("nn/A_inputs.f32", shape=(STEPS, 650))
    labels = vectors.load("nn/A_labels.i32", dtype="<i4")
    o = model.forward(_initial(), x[0]).astype(np.float64)
    t = model.one_hot(int(labels[0]))
    third = float(np.sum((t - o) ** 2) / 3)
    assert errors[0] == pytest.approx(float(np.sum(0.33333 * (t - o) ** 2)), rel=3e-6)
    assert errors[0] != pytest.approx(third, rel=3e-6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 41_867, "41867 bytes, expected 41868"),
        (np.full(10_467, np.nan, "<f4").tobytes(), "10467 non-finite values"),
    ],
)
def test_malformed_model_bytes_are_rejected_with_reason(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        model.from_bytes(data)


def test_trainer_rejects_wrong_input_shape() -> None:
    trainer = model.Trainer(model.init_params())
    with pytest.raises(ValueError, match=r"shape \(649,\)"):
        trainer.step(np.zeros(649, np.float32), 0)
