"""Lightweight DreamBooth (LiDB, HyperDreamBooth §3.2): a rank-1 update with frozen random projections.

Per attention projection W (out x in) of the UNet:

    ΔW = up_aux · up_train · down_train · down_aux
         (out x u) (u x 1)   (1 x d)     (d x in)

`down_aux` and `up_aux` are random orthonormal matrices regenerated from a seed (so a file holds only
the seed), and only `down_train` (d numbers) and `up_train` (u numbers) learn: d + u per layer. The
paper uses d = 100, u = 50; on small layers the dims are clamped to the layer's own widths.

Because ΔW is a product of a column and a row it is exactly a rank-1 LoRA:
lora_A = down_train · down_aux, lora_B = up_aux · up_train (see `as_lora_factors`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError

TARGET_NAMES = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers' LoRA targets in the UNet
# "cross-kv": only where the prompt enters the UNet (cross-attention keys and values, as Custom Diffusion).
# The rest of the UNet never sees the token, so updates there can only memorise the training pictures.
LAYER_SELECTIONS = {"all": ("attn", TARGET_NAMES), "cross-kv": ("attn2", ("to_k", "to_v"))}


@dataclass(frozen=True)
class LayerShape:
    """A target layer and the LiDB dims it gets (clamped to its widths)."""

    name: str
    in_features: int
    out_features: int
    down_dim: int
    up_dim: int


def target_layers(unet: nn.Module, down_dim: int, up_dim: int, selection: str = "all") -> list[LayerShape]:
    """The UNet's attention projections of `selection` (see LAYER_SELECTIONS) in a fixed order, with clamped dims."""
    attention, projections = LAYER_SELECTIONS[selection]
    shapes = []
    for name, module in unet.named_modules():
        parts = name.split(".")
        in_attention = any(part.startswith(attention) for part in parts)  # attn1 (self), attn2 (cross)
        if isinstance(module, nn.Linear) and in_attention and any(name.endswith("." + t) for t in projections):
            shapes.append(LayerShape(name, module.in_features, module.out_features,
                                     min(down_dim, module.in_features), min(up_dim, module.out_features)))
    return shapes


def orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A random matrix whose rows (if rows <= cols) or columns are orthonormal."""
    gaussian = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # QR's sign choice made unique, so the matrix is a function of the seed
    return (q if rows >= cols else q.T).float().contiguous()


def aux_matrices(shape: LayerShape, seed: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(down_aux d x in, up_aux out x u) of layer number `index`, regenerated from `seed`."""
    generator = torch.Generator().manual_seed(seed * 100_003 + index)
    return orthonormal(shape.down_dim, shape.in_features, generator), orthonormal(shape.out_features, shape.up_dim, generator)


