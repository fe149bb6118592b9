"""Tiny random Stable Diffusion pipelines built from configs, for tests and benchmarks.

They have the real architectures (CLIP text encoders of the real widths, so family detection and
embedding files behave as with real models) but one layer each and a byte-level tokenizer, so they
build in seconds on a CPU with no download.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2/CLIP's byte -> character table

from .formats import FAMILY_OF_WIDTH

TEXT_WIDTHS = {family: width for width, family in FAMILY_OF_WIDTH.items()}
WORDS = ("a", "photo", "of", "the", "cat", "dog", "on", "beach", "in", "style", "painting", "toy", "red", "blue")


def write_tokenizer(folder: Path, words: tuple[str, ...] = WORDS, max_length: int = 77) -> CLIPTokenizer:
    """A CLIP BPE tokenizer: every byte (so any text tokenizes) plus merges that make `words` single tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
                if merged not in vocab:
                    vocab.append(merged)
            pieces = [merged] + pieces[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def text_encoder(tokenizer: CLIPTokenizer, width: int, with_projection: bool = False):
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def vae() -> AutoencoderKL:
    return AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                         norm_num_groups=8, sample_size=32)


def unet(cross_attention_dim: int, sdxl: bool = False) -> UNet2DConditionModel:
    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 32) if sdxl else {}
    return UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_attention_dim,
                                attention_head_dim=8, norm_num_groups=8, **extra)


def build_tiny_pipeline(family: str, folder: str | Path, seed: int = 0):
    """Write a tiny random `family` ('sd1', 'sd2', 'sdxl') pipeline to `folder` and return it."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = write_tokenizer(folder / "_tokenizer_build")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="v_prediction" if family == "sd2" else "epsilon")
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(vae=vae(), text_encoder=text_encoder(tokenizer, 768),
                                         text_encoder_2=text_encoder(tokenizer, 1280, with_projection=True),
                                         tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet(768 + 1280, sdxl=True),
                                         scheduler=scheduler)
    else:
        width = TEXT_WIDTHS[family]
        pipe = StableDiffusionPipeline(vae=vae(), text_encoder=text_encoder(tokenizer, width), tokenizer=tokenizer,
                                       unet=unet(width), scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random CLIPModel + CLIPProcessor folder (for CLIP-I/CLIP-T code paths)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = write_tokenizer(folder / "_tokenizer_build")
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                                         num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id),
                        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=32, patch_size=8),
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_dino(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random DINOv2 ViT + image processor folder (for the DINO score's code path)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                             image_size=32, patch_size=8)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
