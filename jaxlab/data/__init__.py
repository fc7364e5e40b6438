"""jaxlab.data — public names re-exported here."""

from jaxlab.data.batches import epoch_permutation_batch, steps_per_epoch
from jaxlab.data.digits import NUM_LEVELS, digits_split, digits_to_unit, load_digits, unit_to_digits
from jaxlab.data.files import load_cifar10, load_mnist, parse_idx, read_idx
from jaxlab.data.images import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    ImageRows,
    flip_horizontal,
    flip_mask,
    image_batches,
    images_to_signed,
    list_images,
    load_image,
    signed_to_images,
)
from jaxlab.data.text import VOCAB_SIZE, load_text_corpus, random_windows, text_split
from jaxlab.data.toy2d import TOY2D, Toy2DName, checkerboard, eight_gaussians, pinwheel, sample_toy2d, swiss_roll, toy2d_batches, two_moons

__all__ = [
    "IMAGE_EXTENSIONS",
    "NUM_LEVELS",
    "TOY2D",
    "VOCAB_SIZE",
    "ImageFolder",
    "ImageRows",
    "Toy2DName",
    "checkerboard",
    "digits_split",
    "digits_to_unit",
    "eight_gaussians",
    "epoch_permutation_batch",
    "flip_horizontal",
    "flip_mask",
    "image_batches",
    "images_to_signed",
    "list_images",
    "load_cifar10",
    "load_digits",
    "load_image",
    "load_mnist",
    "load_text_corpus",
    "parse_idx",
    "pinwheel",
    "random_windows",
    "read_idx",
    "sample_toy2d",
    "signed_to_images",
    "steps_per_epoch",
    "swiss_roll",
    "text_split",
    "toy2d_batches",
    "two_moons",
    "unit_to_digits",
]
