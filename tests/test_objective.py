"""The denoising objective's pure functions."""

import pytest
import torch
from diffusers import DDPMScheduler

from textual_inversion.objective import min_snr_weights


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod[timesteps].double()
    return alphas / (1 - alphas)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_make_every_loss_an_x0_error_times_min_snr_gamma(prediction_type):
    """The squared error of each prediction type is the x0 error times SNR (noise), SNR + 1 (velocity) or 1 (x0);
    weighted, all three are the x0 error times min(SNR, gamma), checked here on predictions off by a known x0 error."""
    scheduler = DDPMScheduler(prediction_type=prediction_type)
    timesteps = torch.tensor([0, 100, 300, 500, 700, 999])
    x0 = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x0_error = 0.1 * torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    alphas = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    noisy = alphas.sqrt() * x0 + (1 - alphas).sqrt() * noise
    wrong_x0 = x0 + x0_error
    # The prediction that implies `wrong_x0` from `noisy`, and the true target, for each type.
    if prediction_type == "epsilon":
        prediction, target = (noisy - alphas.sqrt() * wrong_x0) / (1 - alphas).sqrt(), noise
    elif prediction_type == "v_prediction":
        prediction = (alphas.sqrt() * noisy - wrong_x0) / (1 - alphas).sqrt()
        target = scheduler.get_velocity(x0, noise, timesteps)
    else:
        prediction, target = wrong_x0, x0
    errors = ((prediction - target) ** 2).mean(dim=(1, 2, 3)).double()
    weighted = errors * min_snr_weights(scheduler, timesteps, 5.0).double()
    expected = (x0_error ** 2).mean(dim=(1, 2, 3)).double() * snr(scheduler, timesteps).clamp(max=5.0)
    assert torch.allclose(weighted, expected, rtol=1e-3)


def test_min_snr_weights_at_zero_terminal_snr():
    """A zero-terminal-SNR schedule's last timestep: weight 1 for noise prediction (0 / 0 there), 0 for velocity."""
    timesteps = torch.tensor([999, 500, 0])
    for prediction_type, last in (("epsilon", 1.0), ("v_prediction", 0.0)):
        scheduler = DDPMScheduler(prediction_type=prediction_type, beta_schedule="squaredcos_cap_v2",
                                  rescale_betas_zero_snr=True)
        weights = min_snr_weights(scheduler, timesteps, 5.0)
        assert torch.isfinite(weights).all() and weights[0].item() == last
        assert 0 < weights[2].item() < 0.01  # nearly clean: SNR in the thousands, the weight gamma over it
