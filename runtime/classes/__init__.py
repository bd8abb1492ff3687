"""Classes as data beside an adaptable model (``clipedge export RUN --adaptable``): the class bank file, its
readout, and learning classes on the device by name and from images, all torch-free.

``bank`` (ClassBank, save_bank, load_bank, bank_path_for), ``manifest`` (the schema check without jsonschema),
``readout`` (bank_logits).
"""

from .bank import ClassBank, bank_path_for, load_bank, save_bank
from .readout import bank_logits

__all__ = ["ClassBank", "bank_logits", "bank_path_for", "load_bank", "save_bank"]
