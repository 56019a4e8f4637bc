"""DICOM films: the same pixels give the same film as a PNG, the file's own LUTs apply, and every file that is no
grey single-frame film is refused in one line naming it. The tests write their own DICOM files with pydicom."""

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate

from jaxcxr.data import dicom, folders, images
from tests.support import dicom_dataset, write_dicom

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SIZE = 32  # below the films' 40x48, so every comparison also passes the pad and the resize


def _pixels() -> np.ndarray:
  """A 40x48 uint8 film spanning exactly 0..255, so an 8-bit DICOM needs no stretch to equal its PNG."""
  arr = np.random.default_rng(0).integers(0, 256, (40, 48)).astype(np.uint8)
  arr[0, 0], arr[0, 1] = 0, 255
  return arr


def write_png(path, pixels: np.ndarray):
  Image.fromarray(pixels).save(path)
  return path


def _film(path) -> np.ndarray:
  return images.load_film(path, SIZE)


def test_8bit_monochrome2_equals_the_png_of_the_same_pixels(tmp_path):
  x = _pixels()
  dcm = _film(write_dicom(tmp_path / "a.dcm", x))
  np.testing.assert_array_equal(dcm, _film(write_png(tmp_path / "a.png", x)))
  np.testing.assert_array_equal(dicom.read_film(tmp_path / "a.dcm")[0], x)  # before the resize: the pixels


@pytest.mark.parametrize("bits, scale", [(12, 16), (16, 257)])
def test_12_and_16_bit_films_equal_the_8bit_png(tmp_path, bits, scale):
  x = _pixels()
  path = write_dicom(tmp_path / "a.dcm", x.astype(np.uint16) * scale, bits_stored=bits)
  assert pydicom.dcmread(path).BitsStored == bits
  film, metadata = images.load_film_with_metadata(path, SIZE)
  np.testing.assert_array_equal(film, _film(write_png(tmp_path / "a.png", x)))
  assert metadata["bits_stored"] == bits


def test_16bit_dicom_and_16bit_png_share_one_stretch(tmp_path):
  values = (_pixels().astype(np.uint16) * 31 + 1000)  # 1000..8905: a range of its own, not 0..65535
  png = write_png(tmp_path / "a.png", values)
  with Image.open(png) as img:
    assert img.mode.startswith("I")
  dcm = write_dicom(tmp_path / "a.dcm", values, bits_stored=14)
  np.testing.assert_array_equal(_film(dcm), _film(png))
  stretched = dicom.read_film(dcm)[0]
  assert stretched.min() == 0 and stretched.max() == 255


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
  x = _pixels()
  film, metadata = images.load_film_with_metadata(write_dicom(tmp_path / "a.dcm", x, "MONOCHROME1"), SIZE)
  np.testing.assert_array_equal(film, _film(write_png(tmp_path / "a.png", 255 - x)))
  assert metadata["photometric"] == "MONOCHROME1"


def test_rescale_slope_and_intercept_give_the_same_film(tmp_path):
  """Negative output values (intercept -1000) must not wrap: the stretch removes the linear map exactly."""
  x = _pixels()
  dcm = write_dicom(tmp_path / "a.dcm", x, RescaleSlope=2, RescaleIntercept=-1000)
  np.testing.assert_array_equal(_film(dcm), _film(write_png(tmp_path / "a.png", x)))


def _windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
  """DICOM's LINEAR window (PS3.3 C.11.2.1.2.1) clipped to 0..1, then the stretch over its range, by hand."""
  t = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
  assert t.min() == 0 and t.max() == 1  # the window clips both ends, so the stretch is over 0..1
  return np.round(t * 255).astype(np.uint8)


def test_a_narrow_window_clips_and_the_film_is_the_windowed_values(tmp_path):
  x = _pixels()
  expected = _windowed(x.astype(np.float64), center=128, width=101)
  assert not np.array_equal(expected, x)
  path = write_dicom(tmp_path / "a.dcm", x, WindowCenter=128, WindowWidth=101)
  np.testing.assert_array_equal(dicom.read_film(path)[0], expected)
  np.testing.assert_array_equal(_film(path), _film(write_png(tmp_path / "w.png", expected)))


