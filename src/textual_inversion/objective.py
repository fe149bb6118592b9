"""The denoising objective: prompts -> UNet conditioning and (latents, noise, timesteps, conditioning) ->
per-sample loss as pure functions (used by the training loop, the hypernetwork build and the tests), and the
module that puts them together for the loop and for accelerate. The transformer families' flow-matching
counterparts are in `flow_matching.py`; `DenoisingLoss` picks by the pipeline.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from .flow_matching import flow_conditioning, flow_prediction, flow_scheduler
from .models import denoiser, is_transformer_family, text_encoders

if TYPE_CHECKING:
    from .data import Batch


def training_scheduler(pipe):
    """The noise schedule training draws from: DDPM's for the UNet families, the pipeline's flow-matching one."""
    if is_transformer_family(pipe):
        return flow_scheduler(pipe)
    return DDPMScheduler.from_config(pipe.scheduler.config)


def encode_conditioning(pipe, prompts: list[str], size_conditions: list[tuple], device: torch.device,
                        frozen_outputs: dict | None = None) -> dict:
    """The denoiser's keyword arguments for `prompts`: `encoder_hidden_states` [B, 77, D], and for SDXL
    `added_cond_kwargs` (pooled text embeds [B, 1280] and time ids [B, 6]: `size_conditions`, each
    sample's original (height, width), crop (top, left) and target (height, width)); the transformer
    families' text inputs from `flow_conditioning` (they take no size conditions; `frozen_outputs` keeps what
    their frozen encoders gave)."""
    if is_transformer_family(pipe):
        return flow_conditioning(pipe, prompts, device, frozen_outputs)
    if not hasattr(pipe, "text_encoder_2"):
        prompt_embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
        return {"encoder_hidden_states": prompt_embeds}
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                                     do_classifier_free_guidance=False)
    time_ids = torch.tensor(size_conditions, device=device, dtype=prompt_embeds.dtype)
    return {"encoder_hidden_states": prompt_embeds, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                   conditioning: dict, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample loss [B]: the mean squared error of the UNet's prediction for `latents` [B, C, h, w] noised
    with `noise` [B, C, h, w] at `timesteps` [B], against the noise (or the velocity, for v-prediction models).

    `weights` [B, 1, h, w] (a masked loss) make it a weighted mean over each sample's pixels: normalised by the
    weights' sum, so that a small subject still counts as much per step as a large one.
    The noisy latents go into the UNet in the precision of the conditioning, which the text encoder gave.
    """
    noisy, target = noised_and_target(noise_scheduler, latents, noise, timesteps)
    dtype = conditioning["encoder_hidden_states"].dtype
    prediction = unet(noisy.to(dtype), timesteps, **conditioning).sample
    return weighted_mean_error(prediction, target, weights)


def noised_and_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`latents` [B, C, h, w] noised with `noise` [B, C, h, w] at `timesteps` [B], and what the UNet should predict
    from them: the noise, or the velocity for v-prediction models."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return noisy, noise_scheduler.get_velocity(latents, noise, timesteps)
    return noisy, noise


