"""Past one box: Triton Inference Server model repositories, ``clipedge serve``, and the server's URLs.

Torch-free like the rest of the runtime, so a server without PyTorch can write a repository from an
exported ``.onnx`` or ``.engine`` and serve it. tritonclient (for the ``ModelConfig`` schema and the
client) and nvidia-pytriton (for the ``tritonserver`` binary) come with the ``serve`` extra.
"""
