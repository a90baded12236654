"""Every awkward input has a defined outcome at the decode stage."""
import numpy as np
import pytest
from PIL import Image

import badfiles
from featstore.models.catalog import resolve
from featstore.models.images import decode_image
from featstore.errors import DecodeError
from featstore.models.preprocess import crop_resize


@pytest.mark.parametrize("maker, reason", [
    (badfiles.truncated_jpeg, "truncated"),
    (lambda: b"", "empty file"),
    (lambda: b"plain text, not an image\n" * 10, "not an image"),
    (badfiles.decompression_bomb, "decompression-bomb"),
])
def test_refused_with_a_reason(maker, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_image(maker())


def test_bomb_refused_before_decoding():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodeError, match="30000x30000"):
        decode_image(badfiles.decompression_bomb())
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, f"peak memory grew {grown_mb:.0f} MB refusing a bomb"


def test_16bit_png_is_scaled_not_clipped():
    img = decode_image(badfiles.png16())
    a = np.asarray(img)
    assert img.mode == "RGB" and a.min() == 0 and a.max() >= 250
    assert 100 < a.mean() < 155          # a full ramp, not saturated to white or black


def test_greyscale_and_cmyk_become_rgb():
    grey = np.asarray(decode_image(badfiles.greyscale()))
    assert grey.shape[2] == 3 and np.array_equal(grey[..., 0], grey[..., 1])
    cmyk = decode_image(badfiles.cmyk_jpeg())
    assert cmyk.mode == "RGB"
    original = np.asarray(Image.open(badfiles.sample_images(1)[0]).convert("RGB"), dtype=float)
    assert np.abs(np.asarray(cmyk, dtype=float) - original).mean() < 12


def test_palette_transparency_is_composited_on_white():
    a = np.asarray(decode_image(badfiles.palette_transparent()))
    assert tuple(a[5, 5]) == (0, 0, 255)           # opaque blue half
    assert tuple(a[5, 25]) == (255, 255, 255)      # transparent half shows white, not the hidden red


def test_animated_gif_first_frame():
    a = np.asarray(decode_image(badfiles.animated_gif()))
    assert a[10, 10, 1] > 150 and a[10, 10, 0] < 50   # green first frame, not the red second one


def test_exif_rotation_applied():
    data, upright = badfiles.exif_rotated()
    img = decode_image(data)
    assert img.size == upright.size
    diff = np.abs(np.asarray(img, float) - np.asarray(upright, float)).mean()
    assert diff < 8, diff


def test_one_pixel_image_embeds_at_full_size():
    spec = resolve(None)
    out = crop_resize(decode_image(badfiles.one_pixel()), spec.preprocess)
    assert out.shape == (224, 224, 3) and tuple(out[100, 100]) == (10, 120, 30)


def test_jpeg_draft_keeps_enough_pixels():
    big = Image.open(badfiles.sample_images(1)[0]).convert("RGB").resize((2000, 1500))
    img = decode_image(badfiles.jpeg(big), draft_to=256)
    assert min(img.size) >= 256 and img.size[0] < 2000     # decoded at a reduced DCT scale, still >= needed
