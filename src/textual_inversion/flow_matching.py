"""The flow-matching objective of the transformer families (Flux.1, Stable Diffusion 3.x, Z-Image) as pure
functions: prompts -> the transformer's conditioning, and (latents, noise, timestep indices, conditioning) ->
per-sample loss.

It mirrors diffusers' own training scripts for these models (`train_dreambooth_lora_flux.py`,
`train_dreambooth_lora_sd3.py`, diffusers 0.42): the noisy latents are the straight line
x_σ = (1 - σ) x + σ ε between the picture's latents x and the noise ε, σ (and the timestep the model is given)
come from the pipeline's own `FlowMatchEulerDiscreteScheduler` at a drawn index, and the target is the
velocity ε - x. The index is drawn uniformly (the Flux script's default weighting "none"); for SD3 it is mapped
through the logit-normal density the SD3 script samples by default, so that both keep the loop's one
checkpointed generator and a resumed run draws the same timesteps.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

from .models import model_family, prompt_arguments

FLUX_TRAINING_GUIDANCE = 3.5  # the guidance value Flux-dev is given while training (the diffusers Flux script's default)
LOGIT_NORMAL = {"sd3": (0.0, 1.0)}  # (mean, std) of the logit-normal timestep density, per family; others uniform


def flow_scheduler(pipe) -> FlowMatchEulerDiscreteScheduler:
    """The training copy of the pipeline's scheduler: its 1000 σ values and timesteps, shifted as it says."""
    return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)


def flow_indices(pipe, indices: torch.Tensor, count: int) -> torch.Tensor:
    """Timestep indices [B] in 0..count-1 drawn uniformly -> the indices this family trains with.

    For a logit-normal family the uniform draw u goes through the inverse of the density's CDF (inverse-transform
    sampling): σ-index = count x sigmoid(mean + std x Φ⁻¹(u)), so the same draws give the same timesteps on resume.
    """
    if model_family(pipe) not in LOGIT_NORMAL:
        return indices
    mean, std = LOGIT_NORMAL[model_family(pipe)]
    uniform = (indices.double() + 0.5) / count
    normal = torch.special.ndtri(uniform)
    return (torch.sigmoid(mean + std * normal) * count).long().clamp(0, count - 1)


