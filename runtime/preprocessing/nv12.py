"""NV12 camera frames ↔ RGB in integer arithmetic, the same arithmetic a ``--pixel-format nv12`` graph runs.

NV12 is one uint8 plane of ``height * 3/2`` rows: the full-resolution luma
(Y) rows, then ``height/2`` rows of interleaved chroma pairs (U, V), one pair
per 2x2 pixels. Decoding here is limited range (Y 16-235, U/V 16-240) with
the BT.601 or BT.709 matrix, chroma replicated over its 2x2 block, in 8-bit
fixed point: ``c = round(256 · coefficient)``, ``R = (cY·(Y−16) + cRV·(V−128)
+ 128) >> 8`` and so on, clipped to 0-255 (the classic integer form, as in
ITU-R BT.601 and Microsoft's YUV documentation). Every intermediate is an
integer below 2**24, so float32 graphs compute it exactly and agree with this
module to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipedge.core.errors import ClipedgeError

#: (Kr, Kb) of each matrix; Kg = 1 − Kr − Kb
LUMA_WEIGHTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
Y_SCALE, C_SCALE = 255 / 219, 255 / 224  # limited range: Y spans 219 codes, Cb/Cr 224


@dataclass(frozen=True)
class YCbCrToRGB:
    """8-bit fixed-point decoding coefficients (×256) of one limited-range matrix."""

    y: int
    r_v: int
    g_u: int
    g_v: int
    b_u: int


def decoding_coefficients(matrix: str) -> YCbCrToRGB:
    if matrix not in LUMA_WEIGHTS:
        raise ClipedgeError(f"colour matrix {matrix!r}: expected one of {', '.join(LUMA_WEIGHTS)}")
    kr, kb = LUMA_WEIGHTS[matrix]
    kg = 1 - kr - kb
    return YCbCrToRGB(y=round(256 * Y_SCALE), r_v=round(256 * 2 * (1 - kr) * C_SCALE),
                      g_u=round(256 * 2 * (1 - kb) * kb / kg * C_SCALE), g_v=round(256 * 2 * (1 - kr) * kr / kg * C_SCALE),
                      b_u=round(256 * 2 * (1 - kb) * C_SCALE))


def split_nv12(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[..., H*3/2, W] NV12 → Y [..., H, W], and U, V replicated to [..., H, W] (int32)."""
    rows, width = planes.shape[-2:]
    height = rows * 2 // 3
    luma = planes[..., :height, :].astype(np.int32)
    chroma = planes[..., height:, :].reshape(*planes.shape[:-2], height // 2, width // 2, 2).astype(np.int32)
    full = chroma.repeat(2, axis=-3).repeat(2, axis=-2)
    return luma, full[..., 0], full[..., 1]


def nv12_to_rgb(planes: np.ndarray, matrix: str) -> np.ndarray:
    """NV12 uint8 [..., H*3/2, W] → RGB uint8 [..., H, W, 3] with the limited-range ``matrix``."""
    c = decoding_coefficients(matrix)
    luma, u, v = split_nv12(planes)
    y = c.y * (luma - 16) + 128
    d, e = u - 128, v - 128
    rgb = np.stack([y + c.r_v * e, y - c.g_u * d - c.g_v * e, y + c.b_u * d], axis=-1) >> 8
    return np.clip(rgb, 0, 255).astype(np.uint8)


def rgb_to_nv12(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """RGB uint8 [..., H, W, 3] (even H, W) → NV12 uint8 [..., H*3/2, W]: limited-range encoding with each 2x2
    block's chroma averaged, what a camera's ISP emits. For making test and benchmark frames."""
    height, width = rgb.shape[-3:-1]
    if height % 2 or width % 2:
        raise ClipedgeError(f"frame {width}x{height}: NV12 needs an even width and height")
    kr, kb = LUMA_WEIGHTS[matrix]
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = kr * r + (1 - kr - kb) * g + kb * b
    cb = (b - luma) / (2 * (1 - kb))
    cr = (r - luma) / (2 * (1 - kr))

    def block_mean(channel: np.ndarray) -> np.ndarray:
        blocks = channel.reshape(*channel.shape[:-2], height // 2, 2, width // 2, 2)
        return blocks.mean(axis=(-3, -1))

    y_plane = np.clip(np.round(16 + luma * 219 / 255), 0, 255)
    u = np.clip(np.round(128 + block_mean(cb) * 224 / 255), 0, 255)
    v = np.clip(np.round(128 + block_mean(cr) * 224 / 255), 0, 255)
    chroma = np.stack([u, v], axis=-1).reshape(*u.shape[:-1], width)
    return np.concatenate([y_plane, chroma], axis=-2).astype(np.uint8)
