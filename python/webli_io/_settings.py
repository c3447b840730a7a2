"""The stream's settings as a ``TypedDict``, so that an IDE and mypy see them:
``WebLIStream(shards, **settings: Unpack[Settings])`` makes a misspelt setting (``bach_size=``)
or a wrong type a type error, before the core's own check (a ``ConfigError`` naming the closest
setting) at run time.

The names and defaults are the core's (``_core.Options.names()``, ``defaults()``: the Rust
``Settings`` structs, written once); the types are written here, where Python's type system
says them. ``tests/test_settings_types.py`` checks that the names are exactly the core's and that
every default fits its type, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Dict, Literal, Mapping, Optional, Sequence, TypedDict, Union, get_args

#: A value ``drop_if`` compares (see the README's comparison rule).
FlagValue = Union[str, bool, int, float]
#: ``resize``: the core's modes, and OpenCLIP's ``resize_mode`` names as aliases (``shortest`` is
#: ``center_crop``, ``longest`` is ``letterbox``).
ResizeName = Literal["squash", "center_crop", "random_resized_crop", "letterbox", "shortest", "longest"]
#: ``interpolation``: Pillow's filters (``box`` is ``area``).
InterpolationName = Literal["bilinear", "bicubic", "area", "box", "lanczos", "nearest"]
#: The names, for the command line's choices.
RESIZE_MODES = get_args(ResizeName)
INTERPOLATIONS = get_args(InterpolationName)


class Settings(TypedDict, total=False):
    """Every setting of a stream; see :class:`webli_io.WebLIStream` for what each does."""

    # read
    allow_pipe: bool
    cache_dir: Optional[str]
    cache_max_bytes: Optional[int]
    columns: Optional[Sequence[str]]
    extra_members: Sequence[str]
    index: Optional[str]
    lang_fields: Optional[Sequence[str]]
    max_member_bytes: int
    num_threads: Optional[int]
    prefetch: int
    shards_in_flight: Optional[int]
    strict: bool
    # shuffle and epochs
    resampled: bool
    samples_per_epoch: Optional[int]
    seed: int
    shuffle: bool
    shuffle_buffer: Optional[int]
    # selection
    dedup: bool
    dedup_capacity: int
    drop_if: Mapping[str, Union[FlagValue, Sequence[FlagValue]]]
    min_score: Mapping[str, float]
    subset: Optional[float]
    subset_seed: int
    max_aspect_ratio: Optional[float]
    min_image_side: int
    # near-duplicates and decontamination
    blocklist: Optional[str]
    blocklist_radius: Sequence[int]
    near_dedup: bool
    near_dedup_radius: Sequence[int]
    # languages
    manifest: Optional[str]
    mixture: Optional[Union[str, Mapping[str, float]]]
    mixture_temperature: Optional[float]
    mixture_window: int
    # decode and resize
    crop_decode: bool
    crop_ratio: Sequence[float]
    crop_scale: Sequence[float]
    decode_device: Literal["cpu", "cuda"]
    exif_transpose: bool
    fast_decode: bool
    hflip: float
    image_size: int
    max_pixels: int
    interpolation: InterpolationName
    resize: ResizeName
    scaled_decode: bool
    # batches
    batch_size: int
    drop_last: bool
    equal_batches: Optional[Literal["drop", "pad"]]
    layout: Literal["NHWC", "NCHW", "nhwc", "nchw"]
    mean: Optional[Union[str, Sequence[float]]]
    output: Literal["uint8", "float"]
    std: Optional[Union[str, Sequence[float]]]


#: The settings' names, as this module types them (checked against the core's by the tests).
NAMES: Dict[str, object] = dict(Settings.__annotations__)
