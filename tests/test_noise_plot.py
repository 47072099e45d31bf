"""The noise picture with σ = 0 alone (a validation run without noise): drawn, not a crash."""

import math

from PIL import Image

from kdmech.report.plots import noise_png


def test_noise_png_with_only_sigma_zero(tmp_path):
    nan = math.nan
    noise = {"sigmas": [0.0], "A": [[1.0, 1.0]], "fit_a": nan, "fit_b": nan, "fit_r2": nan,
             "plateau": 1.0, "spearman_rho": nan}
    path = tmp_path / "noise.png"
    noise_png(path, noise)
    assert Image.open(path).size[0] > 100