def weighted_mean_error(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean squared error [B] of `prediction` against `target` [B, C, h, w], in float32; with
    `weights` [B, 1, h, w], the weighted mean over each sample's pixels."""
    errors = F.mse_loss(prediction.float(), target.float(), reduction="none")
    if weights is None:
        return errors.mean(dim=(1, 2, 3))
    weights = weights.to(errors.device, errors.dtype)
    return (errors * weights).sum(dim=(1, 2, 3)) / (weights.sum(dim=(1, 2, 3)) * errors.shape[1]).clamp(min=1e-8)


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights [B] of min-SNR-gamma (Hang et al. 2023) at `timesteps` [B], SNR = abar / (1 - abar).

    Each prediction type's squared error is the x0 error times SNR (noise), SNR + 1 (velocity) or 1 (sample); the
    weight makes it the x0 error times min(SNR, gamma), so the nearly clean timesteps, whose error is mostly the
    noise's own, stop outweighing the rest. A zero-SNR timestep (a zero-terminal-SNR schedule's last) gets weight 1
    under noise prediction, where the formula reads 0 / 0: its limit as the SNR falls to 0.
    """
    alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].double()
    snr = alphas / (1 - alphas).clamp(min=1e-20)
    clipped = snr.clamp(max=gamma)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        weights = torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
    elif prediction_type == "v_prediction":
        weights = clipped / (snr + 1)
    else:  # "sample": the error is already the x0 error
        weights = clipped
    return weights.float()


class DenoisingLoss(torch.nn.Module):
    """The pipeline's text encoders and denoiser (UNet or transformer) as one module whose forward is the
    per-sample loss: the diffusion loss, or flow matching for the transformer families.

    Accelerate wraps it in DistributedDataParallel when several processes train, which averages the
    gradients of whatever learns in a few bucketed all-reduces during the backward pass.
    """

    def __init__(self, pipe, noise_scheduler, mask_weight: float = 0.0, snr_gamma: float = 0.0):
        super().__init__()
        self.denoiser = denoiser(pipe)
        self.text_encoders = torch.nn.ModuleList(encoder for _, _, encoder in text_encoders(pipe))
        self.pipe, self.noise_scheduler, self.mask_weight, self.snr_gamma = pipe, noise_scheduler, mask_weight, snr_gamma
        # A frozen UNet already in half precision runs outside autocast, as diffusers' example scripts run it:
        # autocast keeps its group norms and the residual stream around them in fp32 (on a GPU its forward and
        # backward took 1.17-1.24x theirs inside autocast, 0.87-1.01x outside: benchmarks/results/real_scale_cuda_*).
        # Where something in it learns (LoRA, DreamBooth), the fp32 weights that learn need autocast.
        self.frozen_outputs = {}  # (encoder key, prompt) -> what a frozen text encoder gave (flow_conditioning)
        self.unet_in_own_precision = not is_transformer_family(pipe) and self.denoiser.dtype != torch.float32 and \
            not any(parameter.requires_grad for parameter in self.denoiser.parameters())

    def forward(self, batch: Batch) -> torch.Tensor:
        device = self.denoiser.device
        conditioning = encode_conditioning(self.pipe, batch.prompts, batch.sizes, device, self.frozen_outputs)
        weights = None
        if batch.masks is not None:  # the subject counts 1, the rest --mask-weight
            weights = batch.masks + self.mask_weight * (1 - batch.masks)
        latents, noise = batch.latents.to(device), batch.noise.to(device)
        if is_transformer_family(self.pipe):  # batch.timesteps are the flow schedule's indices
            prediction, target = flow_prediction(self.pipe, self.noise_scheduler, latents, noise, batch.timesteps,
                                                 conditioning)
            return weighted_mean_error(prediction, target, weights)
        timesteps = batch.timesteps.to(device)
        in_own_precision = self.unet_in_own_precision and torch.is_autocast_enabled(device.type)
        if in_own_precision:  # (SDXL's pooled embeds and time ids need no cast: the UNet casts what it adds them to)
            conditioning = {**conditioning,
                            "encoder_hidden_states": conditioning["encoder_hidden_states"].to(self.denoiser.dtype)}
        with torch.autocast(device.type, enabled=False) if in_own_precision else contextlib.nullcontext():
            errors = diffusion_loss(self.denoiser, self.noise_scheduler, latents, noise, timesteps, conditioning,
                                    weights)
        if self.snr_gamma:
            errors = errors * min_snr_weights(self.noise_scheduler, timesteps, self.snr_gamma)
        return errors


def batch_loss(model, batch: Batch, prior_loss_weight: float) -> torch.Tensor:
    """The step's loss: mean over the subject's pictures, plus the weighted mean over the class images."""
    errors = model(batch)
    loss = errors[:batch.subject_count].mean()
    if len(errors) > batch.subject_count:
        loss = loss + prior_loss_weight * errors[batch.subject_count:].mean()
    return loss
