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
  instead of every logit at run time (the exporter's optimiser then drops the
  remaining multiply by 1).

Half precision (``half_encoder``) covers the encoder only, which is where the
FLOPs are. These stay fp32, each for a reason:

- the uint8 → float cast and, for ResNets, the normalising multiply-add: the
  input contract is uint8 and the first rounding should happen once, after it;
- LayerNormalization statistics: ONNX computes them in fp32 (``stash_type=1``)
  even on fp16 tensors; a mean of squares over 768 channels overflows fp16;
- the whole head and the final softmax: CLIP logits are ``100 · cos``, so an
  fp16 cosine (about 3 significant digits) would move logits by ~0.1 and
  probabilities by up to ~1e-2, the entire fp16 error budget, for well under
  1 % of the model's FLOPs. Tip-Adapter's ``exp(−β(1 − f·K))`` amplifies the
  same error. The embeddings' L2 normalisation lives in the head, so it is fp32 too.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from clipedge.backbone import BackboneSpec
from clipedge.heads import Head


def folded_copy(head: Head) -> Head:
    """A copy of ``head`` with its logit scale folded into its constants (the head knows how)."""
    head = copy.deepcopy(head).eval()
    head.fold_logit_scale()
    return head


def fold_normalisation_into_patch_embedding(conv: nn.Conv2d, mean: torch.Tensor, std: torch.Tensor) -> nn.Conv2d:
    """conv((x/255 − mean)/std) as one conv on x in [0, 255]; exact because the conv has no padding."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, bias=True)
    with torch.no_grad():
        weight = conv.weight.double()
        folded.weight.copy_(weight / (255.0 * std.double().view(1, -1, 1, 1)))
        shift = -(weight * (mean / std).double().view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        folded.bias.copy_(shift + (conv.bias.double() if conv.bias is not None else 0))
    return folded.to(conv.weight.device)


def foldable_patch_embedding(visual: nn.Module) -> nn.Conv2d | None:
    """A ViT's patch embedding when it is an unpadded stride = kernel conv; None otherwise (ResNets)."""
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
        self.head = (folded_copy(head) if fold else copy.deepcopy(head).eval()).to(self.device)
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(spec.std, dtype=torch.float32, device=self.device)
        conv = foldable_patch_embedding(self.visual) if fold else None
        self.normalisation_folded = conv is not None
        if conv is not None:
            self.visual.conv1 = fold_normalisation_into_patch_embedding(conv, mean, std)
        self.register_buffer("pixel_scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
        self.register_buffer("pixel_shift", (-mean / std).view(1, 3, 1, 1))
        self.inverse_temperature = 1.0 / temperature if temperature else None
        self.with_embeddings = embeddings
        self.half_encoder = half_encoder
        if half_encoder:
            self.visual.half()

    @property
    def device(self) -> torch.device:
        return next(self.visual.parameters()).device

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image features from float NCHW pixels in [0, 255] at model resolution."""
        if not self.normalisation_folded:
            pixels = pixels * self.pixel_scale + self.pixel_shift
        return self.visual(pixels.half() if self.half_encoder else pixels).float()

    def classify(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """float NCHW pixels in [0, 255] → (logits, probs[, embeddings]): the graph after the input adapter, shared
        by every input form (uint8 NHWC frames here; other front ends feed it their own way)."""
        features = self.encode(pixels)
        logits = self.head(features)
        scaled = logits * self.inverse_temperature if self.inverse_temperature else logits
        probs = F.softmax(scaled, dim=-1)
        if self.with_embeddings:
            return logits, probs, self.head.embed(features)
        return logits, probs

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Cast before anything else: TensorRT accepts UINT8 only as a network input feeding a Cast, never as an
        # intermediate tensor (onnx-tensorrt: "all UINT8 inputs must directly feed into a cast layer").
        return self.classify(images.float().permute(0, 3, 1, 2))

#: the module scope of the head's nodes: torch's exporter records ``<class>/<attribute>`` paths in each node's
#: metadata, and ``FusedClassifier`` holds the head as ``self.head`` (INT8 keeps these nodes in float)
HEAD_SCOPE = f"{FusedClassifier.__name__}/head"
