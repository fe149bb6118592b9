"""Their step: the training step of diffusers' Textual Inversion examples, re-implemented for
`benchmarks/real_scale.py` to time beside ours.

Mirrors examples/textual_inversion/textual_inversion.py and textual_inversion_sdxl.py of diffusers main
(0.40.0.dev0, commit 58eb52c; the scripts' step has been the same since 0.2x), with their defaults: every step
the picture batch goes through the VAE (`latent_dist.sample()` times the scaling factor), the text encoder
runs with its whole token-embedding matrix trainable (AdamW over the matrix, betas 0.9/0.999, weight decay 1e-2,
eps 1e-8; every other text-encoder weight frozen), and after the optimizer step every row except the new
token's is copied back from a saved copy ("index_no_updates"). The VAE and UNet are cast to the weight dtype;
the trained text encoder stays in fp32 under autocast (accelerate's `prepare` wraps its forward), except SDXL's
second one, which the SDXL script casts to the weight dtype too.

Left out, as not part of a step's cost: reading the picture files (the dataset's `Image.open`; here the
decoded pictures are kept in memory, the rest of its `__getitem__` runs every step), checkpoints, validation.
Deviation: with fp16 an SDXL run keeps text_encoder_2's trainable matrix in fp32, since the gradient scaler
refuses fp16 gradients (the script as written stops there).
"""

from __future__ import annotations

import contextlib
import copy
import random

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from PIL import Image

from textual_inversion.templates import TEMPLATES


def autocast(device: torch.device, weight_dtype: torch.dtype):
    """Autocast to the weight dtype, as accelerate does under mixed precision; nothing in fp32."""
    if weight_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=weight_dtype)


def optimizer_step(optimizer, scaler) -> None:
    """The optimizer's step, through the gradient scaler under fp16 (as accelerate's optimizer wrapper does)."""
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


def plain_embedding(encoder) -> torch.nn.Embedding:
    """The encoder's token embedding, under our PlaceholderEmbedding wrapper if one is attached."""
    embedding = encoder.get_input_embeddings()
    return getattr(embedding, "base", embedding)


def grown_matrix(encoder, tokenizer, token: str, init_token: str, dtype: torch.dtype) -> tuple[torch.nn.Embedding, int]:
    """`token` added to `tokenizer`, and the trainable matrix their scripts give the encoder for it, in `dtype`:
    what `resize_token_embeddings(len(tokenizer))` and their initialisation from `init_token` give, as a module of its
    own, so that our wrapped embedding stays intact beside it. Returns it and the token's id."""
    tokenizer.add_tokens([token])  # their check that it is new is left out: our step may have added it
    init_id = tokenizer.encode(init_token, add_special_tokens=False)[0]
    base = plain_embedding(encoder).weight.detach()
    rows = torch.cat([base, base[[init_id] * (len(tokenizer) - base.shape[0])]])
    embedding = torch.nn.Embedding.from_pretrained(rows.to(dtype).clone(), freeze=False)
    return embedding, tokenizer.convert_tokens_to_ids(token)


