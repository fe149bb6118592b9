"""Their Flux step: the pure textual-inversion step of diffusers' advanced Flux script, re-implemented for
`benchmarks/real_scale.py` to time beside ours.

Mirrors examples/advanced_diffusion_training/train_dreambooth_lora_flux_advanced.py of diffusers main (0.40.0.dev0,
commit 58eb52c) run as textual inversion: `--train_text_encoder_ti --train_transformer_frac 0` with an
`--initializer_concept` and without `--enable_t5_ti` (so CLIP-L learns the token and T5 does not), every other
option at its default. Each step: the batch's pixels go through the VAE (`--cache_latents` is off by default),
`latent_dist.sample()`, shifted and scaled; CLIP-L's pooled output and T5's sequence are computed from the prompt's
ids (tokenized once: one instance prompt for every picture); the transformer predicts the velocity of the flow-matching
straight line at a uniformly drawn timestep (weighting scheme "none"), with Flux-dev's guidance 3.5; the mean squared
error goes backward; the gradient is clipped to norm 1 over CLIP-L's parameters; AdamW (betas 0.9/0.999, eps 1e-8,
the text encoder's weight decay 1e-3) steps over CLIP-L's whole token-embedding matrix; then the handler
"retracts" the embeddings: every row but the new tokens' is copied back from a saved copy and the new rows are scaled
towards the matrix's starting standard deviation (by (std / new rows' std) ** 0.1).

Dtypes as the script casts them: the VAE, transformer and both text encoders in the weight dtype, the trained matrix
with them (the script upcasts it to fp32 only under fp16). Left out, as not part of a step's cost: reading and
preprocessing the pictures (the script's dataset does it once, up front), checkpoints, validation.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.optimization import get_scheduler
from PIL import Image

from .diffusers_example_step import autocast, grown_matrix, optimizer_step

GUIDANCE = 3.5  # --guidance_scale's default
MAX_SEQUENCE_LENGTH = 512  # --max_sequence_length's default
TEXT_ENCODER_WEIGHT_DECAY = 1e-3  # --adam_weight_decay_text_encoder's default
MAX_GRAD_NORM = 1.0  # --max_grad_norm's default
INSTANCE_PROMPT = "a photo of {}"  # --instance_prompt, the token in it


def pixels(picture: Image.Image, resolution: int) -> torch.Tensor:
    """Their dataset's preprocessing of one picture (done once, up front): the shorter side resized to `resolution`
    (bilinear), cropped to a square (centred here; theirs is a random crop unless --center_crop), in [-1, 1],
    [3, H, W]."""
    picture = picture.convert("RGB")
    scale = resolution / min(picture.size)
    width, height = max(resolution, round(picture.width * scale)), max(resolution, round(picture.height * scale))
    picture = picture.resize((width, height), resample=Image.Resampling.BILINEAR)
    left, top = (width - resolution) // 2, (height - resolution) // 2
    picture = picture.crop((left, top, left + resolution, top + resolution))
    values = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 127.5 - 1.0)
    return values.permute(2, 0, 1).contiguous()


class DiffusersFluxExampleStep:
    """Their step on the Flux `pipe`; `shares_pipe` when our step trains on the same modules in this process."""

    name = "theirs"

    def __init__(self, pipe, token: str, init_token: str, pictures: list[Image.Image], resolution: int,
                 batch_size: int, device: torch.device, weight_dtype: torch.dtype, lr: float, shares_pipe: bool):
        self.pipe, self.batch_size, self.device, self.weight_dtype = pipe, batch_size, device, weight_dtype
        for module in (pipe.vae, pipe.transformer, pipe.text_encoder_2):
            module.to(device, weight_dtype)
        encoder = pipe.text_encoder
        if not shares_pipe:
            encoder.to(device, weight_dtype)
        tokenizer = pipe.tokenizer
        # (their add_special_tokens and rows copied from the initializer concept)
        matrix_dtype = torch.float32 if weight_dtype == torch.float16 else weight_dtype
        self.embedding, placeholder_id = grown_matrix(encoder, tokenizer, token, init_token, matrix_dtype)
        self.placeholder_ids = [placeholder_id]
        self.encoder = encoder
        self.original = self.embedding.weight.data.clone()
        self.std = self.embedding.weight.data.std()
        self.index_no_updates = torch.ones(len(tokenizer), dtype=torch.bool)
        self.index_no_updates[self.placeholder_ids] = False
        self.optimizer = torch.optim.AdamW([{"params": [self.embedding.weight], "weight_decay": TEXT_ENCODER_WEIGHT_DECAY,
                                             "lr": lr}], betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8)
        self.lr_scheduler = get_scheduler("constant", optimizer=self.optimizer)
        self.scaler = torch.amp.GradScaler(device.type) if weight_dtype == torch.float16 else None
        self.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        prompt = INSTANCE_PROMPT.format(token)  # tokenized once: every picture has this prompt
        self.clip_ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True,
                                  return_tensors="pt").input_ids
        self.t5_ids = pipe.tokenizer_2(prompt, padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True,
                                       return_tensors="pt").input_ids
        self.pixel_values = [pixels(picture, resolution) for picture in pictures]

    def activate(self) -> None:
        """Put their trainable matrix into CLIP-L, and the models into the state their loop leaves them in."""
        self.encoder.set_input_embeddings(self.embedding)
        self.encoder.train()
        self.pipe.transformer.train()

    def deactivate(self) -> None:
        self.pipe.transformer.eval()

    def modules(self) -> list:
        """The modules whose forward passes the phase clock times: (module, phase)."""
        return [(self.encoder, "text encoder"), (self.pipe.text_encoder_2, "T5 encoder"),
                (self.pipe.transformer, "UNet forward")]

    def sigmas(self, timesteps: torch.Tensor, dims: int) -> torch.Tensor:
        """Their `get_sigmas`: each timestep's σ, looked up in the scheduler's schedule, shaped to broadcast."""
        schedule = self.noise_scheduler.timesteps.to(self.device)
        indices = [(schedule == t).nonzero().item() for t in timesteps]
        sigma = self.noise_scheduler.sigmas.to(self.device, self.weight_dtype)[indices].flatten()
        return sigma.view(-1, *[1] * (dims - 1))

    def step(self, clock) -> float:
        """One optimizer step; `clock.mark(phase)` closes each phase. Returns the loss."""
        pipe, vae = self.pipe, self.pipe.vae
        batch = torch.stack(random.choices(self.pixel_values, k=self.batch_size)).to(self.device)
        clock.mark("rest")
        with autocast(self.device, self.weight_dtype):  # accelerate's wrapper of the prepared text encoder
            pooled = self.encoder(self.clip_ids.repeat(self.batch_size, 1).to(self.device),
                                  output_hidden_states=False).pooler_output.to(self.weight_dtype)
        prompt_embeds = pipe.text_encoder_2(self.t5_ids.repeat(self.batch_size, 1).to(self.device))[0]
        prompt_embeds = prompt_embeds.to(self.weight_dtype)
        text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=self.device, dtype=self.weight_dtype)
        latents = vae.encode(batch.to(vae.dtype)).latent_dist.sample()
        latents = ((latents - vae.config.shift_factor) * vae.config.scaling_factor).to(self.weight_dtype)
        clock.mark("VAE encode")
        batch_size, channels, height, width = latents.shape
        image_ids = FluxPipeline._prepare_latent_image_ids(batch_size, height // 2, width // 2, self.device,
                                                           self.weight_dtype)
        noise = torch.randn_like(latents)
        indices = (torch.rand(batch_size) * self.noise_scheduler.config.num_train_timesteps).long()
        timesteps = self.noise_scheduler.timesteps[indices].to(self.device)
        sigmas = self.sigmas(timesteps, latents.ndim)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        packed = FluxPipeline._pack_latents(noisy, batch_size, channels, height, width)
        guidance = torch.tensor([GUIDANCE], device=self.device).expand(batch_size)
        with autocast(self.device, self.weight_dtype):
            prediction = pipe.transformer(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                                          pooled_projections=pooled, encoder_hidden_states=prompt_embeds,
                                          txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        prediction = FluxPipeline._unpack_latents(prediction, height * scale, width * scale, scale)
        target = noise - latents
        loss = ((prediction.float() - target.float()) ** 2).reshape(batch_size, -1).mean(1).mean()
        clock.mark("rest")
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        clock.mark("backward")
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), MAX_GRAD_NORM)
        optimizer_step(self.optimizer, self.scaler)
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        with torch.no_grad():  # retract_embeddings
            weight = self.embedding.weight
            weight.data[self.index_no_updates] = self.original[self.index_no_updates]
            new_rows = weight.data[~self.index_no_updates]
            weight.data[~self.index_no_updates] = new_rows * (self.std / new_rows.std()) ** 0.1
        clock.mark("optimizer")
        value = loss.detach().item()  # their progress bar's loss
        clock.mark("rest")
        return value
