"""Can the frozen UNet draw a concept at all? Optimise its conditioning directly, with no text encoder.

Textual Inversion can only reach the conditionings that the text encoder outputs for some input
vectors. This script skips the encoder: it optimises the whole 77-token conditioning on the concept's
images with the same diffusion loss, then lets the judge read what the UNet draws from it. If this
ceiling is high and TI stays low, the text encoder is the bottleneck, not the UNet.

    python -m benchmarks.conditioning_ceiling [--concept hidden-colour] [--steps 400] [--start "a circle"]
"""

from __future__ import annotations

import collections

import torch

from .common import argument_parser, bundled_concept


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--concept", default="hidden-colour")
    parser.add_argument("--start", default="a circle", help="prompt whose conditioning the optimisation starts from")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="judge the images every N steps")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from diffusers import DDPMScheduler

    from textual_inversion.data import list_images, load_rgb
    from textual_inversion.images import to_tensor
    from textual_inversion.miniworld.judge import load_judge, predict
    from textual_inversion.models import load_pipeline

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    folder, spec = bundled_concept(args.concept)
    pipe = load_pipeline("miniworld")
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.requires_grad_(False)
    judge = load_judge()
    pixels = to_tensor([load_rgb(p) for p in list_images(folder)])
    pixels = torch.cat([pixels, pixels.flip(3)])
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        start = pipe.encode_prompt(args.start, "cpu", 1, False)[0]
    conditioning = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([conditioning], lr=args.lr)

    print(f"{spec.token}: judge's hits on {sorted(spec.attributes.items())}, {args.num_images} images per check")
    for step in range(1, args.steps + 1):
        rows = torch.randint(len(latents), (args.batch_size,))
        clean, noise = latents[rows], torch.randn_like(latents[rows])
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch_size,))
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        target = noise_scheduler.get_velocity(clean, noise, timesteps)
        prediction = pipe.unet(noisy, timesteps, conditioning.expand(args.batch_size, -1, -1)).sample
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            generators = [torch.Generator().manual_seed(100 + i) for i in range(args.num_images)]
            with torch.no_grad():
                images = pipe(prompt_embeds=conditioning.detach(), num_inference_steps=25, guidance_scale=4.0,
                              num_images_per_prompt=args.num_images, generator=generators).images
            predictions = predict(images, judge)
            hits = sum(all(p[k] == v for k, v in spec.attributes.items()) for p in predictions) / len(predictions)
            colours = collections.Counter(p["colour"] for p in predictions)
            print(f"step {step}: loss {loss.item():.4f}, concept shown in {hits:.2f} of the images; colours {dict(colours)}",
                  flush=True)


if __name__ == "__main__":
    main()
