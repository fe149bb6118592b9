"""What --quantize-transformer fp8 saves: the weight memory of Flux.1-dev's transformer blocks, bf16 against fp8.

The full transformer (19 double-stream and 38 single-stream blocks, about 12 billion weights) does not fit this
machine's memory in any precision worth comparing, so this builds Flux.1-dev's architecture (its published
config, random weights) with one block of each kind, measures the bytes each block's weights take in bf16 and
after optimum-quanto's float8 quantisation (as `--quantize-transformer fp8` loads them), and scales the
per-block figures to the full block counts. nf4 (bitsandbytes) quantises on CUDA only and is not measured here.

    python -m benchmarks.quantized_memory
"""

from __future__ import annotations

import torch

from .common import RESULTS_DIR, argument_parser, command, print_and_write

# FLUX.1-dev's transformer/config.json (black-forest-labs/FLUX.1-dev), but for the number of blocks.
FLUX_DEV = dict(patch_size=1, in_channels=64, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
FULL_BLOCKS = {"transformer_blocks": 19, "single_transformer_blocks": 38}


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of everything the module's state holds (a quantised weight: its 8-bit data and its scales)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in module.state_dict().values())


def measure() -> dict[str, tuple[int, int, int]]:
    """{part: (weights, bf16 bytes, fp8 bytes)} for one double block, one single block and the rest."""
    from diffusers import FluxTransformer2DModel
    from optimum.quanto import freeze, qfloat8, quantize

    torch.manual_seed(0)
    model = FluxTransformer2DModel(num_layers=1, num_single_layers=1, **FLUX_DEV).to(torch.bfloat16)
    parts = {"transformer_blocks": model.transformer_blocks[0], "single_transformer_blocks":
             model.single_transformer_blocks[0]}
    counts = {name: sum(p.numel() for p in block.parameters()) for name, block in parts.items()}
    before = {name: weight_bytes(block) for name, block in parts.items()}
    total_before, total_weights = weight_bytes(model), sum(p.numel() for p in model.parameters())
    quantize(model, weights=qfloat8)  # what diffusers' QuantoConfig(weights_dtype="float8") applies to the Linears
    freeze(model)
    after = {name: weight_bytes(block) for name, block in parts.items()}
    total_after = weight_bytes(model)
    rest = ("embedders and output layer", total_weights - sum(counts.values()), total_before - sum(before.values()),
            total_after - sum(after.values()))
    return {**{name: (counts[name], before[name], after[name]) for name in parts}, rest[0]: rest[1:]}


def main() -> None:
    argument_parser(__doc__).parse_args()
    measured = measure()
    gb = 1e9
    lines = ["# --quantize-transformer fp8: the weight memory of Flux.1-dev's transformer", "",
             f"Produced by `{command()}`: Flux.1-dev's architecture with one block of each kind, random weights, "
             "bytes of each block's state in bf16 and after optimum-quanto's float8 quantisation; the full "
             "model's figures are the measured per-block bytes times its 19 double-stream and 38 single-stream blocks.",
             "", "| part | weights | bf16 | fp8 | fp8 / bf16 |", "|---|---|---|---|---|"]
    full = [0, 0, 0]
    for name, (weights, bf16, fp8) in measured.items():
        lines.append(f"| one of {name} | {weights / 1e6:.0f} M | {bf16 / 1e6:.0f} MB | {fp8 / 1e6:.0f} MB | "
                     f"{fp8 / bf16:.2f} |" if name in FULL_BLOCKS else
                     f"| {name} | {weights / 1e6:.0f} M | {bf16 / 1e6:.0f} MB | {fp8 / 1e6:.0f} MB | {fp8 / bf16:.2f} |")
        times = FULL_BLOCKS.get(name, 1)
        full = [full[0] + weights * times, full[1] + bf16 * times, full[2] + fp8 * times]
    lines.append(f"| **full transformer** (19 + 38 blocks) | {full[0] / 1e9:.1f} B | {full[1] / gb:.1f} GB | "
                 f"{full[2] / gb:.1f} GB | {full[2] / full[1]:.2f} |")
    print_and_write(lines, RESULTS_DIR / "quantized_memory.md")


if __name__ == "__main__":
    main()
