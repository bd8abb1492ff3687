"""Classes as data beside an adaptable model (``clipedge export RUN --adaptable``): the class bank file, its
readout, and learning classes on the device by name and from images, all torch-free.

``bank`` (ClassBank, save_bank, load_bank, bank_path_for), ``manifest`` (the schema check without jsonschema),
``readout`` (bank_logits, the softmax), ``rows`` (a new class's row on the bank's scale: text, GDA, prototype),
``learning`` (edits as pure functions), ``text_encoder`` (the exported text tower), ``class_images`` (example
photos under the decode policy), ``model_classes`` (the bank a model reads, checked against it) and ``editing``
(the Classifier methods).
"""

from .bank import ClassBank, bank_path_for, load_bank, save_bank
from .readout import bank_logits

__all__ = ["ClassBank", "bank_logits", "bank_path_for", "load_bank", "save_bank"]
