"""The final codebook fit is alike for every method: on digits, two-step and the GSL control at
alpha = 0 (float's network, trained with GSL's warm-started refits) save the same quantizer and
give the same codes under both fits (on the training and on the database representations)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gslbench.config import RunConfig
from gslbench.data import download
from gslbench.data.features import build_features
from gslbench.encode import encode_run
from gslbench.train import train_run

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(dataset="digits", feature="pixels", bits=16, sub_bits=4, dim_out=16, hidden=32,
            epochs=4, warmup_epochs=1, epochs_per_refit=1, batch_size=64)


def arrays(path, group: str) -> dict[str, np.ndarray]:
    with h5py.File(path) as handle:
        return {key: np.asarray(value) for key, value in handle[group].items()}


@pytest.mark.parametrize("quantizer", ["pq", "opq"])
def test_two_step_and_the_alpha_0_control_save_the_same_codebooks_and_codes(tmp_path, quantizer):
    data, results = tmp_path / "data", tmp_path / "results"
    download("digits", data)
    build_features("digits", data)
    runs = {}
    for method, knobs in (("two-step", {}), ("gsl", {"gsl_alpha": 0.0})):
        config = RunConfig(method=method, quantizer=quantizer, **BASE, **knobs)
        runs[method] = train_run(config, data, results, show_progress=False, device="cpu",
                                 reuse=False)
    two_step, control = runs["two-step"], runs["gsl"]
    assert two_step.run_id != control.run_id
    expected = arrays(two_step.quantizer, "quantizer")
    assert set(expected) == ({"codebooks", "rotation"} if quantizer == "opq" else {"codebooks"})
    for key, array in arrays(control.quantizer, "quantizer").items():
        np.testing.assert_array_equal(array, expected[key])
    for codebooks in ("train", "database"):
        for run in (two_step, control):
            encode_run(run.path, data, results, device="cpu", codebooks=codebooks)
        ours, theirs = (arrays(run.codes_file(codebooks), "/") for run in (two_step, control))
        np.testing.assert_array_equal(ours["codes"], theirs["codes"])
        for key, array in arrays(two_step.codes_file(codebooks), "quantizer").items():
            np.testing.assert_array_equal(arrays(control.codes_file(codebooks), "quantizer")[key],
                                          array)
