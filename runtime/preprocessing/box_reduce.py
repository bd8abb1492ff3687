"""Integer box reduction of a uint8 frame in numpy, equal to Pillow's ``Image.reduce`` value for value.

The fast resize path shrinks the part of a camera frame that survives the crop by an integer factor before the
antialiased resample. Pillow can do that reduction, but only after ``Image.fromarray`` has unpacked every RGB
pixel into its 4-byte RGBX layout: the frame is read twice and a copy as large as the crop is written. Here each
input byte is read once, by a vertical sum over whole rows (contiguous, vectorised), and the horizontal sum runs
on the result, which is ``factor_y`` times smaller. Rounding is Pillow's own (``src/libImaging/Reduce.c``: the
sum plus half the block, times a fixed-point reciprocal computed in single precision, shifted right by 24), so
what follows the reduction sees the very pixels Pillow's reduce would give it, partial edge blocks included.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided
from PIL import Image

#: per-thread scratch arrays, reused from frame to frame: a fresh megabyte-sized array each call costs a page fault
#: per 4 KiB page (the allocator hands such blocks back to the system when freed), more than the sums themselves
_scratch = threading.local()


def _scratch_array(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """This thread's scratch array ``name``, reallocated only when the frame geometry changes."""
    array = getattr(_scratch, name, None)
    if array is None or array.shape != shape or array.dtype != dtype:
        array = np.empty(shape, dtype=dtype)
        setattr(_scratch, name, array)
    return array


def box_reduce(region: np.ndarray, factor_x: int, factor_y: int) -> Image.Image:
    """Pillow's ``Image.fromarray(region).reduce((factor_x, factor_y))`` without the full-size image: box means of
    ``factor_y`` x ``factor_x`` blocks of a uint8 (h, w) grey or (h, w, 3) RGB array (any strides), blocks aligned
    to its top-left corner, the last row and column of blocks averaging what is left."""
    channels = 1 if region.ndim == 2 else region.shape[2]
    height, width = region.shape[:2]
    pixels = region.reshape(height, width, channels)
    if pixels.strides[2] != 1 or pixels.strides[1] != channels:  # rows must be runs of whole pixels
        pixels = np.ascontiguousarray(pixels)
    rows = pixels.reshape(height, width * channels)
    dtype = np.uint16 if factor_x * factor_y * 255 < 2 ** 16 else np.uint32
    column_sums = _vertical_sums(rows, factor_y, dtype)
    planes = _pillow_round(_horizontal_sums(column_sums, width, channels, factor_x),
                           _block_lengths(height, factor_y), _block_lengths(width, factor_x))
    if channels == 1:
        return Image.fromarray(planes[0])
    return Image.merge("RGB", [Image.fromarray(plane) for plane in planes])


def _block_lengths(length: int, factor: int) -> np.ndarray:
    lengths = np.full(-(-length // factor), factor, dtype=np.uint32)
    lengths[-1] = length - factor * (len(lengths) - 1)
    return lengths


def _vertical_sums(rows: np.ndarray, factor: int, dtype: type) -> np.ndarray:
    """Sums of ``factor`` consecutive rows (fewer in the last block): each row read once, as a whole."""
    height = rows.shape[0]
    full = height // factor
    sums = _scratch_array("column_sums", (-(-height // factor), rows.shape[1]), dtype)
    if full:
        body, stop = sums[:full], full * factor
        if factor == 1:
            body[...] = rows[:stop]
        else:
            np.add(rows[0:stop:factor], rows[1:stop:factor], out=body, dtype=dtype)
            for offset in range(2, factor):
                np.add(body, rows[offset:stop:factor], out=body)
    if height % factor:
        np.sum(rows[full * factor:], axis=0, dtype=dtype, out=sums[full])
    return sums


def _window_sums(flat: np.ndarray, length: int, step: int) -> np.ndarray:
    """``out[j] = flat[j] + flat[j + step] + ... + flat[j + (length - 1) * step]`` for every j where that fits:
    windows of 1, 2, 4, ... by doubling, combined along the binary digits of ``length`` (log2 passes, each one
    contiguous add into one of three scratch arrays)."""
    scratch = [_scratch_array(f"windows_{i}", flat.shape, flat.dtype) for i in range(3)]

    def add(first: np.ndarray, second: np.ndarray, busy: np.ndarray | None) -> np.ndarray:
        target = next(s for s in scratch if all(a is not s and a.base is not s for a in (first, second, busy)
                                                if a is not None))
        return np.add(first, second, out=target[:len(second)])

    result, result_length = None, 0
    power, power_length = flat, 1
    while True:
        if length & power_length:
            if result is None:
                result, result_length = power, power_length
            else:
                shift = result_length * step
                result = add(result[:len(power) - shift], power[shift:], None)
                result_length += power_length
        if power_length * 2 > length:
            return result
        shift = power_length * step
        power = add(power[:-shift], power[shift:], result)
        power_length *= 2


def _horizontal_sums(column_sums: np.ndarray, width: int, channels: int, factor: int) -> np.ndarray:
    """Sums of ``factor`` neighbouring pixels along each row of the vertical sums, one plane per channel
    (channels, block rows, block columns): planes copy from the window sums with long strided runs, where an
    interleaved copy would move three values per inner loop."""
    block_rows, row_length = column_sums.shape
    full = width // factor
    sums = np.empty((channels, block_rows, -(-width // factor)), dtype=column_sums.dtype)
    if full:
        # windows over the flattened rows: those starting at a block's first pixel never cross a row's end
        windows = _window_sums(column_sums.reshape(-1), factor, channels)
        item = windows.itemsize
        starts = as_strided(windows, shape=(channels, block_rows, full),
                            strides=(item, row_length * item, factor * channels * item), writeable=False)
        sums[:, :, :full] = starts
    if width % factor:
        rest = column_sums.reshape(block_rows, width, channels)[:, full * factor:]
        np.sum(rest, axis=1, dtype=column_sums.dtype, out=sums[:, :, full].T)
    return sums


def _pillow_round(sums: np.ndarray, block_rows: np.ndarray, block_columns: np.ndarray) -> np.ndarray:
    """Block sums (channels, rows, columns) → uint8 means, rounded as Pillow's reduce rounds them:
    ``((sum + n // 2) * m) >> 24`` with ``m = (uint32)(2**32 / (256 n))`` evaluated in single precision. Where n is
    a power of two that is exactly ``(sum + n // 2) >> log2(n)``, done in place over the whole contiguous array;
    a partial last row or column of blocks gets the formula itself."""
    counts = block_rows[:, None] * block_columns[None, :]
    whole = int(counts[0, 0])
    if whole & (whole - 1):
        return _rounded(sums, counts)
    last_row = _rounded(sums[:, -1], counts[-1]) if block_rows[-1] != block_rows[0] else None
    last_column = _rounded(sums[:, :, -1], counts[:, -1]) if block_columns[-1] != block_columns[0] else None
    sums += whole // 2
    sums >>= whole.bit_length() - 1
    rounded = sums.astype(np.uint8)
    if last_row is not None:
        rounded[:, -1] = last_row
    if last_column is not None:
        rounded[:, :, -1] = last_column
    return rounded


def _rounded(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    multipliers = (np.float32(2 ** 32) / (counts * 256).astype(np.float32)).astype(np.uint32)
    return (((sums.astype(np.uint32) + counts // 2) * multipliers) >> 24).astype(np.uint8)