def test_a_window_wider_than_the_data_keeps_it_grey(tmp_path):
  """The window's whole range is 0..255: data spanning half of it stays within half the grey levels."""
  x = _pixels()  # 0..255 stored in 8 bits
  path = write_dicom(tmp_path / "a.dcm", x, WindowCenter=128, WindowWidth=512)
  film = dicom.read_film(path)[0]
  expected = np.clip((x - (128 - 0.5)) / (512 - 1) + 0.5, 0.0, 1.0) * 255
  np.testing.assert_allclose(film, np.round(expected), atol=1)
  assert 60 <= film.min() and film.max() <= 195


def test_the_window_is_in_rescaled_units(tmp_path):
  """A window centred at -745 only makes sense after slope 2, intercept -1000; on stored values it blanks all."""
  x = _pixels()
  expected = _windowed(2.0 * x - 1000, center=-745, width=201)
  path = write_dicom(tmp_path / "a.dcm", x, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=-745,
                     WindowWidth=201)
  np.testing.assert_array_equal(dicom.read_film(path)[0], expected)


def test_pixel_spacing_is_recorded_with_the_detectors_as_fallback(tmp_path):
  x = _pixels()
  spacing = images.load_film_with_metadata(write_dicom(tmp_path / "a.dcm", x, PixelSpacing=[0.139, 0.143]), SIZE)[1]
  assert spacing == {"pixel_spacing_mm": (0.139, 0.143), "photometric": "MONOCHROME2", "bits_stored": 8,
                     "modality": "DX", "body_part": None, "view_position": None}
  imager = write_dicom(tmp_path / "b.dcm", x, ImagerPixelSpacing=[0.2, 0.25])
  assert dicom.read_film(imager)[1]["pixel_spacing_mm"] == (0.2, 0.25)
  assert dicom.read_film(write_dicom(tmp_path / "c.dcm", x))[1]["pixel_spacing_mm"] is None
  png = images.load_film_with_metadata(write_png(tmp_path / "a.png", x), SIZE)[1]
  assert png == dict.fromkeys(dicom.METADATA_KEYS)
  # Scanners write 0\\0 for an uncalibrated detector: that is no spacing, not 0 x 0 mm.
  assert dicom.read_film(write_dicom(tmp_path / "d.dcm", x, PixelSpacing=[0, 0]))[1]["pixel_spacing_mm"] is None


def test_is_dicom_by_suffix_or_by_magic(tmp_path):
  x = _pixels()
  no_suffix = write_dicom(tmp_path / "film", x)  # PACS exports often have no suffix
  assert dicom.is_dicom(no_suffix)
  np.testing.assert_array_equal(_film(no_suffix), _film(write_png(tmp_path / "a.png", x)))
  assert dicom.is_dicom(tmp_path / "missing.DCM") and dicom.is_dicom(tmp_path / "x.Dicom")
  assert not dicom.is_dicom(tmp_path / "a.png")
  assert not dicom.is_dicom(tmp_path / "missing")
  (tmp_path / "short").write_bytes(b"\0" * 128 + b"DIC")
  assert not dicom.is_dicom(tmp_path / "short")


def _refused(path, *parts):
  with pytest.raises(images.BadImageError) as e:
    images.load_film(path, SIZE)
  message = str(e.value)
  assert message.startswith(f"{path}: ") and "\n" not in message
  for part in parts:
    assert part in message
  return message


def test_a_multi_frame_dicom_is_refused(tmp_path):
  path = write_dicom(tmp_path / "a.dcm", np.stack([_pixels()] * 3))
  assert pydicom.dcmread(path).NumberOfFrames == 3
  _refused(path, "multi-frame DICOM (3 frames)", "export the frame you want")


def test_a_dicom_without_pixel_data_is_refused(tmp_path):
  ds = dicom_dataset(BASIC_TEXT_SR)
  ds.Modality = "SR"
  ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
  _refused(tmp_path / "report.dcm", "has no pixel data", "structured report")


def test_a_colour_dicom_is_refused(tmp_path):
  rgb = np.stack([_pixels()] * 3, -1)
  _refused(write_dicom(tmp_path / "a.dcm", rgb, "RGB"), "photometric interpretation RGB", "3 sample(s)",
           "not a grey film")