class LiDBLinear(nn.Module):
    """A frozen Linear plus the LiDB update. The train matrices may carry a batch dimension.

    `down_train` (d) and `up_train` (u) are Parameters when the layer trains itself; the hypernetwork
    instead sets `external = (down (B, d), up (B, u))`, one pair per sample, so its gradient reaches the
    hypernetwork through the UNet.
    """

    def __init__(self, base: nn.Linear, shape: LayerShape, seed: int, index: int, down_init: torch.Tensor):
        super().__init__()
        self.base = base
        down_aux, up_aux = aux_matrices(shape, seed, index)
        self.register_buffer("down_aux", down_aux.to(base.weight.device), persistent=False)
        self.register_buffer("up_aux", up_aux.to(base.weight.device), persistent=False)
        # As LoRA: one factor starts small and random, the other at zero, so ΔW starts at 0 but learns.
        self.down_train = nn.Parameter(down_init.to(base.weight.device).clone())
        self.up_train = nn.Parameter(torch.zeros(shape.up_dim, device=base.weight.device))
        self.external: tuple[torch.Tensor, torch.Tensor] | None = None

    def delta_weight(self) -> torch.Tensor:
        """ΔW (out x in) of the layer's own train matrices."""
        return (self.up_aux @ self.up_train)[:, None] * (self.down_train @ self.down_aux)[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        h = x.to(self.down_aux.dtype) @ self.down_aux.T  # (..., d)
        if self.external is None:
            h = (h @ self.down_train)[..., None] * self.up_train  # (..., u)
        else:
            down, up = self.external  # (B, d), (B, u); x is (B, tokens, in)
            repeat = x.shape[0] // down.shape[0]  # classifier-free guidance doubles the batch
            down, up = down.repeat(repeat, 1), up.repeat(repeat, 1)
            h = torch.einsum("bnd,bd->bn", h, down)[..., None] * up[:, None, :]
        return out + (h @ self.up_aux.T).to(out.dtype)


def attach(unet: nn.Module, shapes: list[LayerShape], seed: int) -> dict[str, LiDBLinear]:
    """Wrap every target Linear of `unet` in a LiDBLinear (in place); returns them by layer name."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for index, shape in enumerate(shapes):
        parent_name, _, child = shape.name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        base = getattr(parent, child)
        down_init = torch.randn(shape.down_dim, generator=generator) / shape.down_dim**0.5
        layer = LiDBLinear(base, shape, seed, index, down_init)
        setattr(parent, child, layer)
        layers[shape.name] = layer
    return layers


def detach(unet: nn.Module, layers: dict[str, LiDBLinear]) -> None:
    """Put the original Linears back (the UNet is then bit-identical to before `attach`)."""
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent_name), child, layer.base)


def token_readers(states: torch.Tensor, on_token: torch.Tensor, shapes: list[LayerShape], seed: int,
                  ridge: float = 1e-2) -> dict[str, torch.Tensor]:
    """Per cross-attention layer, a fixed `down_train` that responds to the token's text features and hardly
    to any other position's, so a rank-1 update through it changes only what the token says.

    `states` (prompts, positions, dim) are the text encoder's outputs for prompts containing the token,
    `on_token` (prompts, positions) marks the token's positions. Text features share a large common
    component (on miniworld the token's mean and the other positions' mean have cosine 0.99), so the plain
    token direction would fire everywhere; the reader is instead the ridge-regularised discriminant
    (other positions' second moment + ridge)^-1 · token mean, in each layer's aux coordinates, scaled so
    that its response on the token equals the features' own length.
    """
    states = states.float()
    readers = {}
    for index, shape in enumerate(shapes):
        down_aux, _ = aux_matrices(shape, seed, index)
        projected = states @ down_aux.T  # (prompts, positions, d)
        token, others = projected[on_token], projected[~on_token]
        moment = others.T @ others / len(others)
        reader = torch.linalg.solve(moment + ridge * moment.trace() / len(moment) * torch.eye(len(moment)), token.mean(0))
        response = (token @ reader).mean()
        readers[shape.name] = reader * (states[on_token].norm(dim=-1).mean() / response)
    return readers


def flat_size(shapes: list[LayerShape]) -> int:
    return sum(s.down_dim + s.up_dim for s in shapes)


def balanced_factors(column: torch.Tensor, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lora_A 1 x in, lora_B out x 1) with lora_B @ lora_A == outer(column, row), both of equal norm.

    A rank-1 ΔW is already a product of its two factors; splitting their scale evenly keeps
    fp16 LoRA files and LoRA's own optimisation well conditioned, with no (out x in) matrix built.
    """
    scale = (column.norm() / row.norm().clamp_min(1e-12)).sqrt().clamp_min(1e-12)
    return (row * scale)[None, :], (column / scale)[:, None]


def lora_factors(shapes: list[LayerShape], train: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (lora_A 1 x in, lora_B out x 1)} of LiDB train matrices {layer: (down, up)}; `shapes` in the
    order the aux matrices were drawn. ΔW = lora_B @ lora_A = (up_aux · up)(down · down_aux), never built whole."""
    factors = {}
    for index, shape in enumerate(shapes):
        down, up = train[shape.name]
        down_aux, up_aux = aux_matrices(shape, seed, index)
        factors[shape.name] = balanced_factors(up_aux @ up, down @ down_aux)
    return factors


def as_lora_factors(layer: LiDBLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """(lora_A 1 x in, lora_B out x 1) with lora_B @ lora_A == the layer's ΔW."""
    return balanced_factors(layer.up_aux @ layer.up_train.detach(), layer.down_train.detach() @ layer.down_aux)


def canonical_factors(fits: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The same rank-1 updates, with each layer's (down, up) in one agreed form across all `fits`.

    A rank-1 factorisation is unique only up to sign and scale: (-up)(-down) and (c·up)(down/c) give the
    same ΔW, and independent fits land on either. Here every `down` gets unit length and the sign that
    points it along the fits' principal direction for that layer, so the factors of different fits differ
    only where their updates do (what a hypernetwork can learn to predict).
    """
    canonical = [dict() for _ in fits]
    for name in fits[0]:
        downs = torch.stack([fit[name][0] for fit in fits])
        reference = torch.linalg.svd(downs, full_matrices=False).Vh[0]
        for fit, out in zip(fits, canonical, strict=True):
            down, up = fit[name]
            norm = down.norm().clamp_min(1e-12)
            sign = 1.0 if float(down @ reference) >= 0 else -1.0
            out[name] = (down * (sign / norm), up * (sign * norm))
    return canonical


@torch.no_grad()
def token_states(pipe, token: str, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text features of `prompts`, which contain `token` (prompts, positions, dim), and where its pieces sit."""
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    pieces = pipe.tokenizer(token, add_special_tokens=False).input_ids  # "sks" may be several pieces
    on_token = torch.zeros(ids.shape, dtype=torch.bool)
    for row, prompt_ids in enumerate(ids.tolist()):
        for start in range(len(prompt_ids) - len(pieces) + 1):
            if prompt_ids[start:start + len(pieces)] == pieces:
                on_token[row, start:start + len(pieces)] = True
    if not on_token.any():
        raise UserError(f"--token {token}: not found in the tokenised training prompts; pick a plain word")
    # SD returns (embeds, negative embeds); SDXL (embeds, negative, pooled, negative pooled): embeds first.
    encoded = pipe.encode_prompt(prompts, device=pipe.unet.device, num_images_per_prompt=1,
                                 do_classifier_free_guidance=False)[0]
    return encoded.float().cpu(), on_token
