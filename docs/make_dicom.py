"""Writes film.dcm, a synthetic pneumonia film of the default run as a 12-bit MONOCHROME1 chest CR DICOM, and
pacs/, the same pixels as a PACS export might mix them: a chest CR, a CT slice and a lateral film (docs/predict.md,
"DICOM" and "The input guard"). Run from the repository root after `python run.py --platform=cpu`."""

import glob
import pathlib

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write(path: str, pixels: np.ndarray, **tags) -> None:
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta, ds.SOPClassUID = meta, meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.set_pixel_data(pixels, "MONOCHROME1", 12)  # 12 bits, bone dark: as some CR systems store it
  ds.PixelSpacing = [0.143, 0.143]
  for key, value in {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA", **tags}.items():
    setattr(ds, key, value)
  ds.save_as(path, enforce_file_format=True)


film = np.asarray(Image.open(glob.glob("runs/default-cpu/cache/synthetic-nih-*/images/00000009_003.png")[0]))
pixels = (255 - film.astype(np.uint16)) * 16
write("film.dcm", pixels)
pathlib.Path("pacs").mkdir(exist_ok=True)
write("pacs/chest_cr.dcm", pixels)
write("pacs/ct_slice.dcm", pixels, Modality="CT", BodyPartExamined="CHEST", ViewPosition="")
write("pacs/lateral.dcm", pixels, ViewPosition="LL")
