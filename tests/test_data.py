import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aegmm.data import load_images
from aegmm.data.decode import decode_image


def test_folder_is_searched_recursively_with_subfolder_labels(image_folder):
    data = load_images(image_folder)
    assert data.images.shape == (24, 16, 16, 3) and data.images.dtype == np.uint8
    assert data.label_names == ["bright", "dark"]
    assert sorted(np.bincount(data.labels)) == [12, 12]
    assert all(("bright" in p) == (data.label_names[i] == "bright") for p, i in zip(data.paths, data.labels))


def test_folder_skips_and_lists_unreadable_files(image_folder):
    (image_folder / "dark" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (image_folder / "dark" / "empty.png").write_bytes(b"")
    (image_folder / "notes.txt").write_text("not an image")
    data = load_images(image_folder)
    assert len(data) == 24
    reasons = {Path(p).relative_to(image_folder).as_posix(): r for p, r in data.skipped}
    assert all(p.startswith(str(image_folder)) for p, _ in data.skipped)  # as typed, like the good rows
    assert set(reasons) == {"dark/broken.jpg", "dark/empty.png", "notes.txt"}
    assert "empty" in reasons["dark/empty.png"]
    assert "extension" in reasons["notes.txt"]


def test_images_are_resized_and_converted_to_the_asked_channels(image_folder):
    data = load_images(image_folder, image_size=8, channels=1)
    assert data.images.shape == (24, 8, 8, 1)


def _png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_gray_palette_rgba_and_16_bit_images_are_converted():
    gray16 = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    rgba = Image.fromarray(np.full((4, 4, 4), 200, dtype=np.uint8), mode="RGBA")
    palette = Image.fromarray(np.full((4, 4, 3), (255, 0, 0), dtype=np.uint8)).convert("P")
    assert decode_image(_png_bytes(gray16), None, None).shape == (4, 4, 1)
    assert abs(int(decode_image(_png_bytes(gray16), None, None)[0, 0, 0]) - 128) <= 1  # rescaled, not clipped
    assert decode_image(_png_bytes(rgba), None, 3).shape == (4, 4, 3)
    red = decode_image(_png_bytes(palette), None, 3)
    assert tuple(red[0, 0]) == (255, 0, 0)
    assert decode_image(_png_bytes(palette), None, 1).shape == (4, 4, 1)
    assert decode_image(_png_bytes(gray16), 8, 3).shape == (8, 8, 3)


def test_zip_is_read_in_memory_with_labels_below_a_shared_folder(tmp_path, images):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, img in enumerate(images[:10]):
            zf.writestr(f"train/{'REAL' if i % 2 else 'FAKE'}/{i}.png", _png_bytes(Image.fromarray(img)))
        zf.writestr("train/README.txt", "hello")
    data = load_images(archive)
    assert data.label_names == ["FAKE", "REAL"] and len(data) == 10
    assert ("train/README.txt", "not an image file name (extension)") in data.skipped


def test_zip_member_paths_are_never_extracted(tmp_path, images):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escape.png", _png_bytes(Image.fromarray(images[0])))
        zf.writestr("/abs/escape2.png", _png_bytes(Image.fromarray(images[1])))
    data = load_images(archive)
    assert len(data) == 2
    assert sorted(tmp_path.iterdir()) == [archive]
    assert not (tmp_path.parent.parent / "escape.png").exists()


def test_npz_with_and_without_labels(tmp_path, labelled):
    images, labels = labelled
    np.savez(tmp_path / "a.npz", images=images, labels=labels, label_names=np.array(["x", "y"]))
    np.savez(tmp_path / "b.npz", images=images[..., 0])
    a = load_images(tmp_path / "a.npz")
    assert a.label_names == ["x", "y"] and np.array_equal(a.labels, labels)
    assert a.paths[:2] == ["0", "1"]
    b = load_images(tmp_path / "b.npz")
    assert b.images.shape == (48, 16, 16, 1) and b.labels is None


def test_builtin_digits_need_no_download():
    data = load_images("builtin:digits")
    assert data.images.shape == (1797, 8, 8, 1)
    assert data.images.max() == 255 and len(data.label_names) == 10


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "missing", "input not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no readable images"),
        (lambda p: (p / "x.csv").write_text("1,2") and p / "x.csv", "unknown input format '.csv'"),
        (
            lambda p: np.savez(p / "f.npz", images=np.zeros((2, 4, 4), np.float32)) or p / "f.npz",
            "must be uint8",
        ),
        (
            lambda p: np.savez(p / "k.npz", pixels=np.zeros((2, 4, 4), np.uint8)) or p / "k.npz",
            "no 'images' array",
        ),
        (
            lambda p: np.savez(p / "s.npz", images=np.zeros((2, 4), np.uint8)) or p / "s.npz",
            "must have shape",
        ),
        (lambda p: "builtin:mnist", "unknown built-in data set"),
    ],
)
def test_bad_inputs_give_one_clear_error(tmp_path, make, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_images(make(tmp_path))


def test_packed_npy_is_memory_mapped_and_equals_the_decoded_folder(image_folder, tmp_path):
    from aegmm.data.pack import pack_images

    (image_folder / "dark" / "broken.png").write_bytes(b"\x89PNG broken")
    result = pack_images(image_folder, tmp_path / "packed.npy", image_size=8, channels=3)
    assert result["images"] == 24 and result["skipped"] == 1
    packed = load_images(tmp_path / "packed.npy")
    direct = load_images(image_folder, image_size=8, channels=3)
    assert isinstance(packed.images, np.memmap)
    assert np.array_equal(np.asarray(packed.images), direct.images)
    assert packed.label_names == direct.label_names and np.array_equal(packed.labels, direct.labels)
    assert packed.skipped == [(Path(p).relative_to(image_folder).as_posix(), r) for p, r in direct.skipped]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
