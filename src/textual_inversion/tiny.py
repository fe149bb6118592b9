"""Tiny random diffusion pipelines built from configs, for tests and benchmarks.

They have the real architectures (text encoders of the real widths, so family detection and
embedding files behave as with real models) but one or two layers each and tokenizers built here
(byte-level BPE for CLIP and Qwen, a character Unigram for T5), so they build in seconds on a CPU
with no download. Families: 'sd1', 'sd2', 'sdxl' (UNet + DDIM) and 'flux', 'sd3', 'z-image'
(transformer + flow matching).
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    Qwen2Tokenizer,
    Qwen3Config,
    Qwen3Model,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2/CLIP's byte -> character table

from .errors import UserError
from .formats import FAMILY_OF_WIDTH

TEXT_WIDTHS = {family: width for width, family in FAMILY_OF_WIDTH.items()}
WORDS = ("a", "photo", "of", "the", "cat", "dog", "on", "beach", "in", "style", "painting", "toy", "red", "blue")

# The real widths, kept because embedding files and family checks key on them (and SD3 zero-pads the
# 768 + 1280 = 2048 wide CLIP features up to the T5 width, so T5 must be at least 2048 wide anyway).
T5_WIDTH = 4096  # T5-XXL's d_model (Flux and SD3 text_encoder_2 / text_encoder_3)
QWEN_WIDTH = 2560  # Qwen3-4B's hidden size (Z-Image's text encoder, and its transformer's cap_feat_dim)
# Width of every text encoder of each family, by pipeline component name.
ENCODER_WIDTHS = {
    "sd1": {"text_encoder": 768},
    "sd2": {"text_encoder": 1024},
    "sdxl": {"text_encoder": 768, "text_encoder_2": 1280},
    "flux": {"text_encoder": 768, "text_encoder_2": T5_WIDTH},
    "sd3": {"text_encoder": 768, "text_encoder_2": 1280, "text_encoder_3": T5_WIDTH},
    "z-image": {"text_encoder": QWEN_WIDTH},
}
FAMILIES = tuple(ENCODER_WIDTHS)
LATENT_CHANNELS = 16  # the Flux / SD3 / Z-Image VAEs' latent channels (SD1/SD2/SDXL: 4)
# (shift_factor, scaling_factor) of each family's real VAE; Z-Image uses the Flux VAE.
VAE_FACTORS = {"flux": (0.1159, 0.3611), "sd3": (0.0609, 1.5305), "z-image": (0.1159, 0.3611)}
# Qwen3's chat format for a user turn; enable_thinking=False appends an empty think block as Qwen3 does.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


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


def text_encoder(tokenizer: CLIPTokenizer, width: int, with_projection: bool = False, projection_dim: int = 32):
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=projection_dim,
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


def t5_tokenizer(words: tuple[str, ...] = WORDS) -> T5Tokenizer:
    """A T5 Unigram tokenizer: every printable ASCII character is a piece and so is '▁word' for each of `words`.

    Any ASCII text tokenizes; other characters become <unk>, as with the real T5 vocabulary (which has
    no byte fallback).
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]  # T5's fixed ids: pad 0, eos 1, unk 2
    pieces += [(chr(code), -10.0) for code in range(33, 127)]
    # A whole word scores far above its characters, so the best (Viterbi) split keeps it in one piece.
    pieces += [("▁" + word, -1.0) for word in words]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def bpe_split(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """How BPE with `merges` (best rank first) splits `word`: keep joining the best-ranked adjacent pair."""
    rank = {pair: i for i, pair in enumerate(merges)}
    pieces = list(word)
    while len(pieces) > 1:
        best, i = min((rank.get(pair, len(rank)), i) for i, pair in enumerate(pairwise(pieces)))
        if best == len(rank):
            break
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def qwen_tokenizer(words: tuple[str, ...] = WORDS) -> Qwen2Tokenizer:
    """A Qwen-style byte-level BPE: every byte, merges that make each of `words` (bare and after a space) one
    token, the ChatML special tokens and a Qwen3-like chat template."""
    byte_symbols = bytes_to_unicode()
    vocab, merges = list(byte_symbols.values()), []
    space = byte_symbols[ord(" ")]  # 'Ġ': Qwen's pre-tokenizer keeps a word's leading space on it
    for word in [*words, *(space + word for word in words)]:
        # Start from the split the merges so far give: merges added now rank below them, so they can only
        # join those pieces (a plain left-to-right chain could be pre-empted by another word's merges).
        pieces = bpe_split(word, merges)
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in vocab:
                vocab.append(pieces[0])
    vocab += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Qwen2Tokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=merges, unk_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               extra_special_tokens=["<|im_start|>"], model_max_length=1024)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def t5_encoder(tokenizer: T5Tokenizer) -> T5EncoderModel:
    """A one-layer T5 v1.1 encoder (gated GELU, like T5-XXL) of the real width but with tiny heads and MLP."""
    config = T5Config(vocab_size=len(tokenizer), d_model=T5_WIDTH, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    return T5EncoderModel(config)


def qwen_encoder(tokenizer: Qwen2Tokenizer) -> Qwen3Model:
    """A Qwen3 of the real Z-Image width; two layers, since the pipeline reads hidden_states[-2]."""
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=QWEN_WIDTH, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return Qwen3Model(config)


def flow_vae(family: str) -> AutoencoderKL:
    """The 16-channel VAE of the flow-matching families: no quant convs, the real shift and scaling factors."""
    shift, scale = VAE_FACTORS[family]
    return AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=LATENT_CHANNELS, layers_per_block=1,
                         norm_num_groups=8, sample_size=32, shift_factor=shift, scaling_factor=scale,
                         use_quant_conv=False, use_post_quant_conv=False)


