import numpy as np
import pytest
from PIL import Image

from jaxcxr.data import images
from tests.support import plain_film, write_dicom


def _gradient(h=40, w=40):
  return np.tile(np.linspace(0, 255, w, dtype=np.float64), (h, 1))


def test_8bit_grayscale_resized(tmp_path):
  Image.fromarray(_gradient().astype(np.uint8)).save(tmp_path / "a.png")
  out = images.load_film(tmp_path / "a.png", 20)
  assert out.shape == (20, 20) and out.dtype == np.uint8
  assert out[0, 0] < 20 and out[0, -1] > 235


def test_rgba_keeps_luminance_and_ignores_alpha(tmp_path):
  gray = _gradient().astype(np.uint8)
  rgba = np.stack([gray, gray, gray, np.zeros_like(gray)], -1)  # fully transparent alpha
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  Image.fromarray(gray).save(tmp_path / "b.png")
  np.testing.assert_array_equal(images.load_film(tmp_path / "a.png", 40), images.load_film(tmp_path / "b.png", 40))


def test_16bit_is_rescaled_by_its_range(tmp_path):
  Image.fromarray((_gradient() * 8 + 1000).astype(np.uint16)).save(tmp_path / "a.png")
  with Image.open(tmp_path / "a.png") as img:
    assert img.mode.startswith("I")
  out = images.load_film(tmp_path / "a.png", 40)
  assert out.min() == 0 and out.max() == 255


def test_jpeg_rgb_any_size(tmp_path):
  rgb = np.stack([_gradient(300, 500).astype(np.uint8)] * 3, -1)
  Image.fromarray(rgb).save(tmp_path / "a.jpeg", quality=95)
  assert images.load_film(tmp_path / "a.jpeg", 64).shape == (64, 64)


def test_pad_keeps_everything_crop_keeps_the_centre(tmp_path):
  wide = plain_film((20, 60), 200)
  Image.fromarray(wide).save(tmp_path / "w.png")
  padded = images.load_film(tmp_path / "w.png", 30, "pad")
  cropped = images.load_film(tmp_path / "w.png", 30, "crop")
  assert padded[0, 15] == 0 and padded[15, 15] == 200  # black bars above and below
  assert (cropped == 200).all()


@pytest.mark.parametrize("content, match", [(b"not an image at all", "cannot decode"), (None, "not found")])
def test_bad_files_raise_a_per_file_error(tmp_path, content, match):
  path = tmp_path / "bad.png"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(images.BadImageError, match=match) as e:
    images.load_film(path, 16)
  assert "bad.png" in str(e.value)


def test_truncated_png(tmp_path):
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200)).astype(np.uint8)).save(tmp_path / "a.png")
  data = (tmp_path / "a.png").read_bytes()
  (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
  with pytest.raises(images.BadImageError, match="a.png"):
    images.load_film(tmp_path / "a.png", 16)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
  Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "a.png")
  monkeypatch.setattr(images, "MAX_PIXELS", 5_000)
  with pytest.raises(images.BadImageError, match="decompression bomb"):
    images.load_film(tmp_path / "a.png", 16)


def _float_tiff(path, values):
  Image.fromarray(values.astype(np.float32), mode="F").save(path)


@pytest.mark.parametrize("write, match", [
    (lambda p: Image.fromarray(np.full((40, 40), 3000, np.uint16)).save(p.with_suffix(".png")), "every pixel has"),
    (lambda p: Image.fromarray(np.full((40, 40), 7, np.uint8)).save(p.with_suffix(".png")), "value 7"),
    (lambda p: _float_tiff(p.with_suffix(".tif"), np.where(np.eye(40) > 0, np.nan, 1.0)), "NaN or infinite"),
    (lambda p: _float_tiff(p.with_suffix(".tif"), np.where(np.eye(40) > 0, np.inf, 1.0)), "NaN or infinite"),
], ids=["flat-16-bit-png", "flat-8-bit-png", "nan-float-tiff", "inf-float-tiff"])
def test_a_blank_or_non_finite_film_is_a_bad_image(tmp_path, write, match):
  write(tmp_path / "film")
  (path,) = tmp_path.iterdir()
  with pytest.raises(images.BadImageError, match=rf"{path.name}: .*{match}"):
    images.load_film(path, 16)


def test_a_blank_array_or_dicom_is_a_bad_image(tmp_path):
  with pytest.raises(images.BadImageError, match="every pixel has the value 0"):
    images.fit_array(np.zeros((40, 40), np.uint8), 16)
  with pytest.raises(images.BadImageError, match="flat.dcm: every pixel has the value 0"):
    images.load_film(write_dicom(tmp_path / "flat.dcm", np.full((40, 40), 900, np.uint16), bits_stored=12), 16)


def test_exif_orientation_is_applied_and_a_gif_is_read(tmp_path):
  film = np.zeros((40, 60), np.uint8)
  film[:, :10] = 200  # a bright band on the left, to tell the orientation by
  film[0, 0] = 7
  tagged = Image.fromarray(film)
  exif = tagged.getexif()
  exif[0x0112] = 6  # Orientation: the viewer turns it 90 degrees clockwise
  tagged.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
  Image.fromarray(np.rot90(film, -1)).save(tmp_path / "upright.png")
  upright = images.load_film(tmp_path / "upright.png", 32)
  np.testing.assert_allclose(images.load_film(tmp_path / "phone.jpg", 32), upright, atol=3)
  Image.fromarray(film).convert("P").save(tmp_path / "film.gif")
  np.testing.assert_array_equal(images.load_film(tmp_path / "film.gif", 32), images.fit(film, 32))


def test_a_file_of_several_frames_is_a_bad_image(tmp_path):
  frames = [Image.fromarray(np.full((40, 40), v, np.uint8)) for v in (10, 200)]
  frames[0].save(tmp_path / "cine.gif", save_all=True, append_images=frames[1:])
  with pytest.raises(images.BadImageError, match="cine.gif: holds 2 frames; a film is one image"):
    images.load_film(tmp_path / "cine.gif", 32)