def flow_conditioning(pipe, prompts: list[str], device: torch.device, frozen_outputs: dict | None = None) -> dict:
    """The transformer's text inputs for `prompts`, by the pipeline's own prompt encoding (with gradients, so
    that new token rows learn): Flux's T5 sequence [B, L, D], pooled CLIP [B, 768] and text ids; SD3's joint
    sequence and pooled CLIP-L + CLIP-G; Z-Image's per-prompt Qwen3 hidden states (a list: each its own length).

    With `frozen_outputs` (a dict the caller keeps), Flux's and SD3's encoders in which nothing learns give each
    prompt's output once (see `frozen_encoder_output`): T5-XXL, a 4.8-billion-weight pass over 256-512 tokens, where
    only the CLIP encoders learn the token (`--ti-encoders clip_l`, as diffusers' Flux script trains it), and every
    encoder where only the transformer learns (LoRA). Their pipelines' `encode_prompt` computes every encoder or
    none, so the halves it joins are called here, joined as it joins them."""
    family = model_family(pipe)
    arguments = prompt_arguments(pipe, list(prompts))  # multi-vector tokens spelled out where diffusers does not
    if family == "flux":
        # FluxPipeline.encode_prompt's two halves (it takes no precomputed T5 output beside a computed CLIP one)
        prompts = list(arguments["prompt"])
        pooled = frozen_encoder_output(pipe.text_encoder, frozen_outputs, "clip_l", prompts,
                                       lambda texts: pipe._get_clip_prompt_embeds(texts, device=device))
        embeds = frozen_encoder_output(pipe.text_encoder_2, frozen_outputs, "t5", prompts,
                                       lambda texts: pipe._get_t5_prompt_embeds(texts, device=device))
        text_ids = torch.zeros(embeds.shape[1], 3, device=device, dtype=pipe.text_encoder.dtype)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": text_ids}
    if family == "sd3":  # each encoder its own spelling of the prompts (`prompt_arguments`)
        texts = [list(arguments.get(key, arguments["prompt"])) for key in ("prompt", "prompt_2", "prompt_3")]
        clip_l, clip_l_pooled = frozen_encoder_output(
            pipe.text_encoder, frozen_outputs, "clip_l", texts[0],
            lambda batch: pipe._get_clip_prompt_embeds(batch, device=device, clip_model_index=0))
        clip_g, clip_g_pooled = frozen_encoder_output(
            pipe.text_encoder_2, frozen_outputs, "clip_g", texts[1],
            lambda batch: pipe._get_clip_prompt_embeds(batch, device=device, clip_model_index=1))
        t5 = frozen_encoder_output(pipe.text_encoder_3, frozen_outputs, "t5", texts[2],
                                   lambda batch: pipe._get_t5_prompt_embeds(batch, device=device))  # zeros without T5
        clip = torch.cat([clip_l, clip_g], dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # [B, 77, 4096]
        return {"encoder_hidden_states": torch.cat([clip, t5], dim=-2),
                "pooled_projections": torch.cat([clip_l_pooled, clip_g_pooled], dim=-1)}
    embeds, _ = pipe.encode_prompt(list(arguments["prompt"]), device=device, do_classifier_free_guidance=False)
    return {"prompt_embeds": embeds}


def frozen_encoder_output(encoder, outputs: dict | None, key: str, prompts: list[str], encode):
    """`encode(prompts)`: a tensor [B, ...] or a tuple of them. Where `outputs` is given and nothing in `encoder`
    learns (no parameter needs a gradient, no dropout), each prompt's output is computed once, alone, and kept in
    `outputs` under (key, prompt): a prompt's output then never depends on the prompts that shared its first batch,
    so a resumed run reads the same."""
    if outputs is None or encoder is None or encoder.training or any(p.requires_grad for p in encoder.parameters()):
        return encode(prompts)
    for prompt in dict.fromkeys(prompts):
        if (key, prompt) not in outputs:
            with torch.no_grad():
                output = encode([prompt])
            outputs[(key, prompt)] = tuple(part[0] for part in output) if isinstance(output, tuple) else output[0]
    rows = [outputs[(key, prompt)] for prompt in prompts]
    if isinstance(rows[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*rows, strict=True))
    return torch.stack(rows)


def flow_velocity(pipe, noisy: torch.Tensor, sigmas: torch.Tensor, timesteps: torch.Tensor,
                  conditioning: dict) -> torch.Tensor:
    """The transformer's velocity prediction [B, C, h, w] for `noisy` latents [B, C, h, w] at `sigmas` [B]
    (`timesteps` [B], the scheduler's 0..1000 values), in each family's input layout."""
    family = model_family(pipe)
    transformer = pipe.transformer
    batch, channels, height, width = noisy.shape
    if family == "flux":  # 2x2 latent patches as a token sequence, with their positions
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, noisy.device, noisy.dtype)
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full((batch,), FLUX_TRAINING_GUIDANCE, device=noisy.device, dtype=torch.float32)
        prediction = transformer(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                                 img_ids=image_ids, return_dict=False, **conditioning)[0]
        scale = pipe.vae_scale_factor
        return FluxPipeline._unpack_latents(prediction, height * scale, width * scale, scale)
    if family == "sd3":
        return transformer(hidden_states=noisy, timestep=timesteps, return_dict=False, **conditioning)[0]
    # Z-Image takes a list of [C, 1, h, w] frames and the time as 1 - σ, and predicts x - ε (its pipeline negates it)
    frames = list(noisy.unsqueeze(2).unbind(0))
    outputs = transformer(frames, 1 - sigmas.to(noisy.dtype), conditioning["prompt_embeds"], return_dict=False)[0]
    return -torch.stack(outputs).squeeze(2)


def flow_prediction(pipe, scheduler: FlowMatchEulerDiscreteScheduler, latents: torch.Tensor, noise: torch.Tensor,
                    indices: torch.Tensor, conditioning: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) [B, C, h, w]: the velocity the transformer predicts for `latents` moved towards
    `noise` to the σ at each of `indices` [B], and the true velocity ε - x."""
    indices = flow_indices(pipe, indices.cpu(), len(scheduler.timesteps))
    sigmas = scheduler.sigmas[indices].to(latents.device, torch.float32)
    timesteps = scheduler.timesteps[indices].to(latents.device)
    shaped = sigmas.view(-1, 1, 1, 1)
    noisy = (1 - shaped) * latents + shaped * noise
    prediction = flow_velocity(pipe, noisy.to(pipe.transformer.dtype), sigmas, timesteps, conditioning)
    return prediction, noise - latents
