"""Train the miniworld text-to-image model from scratch and save it as a diffusers pipeline.

    python -m textual_inversion.miniworld.build [--output DIR] [--seed N] [--threads N]

Stages:
1. VAE on freshly rendered images (all shapes, star included: the VAE is a
   generic image codec and must be able to encode images of new concepts).
2. Render a base-training set (no star; teal never named) and cache its latents.
3. UNet + text encoder jointly, v-prediction, 10% empty captions for CFG, EMA.
4. Refine the VAE decoder with the encoder frozen (sharper edges and patterns;
   the latent space the UNet learned does not change).
5. Optional, alone on a built pipeline (``--only-refine-encoder STEPS``): the encoder
   learns with the decoder frozen, for the small shapes whose points it loses.

``--continue-from DIR`` trains an existing pipeline's UNet and text encoder further
instead (stage 3 only, on freshly rendered scenes, with its VAE and latent scale kept):
a longer build in two parts. ``--full-resolution-attention`` gives the UNet cross-attention
in its 16x16 blocks too (added to a loaded UNet as a no-op that training then moves).

The pipeline is exported (fp16 safetensors) every ``--save-every`` steps, so a
usable model exists even if the run is stopped early. At the default step counts
the whole build took 79.5 min on two CPU cores (benchmarks/results/miniworld_base_build.md).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic import replaced_folder
from ..images import to_tensor
from . import MODEL_DIR
from .architecture import (
    make_sample_scheduler,
    make_text_encoder,
    make_train_scheduler,
    make_unet,
    make_vae,
    n_params,
    with_full_resolution_attention,
)
from .captions import DROP_PROB, caption
from .tokenizer import save_tokenizer
from .world import HIDDEN_COLOUR_PROB, IMAGE_SIZE, PATTERNS, SHAPES, random_scene, render, shape_mask

log = logging.getLogger(__name__)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_vae(steps: int, batch: int, rng: random.Random, lr: float = 2e-3):
    """Stage 1: reconstruction (L1 + MSE) with a tiny KL term to keep latents tame."""
    vae = make_vae()
    # Start with a near-deterministic posterior (std ~0.02): from the default std ~1 a
    # small VAE spends thousands of steps learning to out-shout its own sampling noise,
    # and colours come out washed out. The weak KL term keeps the std small but non-zero.
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.latent_channels :].fill_(-8.0)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    bar = tqdm(range(steps), desc="vae", mininterval=10)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, 50)
        x = to_tensor([render(random_scene(rng, shapes=SHAPES)) for _ in range(batch)])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    vae = vae.eval().requires_grad_(False)
    log.info("vae reconstruction PSNR %.2f dB", vae_psnr(vae, rng))
    return vae


def vae_psnr(vae, rng: random.Random, n: int = 64) -> float:
    """Reconstruction PSNR (dB) on ``n`` fresh renders, for the log."""
    with torch.no_grad():
        x = to_tensor([render(random_scene(rng, shapes=SHAPES)) for _ in range(n)])
        mse = F.mse_loss(vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1), x).item()
    return 10 * math.log10(4.0 / mse)


def load_vae(model_dir: Path):
    """The pipeline's VAE in float32, for a refinement stage."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(model_dir), subfolder="vae", torch_dtype=torch.float32)


