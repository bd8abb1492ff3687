"""The parameters ``config.pbtxt`` hands to clipedge's python-backend model, named once for the writer and the model.

Kept apart from ``python_model.py`` because that file is what Triton executes: the server launcher reads it
as text and must not import it (it imports the whole runtime).
"""

MODEL_FILE_PARAMETER = "model_file"
ENCODED_PARAMETER = "encoded_input"
THREADS_PARAMETER = "threads"
#: the file Triton's python backend runs as ``model.py``
PYTHON_MODEL_SOURCE = "python_model.py"
#: the absolute path of the class bank an adaptable served model reads and watches (the original model's
#: ``model.classes.npz``, so ``clipedge classes MODEL ...`` reaches the running server)
BANK_FILE_PARAMETER = "class_bank"