def test_bits_stored_outside_8_to_16_is_refused(tmp_path):
  _refused(write_dicom(tmp_path / "a.dcm", _pixels() // 4, bits_stored=6), "6 bits stored", "8 to 16")


def test_a_film_of_the_wrong_shape_is_refused_like_any_other(tmp_path):
  _refused(write_dicom(tmp_path / "a.dcm", np.zeros((10, 300), np.uint8)), "300x10 pixels is not a chest film")


def test_the_pixel_limit_is_checked_on_the_header_before_decoding(tmp_path):
  """Rows and Columns of 9000 over 1,920 bytes: decoding would fail otherwise, the limit refuses it first."""
  path = write_dicom(tmp_path / "a.dcm", _pixels())
  ds = pydicom.dcmread(path)
  ds.Rows = ds.Columns = 9000
  ds.save_as(path, enforce_file_format=True)
  _refused(path, "9000x9000 pixels exceeds the 64,000,000-pixel limit")


def test_a_compressed_syntax_without_its_plugin_names_the_pip_install(tmp_path):
  decoder = pydicom.pixels.get_decoder(uid.JPEGLSLossless)
  if decoder.is_available:
    pytest.skip("a JPEG-LS plugin is installed here, so the file would be decoded")
  ds = dicom_dataset()
  ds.set_pixel_data(_pixels(), "MONOCHROME2", 8, generate_instance_uid=False)
  ds.file_meta.TransferSyntaxUID = uid.JPEGLSLossless
  ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really JPEG-LS \xff\xd9"])
  ds["PixelData"].VR = "OB"
  ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
  message = _refused(tmp_path / "a.dcm", "JPEG-LS Lossless Image Compression", "1.2.840.10008.1.2.4.80",
                     "pip install")
  wanted = [line.split(" - requires ")[1].replace(" and ", ", ").split(", ")
            for line in decoder.missing_dependencies if " - requires " in line]
  assert wanted and all(any(p in message for p in packages) for packages in wanted)


def test_a_file_named_dcm_that_is_no_dicom_is_refused(tmp_path):
  write_png(tmp_path / "a.png", _pixels())
  (tmp_path / "a.dcm").write_bytes((tmp_path / "a.png").read_bytes())
  _refused(tmp_path / "a.dcm", "not a DICOM file")


def test_a_missing_dicom_is_named(tmp_path):
  _refused(tmp_path / "gone.dcm", "file not found")


@pytest.mark.parametrize("cut, reason", [("half", "cannot decode its pixel data"),
                                         ("before the pixel data", "ends before its pixel data")],
                         ids=["half", "before the pixel data"])
def test_a_truncated_dicom_is_refused(tmp_path, cut, reason):
  data = write_dicom(tmp_path / "a.dcm", _pixels()).read_bytes()
  end = len(data) // 2 if cut == "half" else data.rindex(b"\xe0\x7f\x10\x00")  # the (7FE0,0010) tag
  (tmp_path / "a.dcm").write_bytes(data[:end])
  _refused(tmp_path / "a.dcm", reason)


def test_a_kermany_tree_of_dicom_files_is_read(tmp_path):
  tree = {"train": {"NORMAL": ["IM-0115-0001.dcm", "IM-0117-0001.dicom", "IM-0119-0001.dcm"],
                    "PNEUMONIA": ["person1_bacteria_1.dcm", "person2_virus_6.DCM", "person3_bacteria_10.dcm"]},
          "test": {"NORMAL": ["IM-0001-0001.dcm"], "PNEUMONIA": ["person100_bacteria_475.dcm"]}}
  written = []
  for split, classes in tree.items():
    for cls, names in classes.items():
      (tmp_path / split / cls).mkdir(parents=True)
      for i, name in enumerate(names):
        written.append(str(write_dicom(tmp_path / split / cls / name, np.roll(_pixels(), i, axis=1))))
  table = folders.read_tree(tmp_path, "PNEUMONIA", 0.34, 0.2, seed=0)
  assert sorted(table.path) == sorted(written)
  assert table.label.sum() == 4
  assert sorted(table[table.split == "test"].image_id) == ["test/NORMAL/IM-0001-0001.dcm",
                                                         "test/PNEUMONIA/person100_bacteria_475.dcm"]
  for path in table.path:
    assert images.load_film(path, SIZE).shape == (SIZE, SIZE)
