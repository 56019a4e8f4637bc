"""Writes film.dcm: a synthetic pneumonia film of the default run as a 12-bit MONOCHROME1 DICOM (README, "Applying
a run"). Run from the repository root after `python run.py --platform=cpu`."""

import glob

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

film = np.asarray(Image.open(glob.glob("runs/default-cpu/cache/synthetic-nih-*/images/00000009_003.png")[0]))
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
ds.set_pixel_data((255 - film.astype(np.uint16)) * 16, "MONOCHROME1", 12)  # 12 bits, bone dark: as some CR systems
ds.PixelSpacing = [0.143, 0.143]
ds.save_as("film.dcm", enforce_file_format=True)