def flux_pipeline(clip_tokenizer: CLIPTokenizer) -> FluxPipeline:
    """Flux-dev's layout: CLIP-L (pooled) + T5 (sequence), a guidance-embedding transformer, dynamic shifting."""
    t5 = t5_tokenizer()
    # Flux packs 2x2 latent patches into the sequence, so the transformer sees 4 * 16 channels.
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=1,
                                         num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                         joint_attention_dim=T5_WIDTH, pooled_projection_dim=768,
                                         guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(scheduler=scheduler, vae=flow_vae("flux"), text_encoder=text_encoder(clip_tokenizer, 768),
                        tokenizer=clip_tokenizer, text_encoder_2=t5_encoder(t5), tokenizer_2=t5, transformer=transformer)


def sd3_pipeline(clip_tokenizer: CLIPTokenizer) -> StableDiffusion3Pipeline:
    """SD3's layout: CLIP-L + CLIP-G (projected, pooled 768 + 1280) and T5; CLIP features are padded to T5's width."""
    t5 = t5_tokenizer()
    # caption_projection_dim must equal the inner width (heads * head dim): text and image share the joint blocks.
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=LATENT_CHANNELS, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=T5_WIDTH,
                                        caption_projection_dim=32, pooled_projection_dim=768 + 1280,
                                        out_channels=LATENT_CHANNELS, pos_embed_max_size=64)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=flow_vae("sd3"),
        text_encoder=text_encoder(clip_tokenizer, 768, with_projection=True, projection_dim=768),
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder(clip_tokenizer, 1280, with_projection=True, projection_dim=1280),
        tokenizer_2=clip_tokenizer, text_encoder_3=t5_encoder(t5), tokenizer_3=t5)


def z_image_pipeline() -> ZImagePipeline:
    """Z-Image's layout: a Qwen3 chat-formatted text encoder, a single-stream transformer, the Flux VAE."""
    tokenizer = qwen_tokenizer()
    # head dim = dim / n_heads = 16 = sum(axes_dims), the RoPE split over (caption/frame, height, width)
    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=LATENT_CHANNELS,
                                           dim=32, n_layers=1, n_refiner_layers=1, n_heads=2, n_kv_heads=2,
                                           cap_feat_dim=QWEN_WIDTH, axes_dims=[4, 6, 6])
    # Z-Image-Turbo's scheduler: a fixed shift (the pipeline passes mu, which only dynamic shifting uses).
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=flow_vae("z-image"),
                          text_encoder=qwen_encoder(tokenizer), tokenizer=tokenizer, transformer=transformer)


def flow_pipeline(family: str, folder: Path):
    """The tiny 'flux', 'sd3' or 'z-image' pipeline (the CLIP tokenizer, where used, is written under `folder`)."""
    if family == "z-image":
        return z_image_pipeline()
    clip_tokenizer = write_tokenizer(folder / "_tokenizer_build")
    return flux_pipeline(clip_tokenizer) if family == "flux" else sd3_pipeline(clip_tokenizer)


def build_tiny_pipeline(family: str, folder: str | Path, seed: int = 0):
    """Write a tiny random `family` (one of FAMILIES) pipeline to `folder` and return it."""
    if family not in FAMILIES:
        raise UserError(f"unknown tiny pipeline family {family!r}: use one of {', '.join(FAMILIES)}")
    folder = Path(folder)
    torch.manual_seed(seed)
    if family in ("flux", "sd3", "z-image"):
        pipe = flow_pipeline(family, folder)
        pipe.save_pretrained(folder, safe_serialization=True)
        return pipe
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
