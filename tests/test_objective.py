"""The denoising objective's pure functions."""

import pytest
import torch
from diffusers import DDPMScheduler

from textual_inversion.objective import min_snr_weights, noised_and_target


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


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noised_and_target_give_the_schedules_mix_and_what_a_perfect_model_predicts(prediction_type):
    """noisy = sqrt(abar) x0 + sqrt(1 - abar) noise; the target is the noise, or the velocity
    sqrt(abar) noise - sqrt(1 - abar) x0, from which x0 comes back exactly."""
    scheduler = DDPMScheduler(prediction_type=prediction_type)
    timesteps = torch.tensor([0, 250, 999])
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noisy, target = noised_and_target(scheduler, x0, noise, timesteps)
    alphas = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    assert torch.allclose(noisy, alphas.sqrt() * x0 + (1 - alphas).sqrt() * noise, atol=1e-5)
    if prediction_type == "epsilon":
        assert torch.equal(target, noise)
    else:
        assert torch.allclose(alphas.sqrt() * noisy - (1 - alphas).sqrt() * target, x0, atol=1e-5)
