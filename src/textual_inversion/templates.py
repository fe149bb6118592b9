"""Prompt templates from the Textual Inversion paper (Gal et al. 2022), `{}` stands for the token."""

OBJECT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)

STYLE_TEMPLATES = (
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dirty painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a good painting in the style of {}",
    "a close-up painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
)

TEMPLATES = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}

# DreamBench's prompts for live objects and things (Ruiz et al. 2022): recontextualization,
# accessorization and property changes; `{}` is the concept. Used by `evaluate` on real models.
EVALUATION_OBJECT_PROMPTS = (
    "a {} in the jungle", "a {} in the snow", "a {} on the beach", "a {} on a cobblestone street",
    "a {} on top of pink fabric", "a {} on top of a wooden floor", "a {} with a city in the background",
    "a {} with a mountain in the background", "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest", "a {} with a wheat field in the background",
    "a {} with a tree and autumn leaves in the background", "a {} with the Eiffel Tower in the background",
    "a {} floating on top of water", "a {} floating in an ocean of milk",
    "a {} on top of green grass with sunflowers around it", "a {} on top of a mirror",
    "a {} on top of the sidewalk in a crowded street", "a {} on top of a dirt road", "a {} on top of a white rug",
    "a red {}", "a purple {}", "a shiny {}", "a wet {}", "a cube shaped {}",
)
EVALUATION_STYLE_PROMPTS = (
    "a painting of a dog in the style of {}", "a painting of a house in the style of {}",
    "a painting of a mountain in the style of {}", "a portrait of a woman in the style of {}",
    "a painting of a city street in the style of {}", "a painting of a bowl of fruit in the style of {}",
    "a painting of a cat in the style of {}", "a painting of a ship at sea in the style of {}",
)
