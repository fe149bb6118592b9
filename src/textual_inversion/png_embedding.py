"""AUTOMATIC1111's embedding PNG: a preview picture that carries the embedding, written and read.

The layout, as AUTOMATIC1111/stable-diffusion-webui writes and reads it (modules/textual_inversion/
image_embedding.py and textual_inversion.py): the dict of its `.pt` files (string_to_token, string_to_param,
name, step, sd_checkpoint, sd_checkpoint_name) as JSON, each tensor written as {"TORCHTENSOR": nested lists},
is stored twice:
- base64-encoded in the PNG text chunk `sd-ti-embedding`, which A1111 reads first;
- zlib-compressed in the pixels, for copies whose text chunks were stripped (by an image host, an editor).
  Two bands flank the picture, each parted from it by one black column: the left band holds the low 4 bits
  of every byte, the right band the high 4 bits. They fill the bands row by row, one per channel, in the low
  4 bits of each value, XOR-ed with the low 4 bits of a linear congruential sequence (x <- 1664525 x +
  1013904223 mod 2^32 from x = 0, each x taken mod 255) that starts afresh for each band. The bands' high 4
  bits are decoration drawn from the vectors and carry nothing. A reader crops to the pixels whose three
  channels are all non-zero, finds the columns whose low 4 bits are all zero (the black ones) and reads
  the bands outside the first and the last of them.
A1111 also reads SDXL vectors from this dict when it holds exactly `clip_l` and `clip_g` (its loader would
trip over any other entry, a name included), so an SDXL PNG carries those two alone and names its token
only in our own `textual-inversion` text chunk, which A1111 ignores.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_path
from .embedding import SDXL_KEYS, SINGLE_ENCODER, Embedding, a1111_dict
from .errors import UserError

logger = logging.getLogger(__name__)

EMBEDDING_CHUNK = "sd-ti-embedding"  # A1111's text chunk
METADATA_CHUNK = "textual-inversion"  # ours: the token and training metadata as JSON
TENSOR_TAG = "TORCHTENSOR"
LCG_MULTIPLIER, LCG_INCREMENT, LCG_MODULUS = 1664525, 1013904223, 2**32
MAX_JSON_BYTES = 256 * 2**20  # what the pixels may inflate to; 75 SDXL vectors take about 4 MB
CARD_SIZE = (512, 512)  # A1111's own previews are 512 x 512
CARD_BACKGROUND, CARD_INK, CARD_NOTE = (38, 41, 52), (233, 229, 219), (150, 156, 170)


def write_png_embedding(embedding: Embedding, path: str | Path, preview: str | Path | Image.Image | None = None) -> Path:
    """Write `embedding` as AUTOMATIC1111's embedding PNG showing `preview` (default: a card naming the token)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"{path}: an a1111-png embedding is a .png file; end the name in .png")
    text = to_json(png_dict(embedding)).encode()
    picture = preview_picture(preview, embedding)
    image = hide_in_pixels(picture, zlib.compress(text, 9), decoration_values(embedding))
    if find_in_pixels(image) != text:  # a freak of the data can mimic a separator column; the text chunk still holds it
        logger.warning("%s: the copy in the pixels would not read back; writing the text chunk alone", path)
        image = picture
    info = PngInfo()
    info.add_text(EMBEDDING_CHUNK, base64.b64encode(text).decode("ascii"))
    info.add_text(METADATA_CHUNK, json.dumps({**embedding.metadata, "token": embedding.token, "format": "a1111-png"}))
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", pnginfo=info)
    return path


def read_png_data(path: str | Path) -> tuple[dict, dict[str, str]]:
    """The embedding dict an A1111 embedding PNG carries (text chunk, else pixels), and our stored metadata."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            chunks = dict(getattr(image, "text", None) or {})  # a PNG's text chunks; other types have none
            if EMBEDDING_CHUNK in chunks:
                text = base64.b64decode(chunks[EMBEDDING_CHUNK])
            else:
                text = find_in_pixels(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # ValueError: bad base64, huge text chunks
        raise UserError(f"{path}: not a readable PNG embedding ({str(error)[:200]})") from None
    if text is None:
        raise UserError(f"{path}: a plain picture, not an embedding: it has no {EMBEDDING_CHUNK} text chunk and "
                        "no embedding in its pixels")
    return from_json(path, text), stored_metadata(chunks.get(METADATA_CHUNK))


def png_dict(embedding: Embedding) -> dict:
    """What the PNG carries: A1111's .pt dict, or for SDXL exactly clip_l and clip_g (see the module notes)."""
    vectors = {name: tensor.detach().float().cpu().contiguous() for name, tensor in embedding.vectors.items()}
    if embedding.family == "sdxl":
        return {key: vectors[key] for key in SDXL_KEYS}
    return a1111_dict(embedding, vectors[SINGLE_ENCODER])


def to_json(data: dict) -> str:
    """`data` as A1111's JSON: tensors become {"TORCHTENSOR": nested lists}."""
    def tensor_as_lists(value):
        if isinstance(value, torch.Tensor):
            return {TENSOR_TAG: value.tolist()}  # float32 -> Python float is exact, and so is its repr
        raise TypeError(f"cannot store {type(value).__name__} in an embedding PNG")

    return json.dumps(data, default=tensor_as_lists)


def from_json(path: Path, text: bytes) -> dict:
    """A1111's JSON back into a dict with tensors (float64, as A1111 reads them; exact for float32 values)."""
    def tensors(entry: dict):
        if TENSOR_TAG in entry:
            return torch.from_numpy(np.asarray(entry[TENSOR_TAG], dtype=np.float64))
        return entry

    try:
        data = json.loads(text, object_hook=tensors)
    except (ValueError, TypeError, RecursionError) as error:  # bad JSON or UTF-8, ragged or non-numeric lists
        raise UserError(f"{path}: the embedding in this PNG is damaged ({str(error)[:150]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the embedding in this PNG is damaged (found {type(data).__name__}, not a dict)")
    return data