def save_vae(vae, model_dir: Path) -> None:
    """Rewrite ``model_dir/vae`` with ``vae`` in fp16, in one step (the folder is replaced only once it is whole)."""
    vae.eval().requires_grad_(False)
    with replaced_folder(model_dir / "vae") as staging:
        vae.half().save_pretrained(str(staging), safe_serialization=True)
        cfg_path = staging / "config.json"  # drop the local load path diffusers records
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("_name_or_path", None)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def refine_decoder(model_dir: Path, steps: int, batch: int, seed: int, lr: float = 5e-4) -> None:
    """Stage 4: sharpen the VAE decoder with the encoder frozen, then rewrite ``vae/``.

    The encoder (hence the latent space the UNet learned) is untouched, so this can
    run after, or alongside, UNet training. It reads the exported fp16 VAE and uses
    its own seeded RNGs, so a split run and a full build give identical weights.
    """
    vae = load_vae(model_dir)
    vae.requires_grad_(False).decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng, g = random.Random(seed + 1), torch.Generator().manual_seed(seed + 1)
    log.info("decoder refinement: PSNR before %.2f dB", vae_psnr(vae, random.Random(seed + 2)))
    bar = tqdm(range(steps), desc="decoder", mininterval=10)
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, lr, 20)
        x = to_tensor([render(random_scene(rng, shapes=SHAPES)) for _ in range(batch)])
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    vae.eval().requires_grad_(False)
    log.info("decoder refinement: PSNR after %.2f dB", vae_psnr(vae, random.Random(seed + 2)))
    save_vae(vae, model_dir)


def shape_weights(scenes, weight: float) -> torch.Tensor:
    """[B, 1, 64, 64]: 1 + ``weight`` on each scene's shape, 1 elsewhere."""
    masks = [shape_mask(s.shape, s.x, s.y, s.radius, IMAGE_SIZE) for s in scenes]
    return 1 + weight * torch.stack([torch.from_numpy(np.asarray(m, dtype=np.float32) / 255) for m in masks])[:, None]


# Where the encoder loses a shape's points: small shapes on the light backgrounds (benchmarks/vae_shapes.py).
LOSSY_SCENES = {"sizes": ("small",), "backgrounds": ("sand", "grey")}


def refine_encoder(model_dir: Path, steps: int, batch: int, seed: int, lr: float = 1e-3, anchor: float = 0.1,
                   shape_weight: float = 8.0, lossy_share: float = 0.5) -> None:
    """Stage 5 (optional, on a built pipeline): teach the encoder what the decoder can draw, then rewrite ``vae/``.

    The encoder turns a small star on a light background into a latent that decodes as a dot, though the decoder
    draws the star from a latent moved to fit the picture (benchmarks/vae_shapes.py --refine). Here the encoder
    learns the decoder's inverse with the decoder frozen, ``lossy_share`` of each batch a small shape on a light
    background, the shape's pixels weighted ``1 + shape_weight``, and its means held near the encoder's own
    (``anchor`` on their squared drift in units of the latents' variance), because the UNet learned that latent
    space. Nothing the pipeline generates with changes (the UNet, text encoder and decoder are untouched); only the
    latents of pictures a method trains on. No build runs it: it kept fewer than half the small stars on sand and
    grey (docs/subjects.md), where refining each picture's latent (`train --refine-latents`) keeps them.
    """
    vae = load_vae(model_dir)
    before = copy.deepcopy(vae).eval().requires_grad_(False)
    vae.requires_grad_(False)
    vae.encoder.requires_grad_(True)
    vae.quant_conv.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = random.Random(seed + 3)
    log.info("encoder refinement: PSNR before %.2f dB", vae_psnr(vae, random.Random(seed + 2)))
    lossy = round(lossy_share * batch)
    bar = tqdm(range(steps), desc="encoder", mininterval=10)
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, lr, 20)
        scenes = ([random_scene(rng, shapes=SHAPES, **LOSSY_SCENES) for _ in range(lossy)]
                  + [random_scene(rng, shapes=SHAPES) for _ in range(batch - lossy)])
        x = to_tensor([render(s) for s in scenes])
        w = shape_weights(scenes, shape_weight)
        with torch.no_grad():
            target = before.encode(x).latent_dist.mean
        mean = vae.encode(x).latent_dist.mean
        err = vae.decode(mean).sample - x
        drift = relative_drift(mean, target)
        loss = (w * err.abs()).mean() + (w * err.square()).mean() + anchor * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", drift=f"{drift.item():.4f}", refresh=False)
    vae.eval().requires_grad_(False)
    log.info("encoder refinement: PSNR after %.2f dB, drift %.4f of the latents' variance",
             vae_psnr(vae, random.Random(seed + 2)), latent_drift(vae, before, random.Random(seed + 4)))
    save_vae(vae, model_dir)


