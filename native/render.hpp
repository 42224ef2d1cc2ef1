// The CPU hot path of a scan: decoded bands -> the model's uint8 pixels, and tiles cut out of them.
//
// Plain C++ (no Python): the bindings in minescan_native.cpp release the GIL around every call, so the
// reader threads render their pieces truly in parallel.  Every function here is bit-for-bit the numpy
// reference kept in testkit/reference_render.py (tests/test_native.py compares them on every dtype):
//
//   level = floor(clip(x, 0, 255) + 0.5),  x = (value - low) * factor   (linear)
//                                          x = interp(value, xs, ys)    (piecewise linear, numpy.interp's rule)
//
// evaluated in float32 for float32 data, float64 otherwise, in the same operation order as numpy
// (the build turns off floating-point contraction: a fused multiply-add would round differently).
// 8 and 16 bit data go through a table per band, indexed by the value's bit pattern.  NaN renders 0.
// Nodata pixels render 0 in every band.
#pragma once

#include <cstddef>
#include <cstdint>

namespace minescan {

// Pixels of one decoded piece: ``bands`` planes of ``pixels`` values each, bands-first.
struct Planes {
    const void* data;
    std::int64_t bands;
    std::int64_t pixels;
};

// Table rendering of 8 bit (table_len 256) or 16 bit (65536) values: out[p * bands + b] = tables[b][value].
// ``nodata`` (one flag per pixel, may be null) renders 0.  Returns how many pixels were nodata.
std::int64_t render_table8(const Planes& in, const std::uint8_t* tables, const std::uint8_t* nodata, std::uint8_t* out);
std::int64_t render_table16(const Planes& in, const std::uint8_t* tables, const std::uint8_t* nodata, std::uint8_t* out);

// The linear map per band for wider integers and floats.  ``kind``: numpy's type code ('i', 'u', 'f') and
// ``itemsize`` (4 or 8) name the input type.  low/factor hold one value per band.
std::int64_t render_linear(const Planes& in, char kind, int itemsize, const double* low, const double* factor,
                           const std::uint8_t* nodata, std::uint8_t* out);

// The piecewise-linear map per band (histogram matching) for wider integers and floats: band b's knots are
// xs[offsets[b]:offsets[b+1]] (strictly rising) and ys[...] (levels).
std::int64_t render_curves(const Planes& in, char kind, int itemsize, const double* xs, const double* ys,
                           const std::int64_t* offsets, const std::uint8_t* nodata, std::uint8_t* out);

// A rectangle of ``rows`` x ``row_bytes`` bytes in each of ``planes`` planes: plane p's row r starts at
// base + p * plane_stride + r * row_stride.
struct Bytes2D {
    std::uint8_t* base;
    std::int64_t planes, rows, row_bytes, plane_stride, row_stride;
};

// A source piece placed at (row_off, col_off) in scene pixels; its columns are ``elem`` bytes wide.
struct Piece {
    const std::uint8_t* base;
    std::int64_t rows, cols, plane_stride, row_stride, row_off, col_off;
};

// Cut the scene rectangle [y0, y0 + height) x [x0, x0 + width) (the tile's valid part) out of ``pieces``
// into ``dst`` (which is the whole tile, at least that large), each column ``elem`` bytes.  Bytes of
// ``dst`` that no piece covers (padding past the scene's edge) are set to ``fill``.
void cut(const Bytes2D& dst, const Piece* pieces, std::size_t count, std::int64_t elem, std::int64_t x0,
         std::int64_t y0, std::int64_t width, std::int64_t height, std::uint8_t fill);

}  // namespace minescan
