"""Data: decoding, identity folders, RecordIO, verification pairs, synthetic faces and 5-point alignment."""

from marginface.data.align import ARCFACE_TEMPLATE, align_face, alignment_matrix, umeyama
from marginface.data.check import CheckReport, check_data
from marginface.data.folder import ImageFolderDataset, scan_identity_folder
from marginface.data.image import ImageDecodeError, decode_image, encode_image
from marginface.data.labels import LABELS_NAME, read_class_names, write_class_names
from marginface.data.pairs import PairSet, PairSetError, read_bin, read_pairs_txt, write_bin
from marginface.data.recordio import (
    IRHeader,
    RecordIODataset,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    write_face_records,
)
from marginface.data.samples import (
    Batch,
    NoUsableSamples,
    Sample,
    SampleDecoder,
    SubstituteBadSamples,
    collate,
    require_samples,
)
from marginface.data.staging import OutputError, StagedOutputs, ensure_writable
from marginface.data.synthetic import SyntheticFaces, synthetic_face, synthetic_pairs
from marginface.data.transforms import to_model_input

__all__ = [
    "ARCFACE_TEMPLATE", "Batch", "CheckReport", "IRHeader", "ImageDecodeError", "ImageFolderDataset", "LABELS_NAME",
    "NoUsableSamples", "OutputError", "PairSet", "PairSetError",
    "RecordIODataset", "RecordIOError", "RecordIOReader", "RecordIOWriter", "Sample", "SampleDecoder",
    "StagedOutputs", "SubstituteBadSamples",
    "SyntheticFaces", "align_face", "alignment_matrix", "check_data", "collate", "decode_image", "encode_image",
    "ensure_writable", "read_bin", "read_class_names", "read_pairs_txt", "require_samples", "scan_identity_folder",
    "synthetic_face",
    "synthetic_pairs", "to_model_input", "umeyama", "write_bin", "write_class_names", "write_face_records",
]
