"""The names both sides of an export agree on: tensors, metadata keys, files beside a model."""

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probs", "embeddings")
#: metadata keys without which a model cannot be fed and labelled as clipedge exports are
REQUIRED_KEYS = ("class_names", "image_size", "input", "outputs", "precision")
SIDECAR_SUFFIX = ".json"
#: The DeepStream variant (``clipedge export --format deepstream``): Gst-nvinfer feeds a float32 NCHW tensor it
#: computed as net-scale-factor · (pixel − offset), and reads softmax outputs, so the variant takes float RGB
#: planes in 0–255 (scale 1, offsets 0) with the normalisation kept in the graph, and has ``probs`` only.
NVINFER_INPUT_NAME = "pixels"
NVINFER_OUTPUT_NAMES = ("probs",)
#: metadata key of the batch range an export was made for ("MIN,OPT,MAX"): engine profiles and ORT's TensorRT EP
BATCH_PROFILE_KEY = "batch_profile"
DEFAULT_BATCH_PROFILE = "1,8,32"
#: metadata key of the frames and fp32 PyTorch probabilities an engine built from the ONNX must reproduce
REFERENCE_KEY = "reference_set"
#: class names, one per line, beside an engine built by another tool (trtexec, Polygraphy)
LABELS_FILE = "labels.txt"
#: metadata key: whether image files are turned upright by their EXIF orientation before preprocessing, as the
#: run's training did ("true"/"false"; absent in models exported before clipedge applied it, which did not)
EXIF_TRANSPOSE_KEY = "exif_transpose"
#: metadata key: the declared-pixel limit above which the run's training skipped files (``--max-image-pixels``);
#: the runtime applies the same limit to files, so a photo training accepted is accepted at run time
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"


def output_names(embeddings: bool) -> list[str]:
    """The outputs an export declares, in order: logits, probs[, embeddings]."""
    return list(OUTPUT_NAMES[: 3 if embeddings else 2])
