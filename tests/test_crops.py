"""The fused training crop (data/crops.py): torchvision's RandomResizedCrop boxes and flips from the
same seed, the image's own pixels whatever path reads the file, JPEG draft on large photos within
a small distance of a full decode, one example per (seed, epoch, index) whatever the workers, and
unreadable files as one-line errors."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import torch
from helpers.photos import write_photos

from ptflow.data.crops import CropFlip, crop_box, draft_scale
from ptflow.data.image_files import ImageDamaged, read_image
from ptflow.data.imaging import flatten
from ptflow.data.transforms import ERASE_VALUE, Augmentation, seed_example, train_transform

SCALE = (0.35, 1.0)  # --augment light's
needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed (the image extra)")


def _photo(width: int, height: int, seed: int = 0):
    """A smooth photo-like RGB image (gradient, discs, blur): DCT scaling barely changes it."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xx / width + yy / height)[..., None] / 2
    image = Image.fromarray((rng.uniform(0, 255, 3) * (1 - t) + rng.uniform(0, 255, 3) * t).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for _ in range(12):
        x, y, r = rng.integers(0, width), rng.integers(0, height), rng.integers(side // 16 + 1, side // 4 + 2)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(2))


def _jpeg(image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def _sizes():
    # ordinary photos, both orientations, thin strips (the centre-crop fallback), tiny images
    return [(375, 500), (500, 375), (224, 224), (20, 900), (900, 20), (1, 1), (3, 7), (1500, 2000)]


@needs_torchvision
def test_crop_boxes_are_torchvisions_draw_for_draw():
    from torchvision.transforms import RandomResizedCrop, v2

    v2_crop = v2.RandomResizedCrop(8, scale=SCALE)
    for height, width in _sizes():
        shape = torch.empty(1, 1, 1).expand(1, height, width)  # only its size is read
        for seed in range(100):
            torch.manual_seed(seed)
            ours, after = crop_box(height, width, SCALE), torch.rand(1)
            torch.manual_seed(seed)
            v1 = RandomResizedCrop.get_params(shape, list(SCALE), [3 / 4, 4 / 3])
            assert ours == v1, (height, width, seed)
            assert torch.equal(after, torch.rand(1))  # as many draws: the flip that follows is the same
            torch.manual_seed(seed)
            v2_box = v2_crop.make_params([shape])
            assert ours == (v2_box["top"], v2_box["left"], v2_box["height"], v2_box["width"])


def test_draft_scale_keeps_the_box_at_least_the_crop():
    assert draft_scale((447, 2000), (224, 224)) == 1 and draft_scale((448, 448), (224, 224)) == 2
    assert draft_scale((1000, 900), (224, 224)) == 4 and draft_scale((1792, 3000), (224, 224)) == 8
    assert draft_scale((1000, 500), (224, 112)) == 4  # each side against its own


@needs_torchvision
@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_output_is_the_v2_pipelines_crop_and_flip(mode, channels):
    """Same seed: the same box and flip as RandomResizedCrop + RandomHorizontalFlip + PILToTensor;
    the pixels differ only where the one resize of the box reads past its edge."""
    from torchvision.transforms import v2

    size = (24, 20)
    ours = train_transform(Augmentation.of({"augment": "light"}, flip=True), size, channels)
    assert isinstance(ours, CropFlip)
    theirs = v2.Compose([v2.RandomResizedCrop(size, scale=SCALE, antialias=True), v2.RandomHorizontalFlip(0.5),
                         v2.PILToTensor()])
    image = _photo(97, 61).convert(mode)
    flips = 0
    for index in range(40):
        seed_example(0, 0, index)
        x = ours(image)
        seed_example(0, 0, index)
        y = theirs(image)
        assert x.dtype == torch.uint8 and x.shape == (channels, *size) == y.shape
        assert (x.float() - y.float()).abs().mean() < 1.0, index
        flips += (x.float() - y.flip(-1).float()).abs().mean() < (x.float() - y.float()).abs().mean()
    assert flips == 0  # never the mirror of v2's


@needs_torchvision
def test_erasing_follows_the_crop_as_v2s():
    aug = Augmentation.of({"augment": "light", "random_erasing": 1.0}, flip=True)
    transform = train_transform(aug, (32, 32), 3)
    black = _photo(80, 60).point(lambda _: 0)
    seed_example(0, 0, 0)
    x = transform(black)
    assert set(x.unique().tolist()) == {0, ERASE_VALUE}


def test_a_file_read_gives_the_decoded_images_crop_exactly(tmp_path):
    """Every kind of file a folder holds (RGB and CMYK JPEG, RGB and gray PNG, EXIF-rotated JPEG):
    read() equals the transform of the decoded, upright image in the dataset's mode, draw for
    draw. These files are under twice the crop: no draft."""
    photos = write_photos(tmp_path / "photos", per_class=4)
    rotated = tmp_path / "rotated.jpg"
    exif = _photo(40, 30).getexif()
    exif[0x0112] = 6  # stored on its side: upright it is 30 x 40
    rotated.write_bytes(_jpeg(_photo(40, 30), exif=exif.tobytes()))
    files = [*photos.good, rotated]
    for channels in (3, 1):
        transform = train_transform(Augmentation.of({"augment": "light"}, flip=True), (16, 16), channels)
        for index, file in enumerate(files):
            seed_example(1, 2, index)
            x = transform.read(file, str(file))
            seed_example(1, 2, index)
            y = transform(flatten(read_image(file)).convert(transform.mode))
            assert x.shape == (channels, 16, 16) and torch.equal(x, y), file


def test_a_large_jpeg_is_drafted_and_stays_close_to_a_full_decode(monkeypatch):
    from PIL import JpegImagePlugin

    data = _jpeg(_photo(2000, 1500))
    drafts = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        drafts.append(draft(self, mode, size))
        return drafts[-1]

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    transform = train_transform(Augmentation.of({"augment": "light"}, flip=True), (224, 224), 3)
    for index in range(8):
        seed_example(0, 0, index)
        x = transform.read(data, "big.jpg")
        seed_example(0, 0, index)
        full = transform(read_image(data))  # the whole image decoded, the same box resized
        assert x.shape == full.shape == (3, 224, 224) and x.dtype == torch.uint8
        assert (x.float() - full.float()).abs().mean() < 3, index
    # every crop of 35-100% of 2000x1500 is over 2x 224: each decode was reduced (by 2 to 4)
    assert len(drafts) == 8 and all(d is not None and d[1][2] < 2000 for d in drafts)


@needs_torchvision
def test_a_jpeg_under_twice_the_crop_is_decoded_by_torchvision_to_the_same_crop(monkeypatch):
    """Colour and gray JPEGs at ImageNet sizes, read into colour and gray datasets: libjpeg-turbo
    through torchvision where it gives what Pillow's decode would (not colour into gray: Pillow's
    own luma), and the very tensor the transform of Pillow's decoded image gives, draw for draw."""
    import torchvision.io

    calls = []
    decode_jpeg = torchvision.io.decode_jpeg
    monkeypatch.setattr(torchvision.io, "decode_jpeg", lambda *a, **k: calls.append(1) or decode_jpeg(*a, **k))
    files = [_jpeg(_photo(500, 375)), _jpeg(_photo(375, 500, seed=1).convert("L"))]
    for channels, decoded_by_torchvision in ((3, 2), (1, 1)):
        transform = train_transform(Augmentation.of({"augment": "light"}, flip=True), (224, 224), channels)
        calls.clear()
        for index, data in enumerate(files):
            for epoch in range(3):
                seed_example(0, epoch, index)
                x = transform.read(data, "photo.jpg")
                seed_example(0, epoch, index)
                y = transform(read_image(data).convert(transform.mode))
                assert x.shape == (channels, 224, 224) and torch.equal(x, y), (channels, index, epoch)
        assert len(calls) == 3 * decoded_by_torchvision


class _Files(torch.utils.data.Dataset):
    def __init__(self, files, transform, epoch: int):
        self.files, self.transform, self.epoch = files, transform, epoch

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        seed_example(0, self.epoch, index)  # what streaming.Examples does
        return self.transform.read(self.files[index], str(index))


def test_an_example_depends_on_seed_epoch_and_index_not_on_the_workers(tmp_path):
    files = [_jpeg(_photo(480 + 40 * i, 360, seed=i)) for i in range(5)] + [_jpeg(_photo(1000, 900, seed=9))]
    transform = train_transform(Augmentation.of({"augment": "light"}, flip=True), (64, 64), 3)

    def epoch(workers: int, number: int = 0) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(_Files(files, transform, number), batch_size=2, num_workers=workers)
        return torch.cat(list(loader))

    alone = epoch(0)
    torch.manual_seed(123)  # the calling process's generator state does not matter
    assert torch.equal(alone, epoch(2)) and torch.equal(alone, epoch(1))
    assert not torch.equal(alone, epoch(0, number=1))


@pytest.mark.parametrize("crop", [16, 448])  # drafted by Pillow; decoded whole (by torchvision where installed)
def test_an_unreadable_file_is_a_one_line_error(crop):
    transform = train_transform(Augmentation.of({"augment": "light"}, flip=True), (crop, crop), 3)
    truncated = _jpeg(_photo(600, 500))[:2000]
    with pytest.raises(ImageDamaged, match="^bad.jpg: .*damaged or truncated"):
        transform.read(truncated, "bad.jpg")