def stored_metadata(text: str | None) -> dict[str, str]:
    """Our METADATA_CHUNK as {str: str}; empty when absent (A1111's own files) or unreadable."""
    try:
        stored = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {str(key): str(value) for key, value in stored.items()} if isinstance(stored, dict) else {}


def preview_picture(preview: str | Path | Image.Image | None, embedding: Embedding) -> Image.Image:
    """The picture to show, as RGB; transparent parts go onto the card's background."""
    if preview is None:
        return title_card(embedding)
    if isinstance(preview, Image.Image):
        picture = preview.copy()
    else:
        try:
            with Image.open(preview) as opened:
                picture = opened.copy()
        except (OSError, Image.DecompressionBombError) as error:
            raise UserError(f"--preview {preview}: not a readable picture ({str(error)[:150]})") from None
    picture = picture.convert("RGBA")
    background = Image.new("RGBA", picture.size, (*CARD_BACKGROUND, 255))
    return Image.alpha_composite(background, picture).convert("RGB")


def title_card(embedding: Embedding) -> Image.Image:
    """A plain card with the token in large type and its size below."""
    card = Image.new("RGB", CARD_SIZE, CARD_BACKGROUND)
    draw = ImageDraw.Draw(card)
    width, height = CARD_SIZE
    size = 72
    font = ImageFont.load_default(size=size)
    while draw.textlength(embedding.token, font=font) > 0.85 * width and size > 12:  # long tokens get smaller type
        size -= 4
        font = ImageFont.load_default(size=size)
    draw.text((width / 2, 0.45 * height), embedding.token, font=font, fill=CARD_INK, anchor="mm")
    note = f"{embedding.num_vectors} vector{'s' if embedding.num_vectors > 1 else ''}, {embedding.family}"
    draw.text((width / 2, 0.62 * height), note, font=ImageFont.load_default(size=24), fill=CARD_NOTE, anchor="mm")
    return card


def decoration_values(embedding: Embedding) -> np.ndarray:
    """Band shades 1-15 from the first vector's magnitudes (A1111 likewise decorates with them); never 0, so
    every band pixel is lit and the reader's crop keeps the bands whole."""
    magnitudes = next(iter(embedding.vectors.values()))[0, :1024].detach().float().abs().cpu().numpy()
    top = magnitudes.max()
    if not top > 0:
        return np.ones(1, np.uint8)
    return (1 + np.round(14 * magnitudes / top)).astype(np.uint8)


def scramble_nibbles(count: int) -> np.ndarray:
    """The low 4 bits of A1111's linear congruential sequence, `count` of them, from its start."""
    values = np.empty(count, np.uint8)
    state = 0
    for index in range(count):
        state = (LCG_MULTIPLIER * state + LCG_INCREMENT) % LCG_MODULUS
        values[index] = state % 255 & 0x0F
    return values


def hide_in_pixels(picture: Image.Image, payload: bytes, shades: np.ndarray) -> Image.Image:
    """`picture` between the two bands that hold `payload` (see the module notes)."""
    pixels = np.array(picture.convert("RGB"), dtype=np.uint8)
    height = pixels.shape[0]
    # A reader takes the columns whose low bits are all zero for the separators: the picture must have none.
    blank = (pixels & 0x0F).sum(axis=(0, 2)) == 0
    pixels[0, blank, 0] |= 1
    data = np.frombuffer(payload, dtype=np.uint8)
    columns = -(-data.size // (3 * height))
    scramble = scramble_nibbles(columns * 3 * height)

    def band(nibbles: np.ndarray, shade_sequence: np.ndarray) -> np.ndarray:
        cells = np.zeros(columns * 3 * height, np.uint8)
        cells[:nibbles.size] = nibbles
        cells = (cells ^ scramble).reshape(height, columns, 3)
        rows, cols = np.indices((height, columns))
        shade = shade_sequence[(rows // 4 + cols) % shade_sequence.size]  # grey diagonal stripes
        return cells | (shade << 4)[..., None]

    separator = np.zeros((height, 1, 3), np.uint8)
    bands = [band(data & 0x0F, shades), separator, pixels, separator, band(data >> 4, shades[::-1])]
    return Image.fromarray(np.concatenate(bands, axis=1))


def find_in_pixels(image: Image.Image) -> bytes | None:
    """The bytes hidden in an embedding PNG's bands (inflated), or None for a picture without them."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    lit = (pixels > 0).all(axis=2)
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    if rows.size == 0:
        return None
    low_bits = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] & 0x0F
    separators = np.flatnonzero(low_bits.sum(axis=(0, 2)) == 0)
    if separators.size < 2:
        return None
    low, high = low_bits[:, :separators[0]].reshape(-1), low_bits[:, separators[-1] + 1:].reshape(-1)
    if low.size != high.size or low.size < 2:
        return None
    head = ((high[:2] ^ scramble_nibbles(2)) << 4) | (low[:2] ^ scramble_nibbles(2))
    if head[0] & 0x0F != 8 or (int(head[0]) * 256 + int(head[1])) % 31:  # not a zlib header: an ordinary picture
        return None
    scramble = scramble_nibbles(low.size)
    data = (((high ^ scramble) << 4) | (low ^ scramble)).tobytes()
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_JSON_BYTES)  # the padding after the stream is ignored, as zlib does
    except zlib.error:
        return None
    return text if inflater.eof else None
