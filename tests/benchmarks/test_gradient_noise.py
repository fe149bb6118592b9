"""The gradient-noise benchmark's arithmetic, on gradients whose signal and noise are known."""

import pytest
import torch
from benchmarks.gradient_noise import noise, quarter_rows


def test_noise_around_the_own_mean_is_unbiased():
    generator = torch.Generator().manual_seed(0)
    draws = torch.randn(20000, 3, generator=generator, dtype=torch.float64) * 2.0  # variance 4 per coordinate
    assert noise(draws) == pytest.approx(12.0, rel=0.03)
    assert noise(draws, torch.zeros(3, dtype=torch.float64)) == pytest.approx(12.0, rel=0.03)


def test_a_quarter_of_pure_noise_has_no_signal_and_most_of_the_noise():
    """Draws at t < 750 all point along one direction with little spread; those at t >= 750 are large and
    directionless: that quarter holds nearly all of the noise, its own signal-to-noise is about 0."""
    generator = torch.Generator().manual_seed(1)
    timesteps = torch.arange(4000) % 1000
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    gradients = direction + 0.1 * torch.randn(4000, 4, generator=generator, dtype=torch.float64)
    noisiest = timesteps >= 750
    gradients[noisiest] = 10.0 * torch.randn(int(noisiest.sum()), 4, generator=generator, dtype=torch.float64)

    rows = quarter_rows(gradients, timesteps)

    assert [row[0] for row in rows] == ["0-249", "250-499", "500-749", "750-999"]
    assert [row[1] for row in rows] == [1000] * 4
    *clean, last = rows
    assert last[3] > 0.95 and sum(row[3] for row in rows) == pytest.approx(1.0, abs=0.02)
    assert abs(last[5]) < 0.02 and all(row[5] > 10 for row in clean)
    assert all(row[4] > 0.9 for row in clean) and last[2] > 10 * clean[0][2]