class DiffusersExampleStep:
    """Their step on `pipe`; `shares_pipe` when our step trains on the same modules in this process."""

    name = "theirs"

    def __init__(self, pipe, token: str, init_token: str, pictures: list[Image.Image], resolution: int,
                 batch_size: int, device: torch.device, weight_dtype: torch.dtype, lr: float, shares_pipe: bool):
        self.pipe, self.token, self.pictures = pipe, token, pictures
        self.resolution, self.batch_size, self.device, self.weight_dtype = resolution, batch_size, device, weight_dtype
        self.sdxl = hasattr(pipe, "text_encoder_2")
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if self.sdxl else [])
        # Dtypes as in their scripts: the trained text encoder in fp32; SDXL's second one in the weight dtype.
        train_dtypes = [torch.float32] + ([weight_dtype] if self.sdxl else [])
        self.encoders, self.embeddings, self.placeholder_ids, self.saved_rows = [], [], [], []
        for index, (tokenizer, dtype) in enumerate(zip(self.tokenizers, train_dtypes, strict=True)):
            encoder = pipe.text_encoder_2 if index else pipe.text_encoder
            if not shares_pipe:
                encoder.to(device, dtype)
            elif plain_embedding(encoder).weight.dtype != dtype:  # (our fp32 rows would answer `encoder.dtype`)
                # Our step uses the pipeline's encoder in another dtype; a shared one is left as it is, since
                # casting it would cast our rows too.
                encoder = copy.deepcopy(encoder).to(device, dtype)
            matrix_dtype = torch.float32 if weight_dtype == torch.float16 else dtype  # see the module docstring
            embedding, placeholder_id = grown_matrix(encoder, tokenizer, token, init_token, matrix_dtype)
            self.encoders.append(encoder)
            self.embeddings.append(embedding)
            self.placeholder_ids.append(placeholder_id)
        pipe.unet.to(device, weight_dtype)
        pipe.vae.to(device, weight_dtype)
        parameters = [embedding.weight for embedding in self.embeddings]
        self.optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.lr_scheduler = get_scheduler("constant", optimizer=self.optimizer)
        # "keep original embeddings as reference"
        self.saved_rows = [embedding.weight.data.clone() for embedding in self.embeddings]
        self.scaler = torch.amp.GradScaler(device.type) if weight_dtype == torch.float16 else None
        self.templates = TEMPLATES["object"]

    def activate(self) -> None:
        """Put their trainable matrices into the encoders, and the encoders into their training state."""
        for encoder, embedding in zip(self.encoders, self.embeddings, strict=True):
            encoder.set_input_embeddings(embedding)
            encoder.train()
            # They freeze the encoder layers, final norm and position embedding only: SDXL's projection
            # keeps requires_grad (its gradient is computed, never used).
            if hasattr(encoder, "text_projection"):
                encoder.text_projection.requires_grad_(True)

    def modules(self) -> list:
        """The modules whose forward passes the phase clock times: (module, phase)."""
        return [(encoder, "text encoder") for encoder in self.encoders] + [(self.pipe.unet, "UNet forward")]

    def example(self, picture: Image.Image) -> dict:
        """Their dataset's `__getitem__` on a decoded picture: caption ids, resized flipped pixels in [-1, 1]."""
        text = random.choice(self.templates).format(self.token)
        example = {f"input_ids_{i}": tokenizer(text, padding="max_length", truncation=True,
                                                max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]
                   for i, tokenizer in enumerate(self.tokenizers)}
        example["original_size"] = (picture.height, picture.width)
        image = Image.fromarray(np.array(picture.convert("RGB")).astype(np.uint8))
        image = image.resize((self.resolution, self.resolution), resample=Image.Resampling.BICUBIC)
        if random.random() < 0.5:  # RandomHorizontalFlip(p=0.5)
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        example["crop_top_left"] = (0, 0)  # a resolution-sized random crop of the resized picture
        pixels = (np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        example["pixel_values"] = torch.from_numpy(pixels).permute(2, 0, 1)
        return example

    def step(self, clock) -> float:
        """One optimizer step; `clock.mark(phase)` closes each phase. Returns the loss."""
        examples = [self.example(random.choice(self.pictures)) for _ in range(self.batch_size)]
        pixel_values = torch.stack([e["pixel_values"] for e in examples]).to(self.device)
        ids = [torch.stack([e[f"input_ids_{i}"] for e in examples]).to(self.device) for i in range(len(self.encoders))]
        clock.mark("rest")
        latents = self.pipe.vae.encode(pixel_values.to(dtype=self.weight_dtype)).latent_dist.sample().detach()
        latents = latents * self.pipe.vae.config.scaling_factor
        clock.mark("VAE encode")
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device).long()
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with autocast(self.device, self.weight_dtype):  # accelerate's wrapper of the prepared text encoders
            if self.sdxl:
                hidden_1 = self.encoders[0](ids[0], output_hidden_states=True).hidden_states[-2].to(self.weight_dtype)
                output_2 = self.encoders[1](ids[1], output_hidden_states=True)
                hidden_2 = output_2.hidden_states[-2].to(self.weight_dtype)
            else:
                encoder_hidden_states = self.encoders[0](ids[0])[0].to(dtype=self.weight_dtype)
        added_cond_kwargs = None
        if self.sdxl:
            target_size = (self.resolution, self.resolution)
            add_time_ids = torch.cat([torch.tensor(e["original_size"] + e["crop_top_left"] + target_size)
                                      for e in examples]).to(self.device, dtype=self.weight_dtype)
            added_cond_kwargs = {"text_embeds": output_2[0], "time_ids": add_time_ids}
            encoder_hidden_states = torch.cat([hidden_1, hidden_2], dim=-1)
        model_pred = self.pipe.unet(noisy_latents, timesteps, encoder_hidden_states,
                                    added_cond_kwargs=added_cond_kwargs).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        clock.mark("rest")
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        clock.mark("backward")
        optimizer_step(self.optimizer, self.scaler)
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        # "Let's make sure we don't update any embedding weights besides the newly added token"
        with torch.no_grad():
            for tokenizer, embedding, saved, placeholder_id in zip(self.tokenizers, self.embeddings, self.saved_rows,
                                                                   self.placeholder_ids, strict=True):
                index_no_updates = torch.ones((len(tokenizer),), dtype=torch.bool)
                index_no_updates[placeholder_id:placeholder_id + 1] = False
                embedding.weight[index_no_updates] = saved[index_no_updates]
        clock.mark("optimizer")
        value = loss.detach().item()  # their progress bar's loss
        clock.mark("rest")
        return value