def relative_drift(means: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Mean squared change of latent means from ``before``, in units of ``before``'s variance."""
    return F.mse_loss(means, before) / before.var()


def latent_drift(vae, before, rng: random.Random, n: int = 64) -> float:
    """``relative_drift`` of the encoder's means from ``before``'s on ``n`` fresh renders."""
    with torch.no_grad():
        x = to_tensor([render(random_scene(rng, shapes=SHAPES)) for _ in range(n)])
        return relative_drift(vae.encode(x).latent_dist.mean, before.encode(x).latent_dist.mean).item()


# Where pattern twins train: the noisiest tenth of the timesteps. Below it the shipped UNet reads the pattern off
# the noisy latent (its x0 prediction goes about half way from the two patterns' midpoint to the true one at
# t = 900, all the way by t = 700), so the word has nothing to add there; above it min-SNR weighting gives the
# loss almost no weight (zero at t = 999). On the shipped model striped and checkered came out of one seed alike
# whichever was asked for (benchmarks/results/pattern_binding.md).
TWIN_TIMESTEPS = (900, 1000)


@torch.no_grad()
def cache_latents(vae, n: int, rng: random.Random, batch: int = 256, twins: bool = False,
                  hidden_colour_prob: float = HIDDEN_COLOUR_PROB):
    """Stage 2: render ``n`` base-training scenes; keep their latent means/stds and scenes.

    `twins`: also render the first half of them with another pattern each, appended after the ``n``.
    `hidden_colour_prob`: the share of scenes in the hidden colour (never named in a caption)."""
    scenes = [random_scene(rng, hidden_colour_prob=hidden_colour_prob) for _ in range(n)]
    if twins:
        scenes += [dataclasses.replace(s, pattern=rng.choice([p for p in PATTERNS if p != s.pattern]))
                   for s in scenes[: n // 2]]
    means, stds = [], []
    for i in tqdm(range(0, len(scenes), batch), desc="latents", mininterval=10):
        post = vae.encode(to_tensor([render(s) for s in scenes[i : i + batch]])).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return scenes, torch.cat(means), torch.cat(stds)


def twin_index(scenes) -> torch.Tensor:
    """For each scene, the index of its twin (the same scene with another pattern), or -1."""
    alike: dict[tuple, list[int]] = {}
    for i, s in enumerate(scenes):
        alike.setdefault((s.shape, s.colour, s.background, s.size, s.x, s.y, s.radius), []).append(i)
    twin = [-1] * len(scenes)
    for members in alike.values():
        if len(members) == 2:
            twin[members[0]], twin[members[1]] = members[1], members[0]
    return torch.tensor(twin)


def draw_batch(scenes, means, stds, scale: float, batch_size: int, caption_dropout: float, timesteps: int,
               g: torch.Generator, rng: random.Random, pairs: int = 0, twin: torch.Tensor | None = None):
    """One UNet batch: (latents z0 [B, 4, 16, 16], captions, timesteps [B], noise [B, 4, 16, 16]).

    `pairs` > 0: the first 2 * pairs places hold twins (`twin`: twin_index(scenes)), with the same noise and
    timestep (in TWIN_TIMESTEPS), captioned from the same random draws, so that their words differ where their
    patterns do and only the words tell their targets apart."""
    idx = torch.randint(0, len(scenes), (batch_size,), generator=g)
    if pairs:
        twinned = torch.nonzero(twin >= 0).flatten()
        firsts = twinned[torch.randint(0, len(twinned), (pairs,), generator=g)]
        idx[0 : 2 * pairs : 2], idx[1 : 2 * pairs : 2] = firsts, twin[firsts]
    z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scale
    texts, pair_state = [], None
    for place, i in enumerate(idx.tolist()):
        if place < 2 * pairs and place % 2:  # a twin: its pair's draws again
            draws = random.Random()
            draws.setstate(pair_state)
        else:
            pair_state, draws = rng.getstate(), rng
        texts.append("" if draws.random() < caption_dropout else caption(scenes[i], draws))
    t = torch.randint(0, timesteps, (batch_size,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    if pairs:
        t[0 : 2 * pairs : 2] = torch.randint(*TWIN_TIMESTEPS, (pairs,), generator=g)
        t[1 : 2 * pairs : 2], noise[1 : 2 * pairs : 2] = t[0 : 2 * pairs : 2], noise[0 : 2 * pairs : 2]
    return z0, texts, t, noise


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1.0 - decay)


def export(out: Path, vae, text_encoder, tokenizer, unet, tok_files: Path) -> None:
    """Write a StableDiffusionPipeline folder with fp16 safetensors weights."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).half(),
        text_encoder=copy.deepcopy(text_encoder).half(),
        tokenizer=tokenizer,
        unet=copy.deepcopy(unet).half(),
        scheduler=make_sample_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with replaced_folder(out) as staging:
        pipe.save_pretrained(str(staging), safe_serialization=True)
        # Weights are fp16 on disk, but plain `from_pretrained` should give fp32 modules on CPU;
        # transformers honours the config's dtype, so record float32 there.
        cfg_path = staging / "text_encoder" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["dtype"] = "float32"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        # Keep the classic slow-tokenizer files too (older transformers need them).
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(tok_files / name, staging / "tokenizer" / name)


def train_unet(args, vae, scenes, means, stds, out: Path, rng: random.Random, start=None) -> None:
    """Stage 3: UNet + text encoder with v-prediction, min-SNR weighting, CFG dropout and EMA.

    `start`: (text encoder, UNet) to train further, in the latent scale `vae` records; None: new ones."""
    from transformers import CLIPTokenizer

    tok_dir = out.with_name(out.name + ".tokenizer")
    save_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    if start is None:
        text_encoder = make_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
        unet = make_unet(args.full_resolution_attention)
    else:
        text_encoder, unet = start
    log.info(
        "params: unet %.2fM text %.2fM vae %.2fM",
        n_params(unet) / 1e6,
        n_params(text_encoder) / 1e6,
        n_params(vae) / 1e6,
    )
    ema_unet, ema_text = (
        copy.deepcopy(unet).requires_grad_(False),
        copy.deepcopy(text_encoder).requires_grad_(False),
    )
    sched = make_train_scheduler()
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas).clamp(min=1e-8)
    if start is None:  # latent scale: unit variance for the diffusion model (stored in the VAE config)
        sample = means[:2048] + stds[:2048] * torch.randn_like(means[:2048])
        vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
    scale = vae.config.scaling_factor
    log.info("latent scaling factor %.4f", scale)

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    pairs = int(args.batch_size * args.pattern_twins) // 2
    twin = twin_index(scenes) if pairs else None
    if pairs:
        if not (twin >= 0).any():
            raise SystemExit(f"--pattern-twins {args.pattern_twins}: no scene has a twin among the {len(scenes)} "
                             "rendered; raise --cache-size")
        log.info("%d of %d scenes have a pattern twin; %d twin pairs per batch", int((twin >= 0).sum()), len(scenes),
                 pairs)
    twin_loss_sum = loss_sum = 0.0
    bar = tqdm(range(args.unet_steps), desc="unet", mininterval=10)
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, args.unet_steps, args.lr, args.warmup)
        z0, texts, t, noise = draw_batch(scenes, means, stds, scale, args.batch_size, args.caption_dropout,
                                         sched.config.num_train_timesteps, g, rng, pairs, twin)
        ids = tokenizer(
            texts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        zt = sched.add_noise(z0, noise, t)
        target = sched.get_velocity(z0, noise, t)
        pred = unet(zt, t, text_encoder(ids)[0]).sample
        # Min-SNR-5 weighting (v-prediction form) speeds up convergence a lot at small step counts. Twins weigh
        # their x0 error by 1 instead of by their tiny SNR: at t = 999 the word is all the UNet has to go on.
        w = snr[t].clamp(max=5.0) / (snr[t] + 1)
        w[: 2 * pairs] = args.twin_weight / (snr[t[: 2 * pairs]] + 1)
        w = w.view(-1, 1, 1, 1)
        weighted_error = w * (pred - target) ** 2
        loss = weighted_error.mean()
        if pairs:
            per_image = weighted_error.detach().mean(dim=(1, 2, 3))
            twin_loss_sum += float(per_image[: 2 * pairs].sum())
            loss_sum += float(per_image.sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text_encoder, decay)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if (step + 1) % args.save_every == 0 or step + 1 == args.unet_steps:
            export(out, vae, ema_text, tokenizer, ema_unet, tok_dir)
            log.info("exported step %d to %s", step + 1, out)
            if pairs:  # the twins' part of the weighted loss: a rough gauge of their part of the clipped gradient
                log.info("twins: %.0f %% of the batch, %.0f %% of the weighted loss since the last export",
                         100 * 2 * pairs / args.batch_size, 100 * twin_loss_sum / max(loss_sum, 1e-12))
                twin_loss_sum = loss_sum = 0.0
    shutil.rmtree(tok_dir, ignore_errors=True)


def continue_build(args, out: Path, rng: random.Random) -> None:
    """Train --continue-from's UNet and text encoder for --unet-steps more steps on scenes rendered with this seed,
    and export them with its VAE; the EMA starts from the weights it loads."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    source = Path(args.continue_from)
    if not (source / "unet").is_dir() or not (source / "text_encoder").is_dir():
        raise SystemExit(f"--continue-from {source}: no unet/ and text_encoder/ there; give a miniworld pipeline folder")
    t0 = time.time()
    vae = AutoencoderKL.from_pretrained(str(source), subfolder="vae", torch_dtype=torch.float32).eval()
    vae.requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(str(source), subfolder="text_encoder", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(str(source), subfolder="unet", torch_dtype=torch.float32)
    if args.full_resolution_attention and unet.config.down_block_types[0] != "CrossAttnDownBlock2D":
        unet = with_full_resolution_attention(unet)
    scenes, means, stds = cache_latents(vae, args.cache_size, rng, twins=args.pattern_twins > 0,
                                       hidden_colour_prob=args.hidden_colour_prob)
    t1 = time.time()
    log.info("stage latents: %.1f s", t1 - t0)
    train_unet(args, vae, scenes, means, stds, out, rng, start=(text_encoder.train(), unet.train()))
    t2 = time.time()
    log.info("stage unet+text: %.1f s; total %.1f s", t2 - t1, t2 - t0)
    print(f"wrote {out} in {(t2 - t0) / 60:.1f} min")


def hidden_share(hidden_colour_prob: float) -> float:
    """The share of base-training scenes captioned without a colour word that show the hidden colour."""
    dropped = (1 - hidden_colour_prob) * DROP_PROB["colour"]
    return hidden_colour_prob / (hidden_colour_prob + dropped)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=str(MODEL_DIR), help="pipeline folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--cache-size", type=int, default=20000, help="pre-rendered base-training images")
    p.add_argument("--unet-steps", type=int, default=5500)
    p.add_argument("--pattern-twins", type=float, default=0.0,
                   help="share of each UNet batch given to pairs of scenes alike but for the pattern, with the "
                        "same noise and a timestep among the noisiest tenth, so that only the words tell their "
                        "targets apart (half of --cache-size is rendered a second time, with another pattern)")
    p.add_argument("--twin-weight", type=float, default=1.0,
                   help="scale on the twins' loss (x0 error weighted 1 at weight 1): below 1 the twins take a "
                        "smaller part of each step's clipped gradient, leaving more to colours and shapes")
    p.add_argument("--hidden-colour-prob", type=float, default=HIDDEN_COLOUR_PROB,
                   help="share of the rendered scenes in the hidden colour, which no caption names. A caption "
                        "without a colour word shows it hidden / (hidden + (1 - hidden) x d) of the time, d the "
                        f"chance a named colour's word is dropped ({DROP_PROB['colour']}): at {HIDDEN_COLOUR_PROB} "
                        f"{100 * hidden_share(HIDDEN_COLOUR_PROB):.0f} %%, so a model that fits its data draws 'a circle' in "
                        "the hidden colour that often; lower keeps the colour more hidden")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=200, help="UNet steps of linear learning-rate warm-up")
    p.add_argument("--continue-from", help="a miniworld pipeline folder whose UNet and text encoder train further "
                   "(stage 3 alone, --unet-steps more steps on new scenes; its VAE is kept)")
    p.add_argument("--full-resolution-attention", action="store_true",
                   help="cross-attention in the UNet's 16x16 blocks too (with --continue-from: added to the loaded "
                   "UNet, starting as a no-op)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--decoder-steps", type=int, default=1500, help="stage 4: decoder-only refinement")
    p.add_argument("--only-refine-encoder", type=int, metavar="STEPS", default=0,
                   help="stage 5 alone, on an existing --output folder: the encoder learns for STEPS steps to give "
                        "latents the frozen decoder draws back, small shapes weighted (its means held near the "
                        "encoder's own); rewrites vae/. Not part of a build")
    p.add_argument(
        "--only-refine-decoder",
        action="store_true",
        help="run stage 4 alone on an existing --output folder (e.g. alongside UNet training on a copy)",
    )
    args = p.parse_args(argv)
    if not 0 < args.hidden_colour_prob < 1:
        p.error(f"--hidden-colour-prob {args.hidden_colour_prob}: give a share between 0 and 1 (default "
                f"{HIDDEN_COLOUR_PROB}); at 0 no scene shows the colour that textual inversion is meant to find")
    if args.only_refine_encoder < 0:
        p.error(f"--only-refine-encoder {args.only_refine_encoder}: give a number of steps above 0 (e.g. 1500)")
    if args.twin_weight <= 0:
        p.error(f"--twin-weight {args.twin_weight}: give a weight above 0 (1 keeps the twins' x0 error as it is)")
    if args.twin_weight != 1 and not args.pattern_twins:
        p.error("--twin-weight only scales pattern twins' loss; give --pattern-twins too (e.g. 0.25)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("args: %s", vars(args))
    if args.only_refine_encoder:
        t0 = time.time()
        refine_encoder(out, args.only_refine_encoder, args.vae_batch, args.seed)
        log.info("stage encoder: %.1f s", time.time() - t0)
        return
    if args.only_refine_decoder:
        t0 = time.time()
        refine_decoder(out, args.decoder_steps, args.vae_batch, args.seed)
        log.info("stage decoder: %.1f s", time.time() - t0)
        return

    if args.continue_from:
        continue_build(args, out, rng)
        return
    t0 = time.time()
    vae = train_vae(args.vae_steps, args.vae_batch, rng)
    t1 = time.time()
    log.info("stage vae: %.1f s", t1 - t0)
    scenes, means, stds = cache_latents(vae, args.cache_size, rng, twins=args.pattern_twins > 0,
                                       hidden_colour_prob=args.hidden_colour_prob)
    t2 = time.time()
    log.info("stage latents: %.1f s", t2 - t1)
    train_unet(args, vae, scenes, means, stds, out, rng)
    t3 = time.time()
    log.info("stage unet+text: %.1f s", t3 - t2)
    refine_decoder(out, args.decoder_steps, args.vae_batch, args.seed)
    t4 = time.time()
    log.info("stage decoder: %.1f s; total %.1f s", t4 - t3, t4 - t0)
    print(f"wrote {out} in {(t4 - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
