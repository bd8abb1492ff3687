"""One module from camera pixels to class probabilities: preprocess ∘ image encoder ∘ head ∘ softmax.

Input is uint8 NHWC RGB at the model's resolution; resizing and cropping stay
in the runtime, where frames of any size arrive. Everything after that is in
the graph, and what folds exactly is folded:

- ViTs: the patch embedding is a stride = kernel convolution without padding,
  so ``conv((x/255 − mean)/std)`` equals a conv with rescaled weights plus a
  bias; the normalisation disappears. ResNet stems pad their first conv with
  zeros, and a zero in normalised space is the mean colour in pixel space, so
  folding would change every border pixel: there the scale and shift stay as
  one multiply-add in front of the encoder.
- Heads: the logit scale multiplies the constant class matrix W once, here,
  instead of every logit at run time.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from clipedge.backbone import BackboneSpec
from clipedge.heads import Head


def fold_logit_scale(head: Head) -> Head:
    """A copy of ``head`` with scale · W stored and the scale set to 1 (the heads multiply by it)."""
    head = copy.deepcopy(head).eval()
    with torch.no_grad():
        head.text_weights.mul_(head.logit_scale)
        head.logit_scale.fill_(1.0)
    return head


def fold_normalisation_into_patch_embedding(conv: nn.Conv2d, mean: torch.Tensor, std: torch.Tensor) -> nn.Conv2d:
    """conv((x/255 − mean)/std) as one conv on x in [0, 255]; exact because the conv has no padding."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, bias=True)
    with torch.no_grad():
        weight = conv.weight.double()
        folded.weight.copy_(weight / (255.0 * std.double().view(1, -1, 1, 1)))
        shift = -(weight * (mean / std).double().view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        folded.bias.copy_(shift + (conv.bias.double() if conv.bias is not None else 0))
    return folded


def _patch_embedding(visual: nn.Module) -> nn.Conv2d | None:
    conv = getattr(visual, "conv1", None)
    is_vit = hasattr(visual, "class_embedding")
    if is_vit and isinstance(conv, nn.Conv2d) and conv.padding in ((0, 0), 0, "valid") and conv.stride == conv.kernel_size:
        return conv
    return None


class FusedClassifier(nn.Module):
    """uint8 images [N, H, W, 3] → (logits [N, C], probs [N, C][, embeddings [N, D]])."""

    def __init__(self, visual: nn.Module, head: Head, spec: BackboneSpec, temperature: float | None = None,
                 embeddings: bool = False, fold: bool = True, half_encoder: bool = False):
        super().__init__()
        self.visual = copy.deepcopy(visual).float().eval().requires_grad_(False)
        self.head = fold_logit_scale(head) if fold else copy.deepcopy(head).eval()
        mean = torch.tensor(spec.mean, dtype=torch.float32)
        std = torch.tensor(spec.std, dtype=torch.float32)
        conv = _patch_embedding(self.visual) if fold else None
        self.normalisation_folded = conv is not None
        if conv is not None:
            self.visual.conv1 = fold_normalisation_into_patch_embedding(conv, mean, std)
        self.register_buffer("pixel_scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
        self.register_buffer("pixel_shift", (-mean / std).view(1, 3, 1, 1))
        self.inverse_temperature = 1.0 / temperature if temperature else None
        self.with_embeddings = embeddings
        # fp16: only the encoder runs in half precision. The head, its final normalisation and the softmax
        # stay fp32: they are cheap, and probabilities near a decision boundary need the extra bits.
        # LayerNormalization keeps fp32 statistics in ONNX (stash_type=1) and in TensorRT.
        self.half_encoder = half_encoder
        if half_encoder:
            self.visual.half()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).float()
        if not self.normalisation_folded:
            pixels = pixels * self.pixel_scale + self.pixel_shift
        return self.visual(pixels.half() if self.half_encoder else pixels)

    def forward(self, images: torch.Tensor):
        features = self.encode(images).float()
        logits = self.head(features)
        scaled = logits * self.inverse_temperature if self.inverse_temperature else logits
        probs = F.softmax(scaled, dim=-1)
        if self.with_embeddings:
            return logits, probs, self.head.embed(features)
        return logits, probs


OUTPUT_NAMES = ("logits", "probs", "embeddings")
